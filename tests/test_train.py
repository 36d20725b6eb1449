"""Training end to end on small synthetic data: artifact, metrics, determinism."""

from __future__ import annotations

import json

import numpy as np
import torch

from tasks.data import generate
from tasks.train import TrainConfig, train

EASE_MARGIN = 0.05  # plugins/recsys/pipeline.py gate(ease_margin=)


def test_train_writes_artifact_beats_baseline_and_is_deterministic(tmp_path):
    ratings, _ = generate(200, 300, 12_000, seed=3)
    path = tmp_path / "ratings.parquet"
    ratings.astype({"user_id": str, "item_id": str}).to_parquet(path)
    cfg = TrainConfig()
    m1 = train(str(path), str(tmp_path / "a"), cfg, ds="2026-11-23", model_version="v20261123")
    train(str(path), str(tmp_path / "b"), cfg)
    for name in ("model.pt", "meta.json", "metrics.json", "seen.npz", "report.html"):
        assert (tmp_path / "a" / name).exists()
    report = (tmp_path / "a" / "report.html").read_text()
    assert "Model v20261123" in report and "global_mean" in report and "<polyline" in report
    assert f"{m1['candidate']['rmse']:.4f}" in report
    base = m1["baselines"]
    # predict (rating head) beats every rating baseline, recommend (ranking head) the popular list
    assert m1["candidate"]["rmse"] < min(base["global_mean"]["rmse"], base["bias"]["rmse"], base["svd"]["rmse"])
    assert m1["candidate"]["ndcg@10"] > base["popularity"]["ndcg@10"] > base["svd"]["ndcg@10"]
    # the ranking head: EASE^R's rank-128 projection (300 items: all 128), with PureSVD k=16
    # beside it unless validation gave PureSVD no weight (or all of it)
    head = m1["ranking_head"]
    assert head["factors"] == meta_rank_k(tmp_path / "a")
    assert head["factors"] == {"puresvd": cfg.rank_factors, 0.0: cfg.ease_rank}.get(
        head["ease"]["weight"], cfg.rank_factors + cfg.ease_rank)
    assert base["ease"]["lambda"] == head["ease"]["lambda"]
    # within the nightly gate's margin of exact EASE^R (300 items, a flat spectrum: rank 128 loses ~3%)
    assert m1["candidate"]["ndcg@10"] >= base["ease"]["ndcg@10"] * (1 - EASE_MARGIN)
    assert m1["holdout"]["users"] == 200
    w1 = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    w2 = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["model_version"] == "v20261123" and meta["config"]["factors"] == cfg.factors
    assert meta["constructor"]["n_user"] == 200 and len(meta["user_ids"]) == 200


def meta_rank_k(path) -> int:
    return json.loads((path / "meta.json").read_text())["constructor"]["rank_k"]


def test_svd_baseline_is_skipped_above_its_size_cap(tmp_path):
    ratings, _ = generate(50, 60, 1_500, seed=5)
    path = tmp_path / "r.parquet"
    ratings.to_parquet(path)
    m = train(str(path), str(tmp_path / "m"), TrainConfig(svd_baseline_max_ratings=100, rank_factors=0))
    assert "svd_baseline_max_ratings 100" in m["baselines"]["svd"]["skipped"]
    assert "svd_baseline_max_ratings 100" in (tmp_path / "m" / "report.html").read_text()
    assert meta_rank_k(tmp_path / "m") == 0  # rank_factors=0: ranked by predicted rating


def test_champion_is_scored_on_the_same_holdout(tmp_path):
    ratings, _ = generate(100, 150, 5_000, seed=4)
    path = tmp_path / "r.parquet"
    ratings.astype({"user_id": str, "item_id": str}).to_parquet(path)
    cfg = TrainConfig(sweeps=3)
    first = train(str(path), str(tmp_path / "champ"), cfg)
    second = train(str(path), str(tmp_path / "cand"), cfg, champion=str(tmp_path / "champ"))
    # the same data, config and seed give the same model: the champion's scores equal the candidate's
    assert np.isclose(second["champion"]["rmse"], first["candidate"]["rmse"])
    assert np.isclose(second["champion"]["ndcg@10"], first["candidate"]["ndcg@10"])
