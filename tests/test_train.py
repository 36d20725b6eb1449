"""Training end to end on small synthetic data: artifact, metrics, determinism."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.data import generate
from tasks.train import Schedule, TrainConfig, encode_ids, schedules, train

ROOT = Path(__file__).resolve().parents[1]

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
    # the ranking head: EASE^R's rank-128 projection (300 items: all 128), with PureSVD k=16 and
    # the low-pass part beside it unless validation gave them no weight (or PureSVD all of it)
    head = m1["ranking_head"]
    assert head["factors"] == meta_rank_k(tmp_path / "a")
    choice = head["ease"]
    assert head["factors"] == (cfg.rank_factors if choice["weight"] == "puresvd" else
                               cfg.ease_rank + (cfg.rank_factors if choice["weight"] else 0)
                               + (choice["lowpass_factors"] if choice["lowpass_weight"] else 0))
    assert choice["val_ndcg"] == max(choice["val_ndcg_best_10"].values()) >= choice["val_ndcg_without_lowpass"]
    assert base["ease"]["lambda"] == choice["binary_lambda"]  # the baseline is EASE^R on the binary matrix
    # within the nightly gate's margin of exact EASE^R (300 items, a flat spectrum: rank 128 loses ~3%)
    assert m1["candidate"]["ndcg@10"] >= base["ease"]["ndcg@10"] * (1 - EASE_MARGIN)
    assert m1["holdout"]["users"] == 200
    w1 = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    w2 = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["model_version"] == "v20261123" and meta["config"]["factors"] == cfg.factors
    # the rating head: rank-8 draws, their average kept at rank keep_rank in model.pt, noise levels on
    assert meta["constructor"]["k"] == cfg.keep_rank == m1["rating_head"]["factors"] > cfg.factors
    assert meta["config"]["noise_prior"] == cfg.noise_prior > 0
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
    """A champion fitted without its holdout (no refit, or an artifact from before the refit)
    is scored on the whole holdout."""
    ratings, _ = generate(100, 150, 5_000, seed=4)
    path = tmp_path / "r.parquet"
    ratings.astype({"user_id": str, "item_id": str}).to_parquet(path)
    cfg = TrainConfig(sweeps=3, refit_sweeps=0)
    first = train(str(path), str(tmp_path / "champ"), cfg)
    second = train(str(path), str(tmp_path / "cand"), cfg, champion=str(tmp_path / "champ"))
    # the same data, config and seed give the same model: the champion's scores equal the candidate's
    assert np.isclose(second["champion"]["rmse"], first["candidate"]["rmse"])
    assert np.isclose(second["champion"]["ndcg@10"], first["candidate"]["ndcg@10"])


def clustered_ratings(seed: int = 0) -> tuple[pd.DataFrame, list[int], set[int]]:
    """Items 1-18 are rated by everyone (they say nothing of taste); 70 users also rate 12 of
    cluster A (101-130), 30 users 12 of cluster B (201-230). Ten newcomers rate items 1-18
    first and then, as their two latest ratings, two items of cluster B: only those latest
    ratings (each newcomer's temporal holdout) point at their cluster. Returns the ratings,
    the newcomers and cluster B."""
    rng = np.random.default_rng(seed)
    common, a, b = list(range(1, 19)), np.arange(101, 131), np.arange(201, 231)
    rows = []
    for user in range(1, 111):
        picks = (common + rng.choice(a, 12, replace=False).tolist() if user <= 70
                 else common + rng.choice(b, 12, replace=False).tolist() if user <= 100
                 else common + rng.choice(b, 2, replace=False).tolist())
        for n, item in enumerate(picks):
            rows.append((user, item, float(rng.integers(3, 6)), 1_700_000_000 + 1000 * n + user))
    return (pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]), list(range(101, 111)),
            set(b.tolist()))


def test_shipped_model_recommends_from_the_users_latest_ratings(tmp_path):
    """The artifact is fitted on every rating of the snapshot: a newcomer whose only signal is
    their two latest ratings (the holdout the estimate leaves out) gets cluster B. The model
    fitted without the holdout, which train shipped before, gives them the popular cluster A."""
    from tasks.data import build_snapshot
    from tasks.model import load

    ratings, newcomers, cluster_b = clustered_ratings()
    (tmp_path / "raw").mkdir()
    ratings.to_csv(tmp_path / "raw" / "ratings.csv", index=False)
    snap = str(tmp_path / "snap")
    build_snapshot(str(tmp_path / "raw"), "2026-11-23", snap, str(tmp_path / "quarantine"))
    cfg = TrainConfig(sweeps=40, refit_sweeps=40)
    metrics = train(snap, str(tmp_path / "shipped"), cfg)
    train(snap, str(tmp_path / "estimate"), dataclasses.replace(cfg, refit_sweeps=0))
    shipped, estimate = load(str(tmp_path / "shipped")), load(str(tmp_path / "estimate"))
    items, _ = shipped.recommend(newcomers, 5)
    assert items.dtype == np.int64  # the snapshot holds ids as strings; they were integers
    assert set(items.ravel().tolist()) <= cluster_b
    assert not set(estimate.recommend(newcomers, 5)[0].ravel().tolist()) & cluster_b
    # every rating is "seen" and never recommended again; the estimate's numbers are what metrics report
    assert not any(set(row) & set(ratings[ratings.user_id == u].item_id) for u, row in zip(newcomers, items.tolist(),
                                                                                                strict=True))
    fits = metrics["fits"]
    assert fits["estimate"]["ratings"] + metrics["holdout"]["ratings"] == fits["shipped"]["ratings"] == len(ratings)
    assert fits["shipped"]["rating_head"]["warm_start"] and not fits["estimate"]["rating_head"]["warm_start"]
    shipped_choice, estimate_choice = fits["shipped"]["ranking_head"]["ease"], metrics["ranking_head"]["ease"]
    assert shipped_choice["reused"] and {k: v for k, v in shipped_choice.items() if k != "reused"} == estimate_choice
    assert "fitted on every rating of the snapshot" in (tmp_path / "shipped" / "report.html").read_text()
    meta = json.loads((tmp_path / "shipped" / "meta.json").read_text())
    assert meta["fitted_on"] == "every rating" and meta["max_timestamp"] == int(ratings.timestamp.max())


def test_schedules_shrink_both_fits_above_the_rating_budget():
    cfg = TrainConfig(sweeps=150, burn_in=20, thin=2, refit_sweeps=150, refit_burn_in=10, max_rating_sweeps=3e9)
    assert schedules(cfg, 100_000) == (Schedule(150, 20, 2), Schedule(150, 10, 2))
    assert schedules(cfg, 25_000_000) == (Schedule(60, 8, 2), Schedule(60, 4, 2))  # 25M x 120 sweeps = 3e9
    assert schedules(dataclasses.replace(cfg, refit_sweeps=0), 100_000) == (Schedule(150, 20, 2), None)


def test_champion_fitted_on_every_rating_is_scored_only_on_what_it_never_saw(tmp_path):
    """Yesterday's shipped model saw the older part of today's holdout; scored there it would
    beat any candidate. train scores it on the newer holdout rows only, beside the candidate's
    figures on the same rows (what the gate compares), and skips the comparison when there are
    none (a re-run on the same snapshot)."""
    ratings, _ = generate(100, 150, 5_000, seed=4)
    cut = ratings.timestamp.quantile(0.97)
    old, new = tmp_path / "old.parquet", tmp_path / "new.parquet"
    ratings[ratings.timestamp <= cut].to_parquet(old)
    ratings.to_parquet(new)
    cfg = TrainConfig(sweeps=6, refit_sweeps=6)
    train(str(old), str(tmp_path / "champ"), cfg)
    m = train(str(new), str(tmp_path / "cand"), cfg, champion=str(tmp_path / "champ"))
    champ = m["champion"]
    assert champ["newer_than"] == int(ratings.timestamp[ratings.timestamp <= cut].max())
    assert 0 < champ["holdout_ratings"] < m["holdout"]["ratings"]
    assert set(champ["candidate"]) >= {"rmse", "ndcg@10"} and champ["candidate"]["rmse"] != m["candidate"]["rmse"]
    again = train(str(new), str(tmp_path / "again"), cfg, champion=str(tmp_path / "cand"))
    assert "nothing it has not seen" in again["champion"]["skipped"]
    assert "nothing it has not seen" in (tmp_path / "again" / "report.html").read_text()


CLI_FAST = ["--sweeps", "4", "--refit-sweeps", "4", "--ease-rank", "0"]


@pytest.mark.parametrize("layout", ["csv", "tsv", "parquet-int", "parquet-str", "csv-007", "snapshot-csv",
                                    "snapshot-parquet-int", "snapshot-csv-007"])
def test_ids_round_trip_through_the_cli(tmp_path, layout):
    """``python -m tasks.train`` on a file, or on the snapshot ``python -m tasks.data snapshot``
    wrote from it (the DAG's path), then ``tasks.model.load``: a column of canonical integers gives
    integers back from recommend, however it was stored; "007" stays a string."""
    from tasks.model import load

    ratings, _ = generate(40, 50, 1_000, seed=6)
    if layout.endswith("-007"):
        ratings["item_id"] = ratings["item_id"].map(lambda x: f"{x:03d}")
    snapshot = layout.startswith("snapshot-")
    kind = layout.removeprefix("snapshot-")
    folder = tmp_path / "raw" if snapshot else tmp_path
    folder.mkdir(exist_ok=True)
    path = folder / ("ratings." + kind.split("-")[0])
    if kind.startswith("parquet"):
        (ratings.astype({"user_id": str, "item_id": str}) if kind == "parquet-str" else ratings).to_parquet(path)
    else:
        ratings.to_csv(path, sep="\t" if kind == "tsv" else ",", index=False)
    source = str(path)
    if snapshot:  # ratings are on the 1-5 scale, timestamps before the run date
        source = str(tmp_path / "datasets" / "ds=2026-11-23")
        subprocess.run([sys.executable, "-m", "tasks.data", "snapshot", "--raw", str(folder), "--ds", "2026-11-23",
                        "--out", source, "--quarantine", str(tmp_path / "q")], check=True, cwd=ROOT,
                       capture_output=True)
    subprocess.run([sys.executable, "-m", "tasks.train", "--ratings", source, "--out", str(tmp_path / "m"),
                    *CLI_FAST], check=True, cwd=ROOT, capture_output=True)
    rec = load(str(tmp_path / "m"))
    items, _ = rec.recommend([1, "2"], 3)
    if kind == "csv-007":
        assert items.dtype.kind == "U" and set(items.ravel()) <= set(ratings.item_id)
        assert "007" in rec.item_ids and rec.meta["id_kinds"] == {"user": "int", "item": "str"}
    else:
        assert items.dtype == np.int64 and set(items.ravel().tolist()) <= set(ratings.item_id.tolist())
        assert rec.meta["id_kinds"] == {"user": "int", "item": "int"}
        # numeric order, whatever the file held: a file and its Parquet copy give the same model
        assert rec.item_ids.astype(int).tolist() == sorted(ratings.item_id.unique().tolist())


def test_encode_ids_tells_canonical_integers_from_strings():
    codes, ids, kind = encode_ids(pd.Series(["10", "9", "-3", "10"]))
    assert kind == "int" and ids.tolist() == ["-3", "9", "10"] and codes.tolist() == [2, 1, 0, 2]
    for column in (["007", "8"], ["5.0", "6"], ["+5", "6"], ["a", "1"], [1, "1"]):
        assert encode_ids(pd.Series(column, dtype=object))[2] == "str", column
    assert encode_ids(pd.Series([3, 1], dtype="int64"))[1].tolist() == ["1", "3"]


@pytest.mark.parametrize("case", ["parquet-null-item", "parquet-bool-rating", "csv-after-blank-line"])
def test_train_checks_a_ratings_file_as_the_snapshot_does(tmp_path, case):
    """``python -m tasks.train --ratings FILE`` reads a file with the snapshot's own readers: a
    null id or a boolean rating column is exit 3 naming file, row and column (a Parquet file was
    read unchecked: the null item took the code -1, the last item's), and a text file's problem
    carries its physical line (blank lines counted). Nothing is written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"user_id": pa.array(["u1", "u2", "u3"]), "item_id": pa.array([10, 11, 12], pa.int64()),
            "rating": pa.array([4.0, 3.0, 5.0]), "timestamp": pa.array([100, 101, 102], pa.int64())}
    if case == "csv-after-blank-line":
        path = tmp_path / "r.csv"
        path.write_text("user_id,item_id,rating,timestamp\nu1,10,4,100\n\n\nu2,,3,101\n")
        expected = "r.csv, line 5, column 'item_id'"
    else:
        path = tmp_path / "r.parquet"
        if case == "parquet-null-item":
            cols["item_id"] = pa.array([10, None, 12], pa.int64())
            expected = "r.parquet, row 2, column 'item_id': missing id (null)"
        else:
            cols["rating"] = pa.array([True, False, True])
            expected = "r.parquet, row 1, column 'rating'"
        pq.write_table(pa.table(cols), path)
    out = subprocess.run([sys.executable, "-m", "tasks.train", "--ratings", str(path), "--out", str(tmp_path / "m"),
                          *CLI_FAST], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 3, out.stderr[-2000:]
    assert expected in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "m").exists()
