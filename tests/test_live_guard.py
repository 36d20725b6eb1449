"""The live version is immutable and a model version is trusted only when complete."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks import storage
from tasks.data import generate
from tasks.errors import EXIT_NO_RETRY, IncompleteArtifactError, LiveVersionError
from tasks.model import load, save
from tasks.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ratings_file(tmp_path):
    ratings, _ = generate(40, 80, 1_500, seed=7)
    path = tmp_path / "ratings.parquet"
    ratings.astype({"user_id": str, "item_id": str}).to_parquet(path)
    return str(path)


def test_a_finished_train_is_sealed_by_a_manifest(tmp_path, ratings_file):
    out = tmp_path / "models" / "v1"
    train(ratings_file, str(out), TrainConfig(sweeps=2), model_version="v1")
    manifest = json.loads((out / "_complete.json").read_text())
    assert set(manifest["files"]) == {"model.pt", "seen.npz", "meta.json", "metrics.json", "report.html"}
    assert manifest["files"]["model.pt"]["bytes"] == (out / "model.pt").stat().st_size
    assert load(str(out)).recommend(["1"], 3)[0].shape == (1, 3)


def test_an_interrupted_rewrite_is_never_loaded(tmp_path, ratings_file, monkeypatch):
    out = tmp_path / "models" / "v1"
    train(ratings_file, str(out), TrainConfig(sweeps=2), model_version="v1")
    rec = load(str(out))
    written = []
    real = storage.write_bytes

    def crash_after_weights(uri, data):
        real(uri, data)
        written.append(uri)
        if uri.endswith("model.pt"):
            raise KeyboardInterrupt("killed")  # the process dies here

    monkeypatch.setattr(storage, "write_bytes", crash_after_weights)
    with pytest.raises(KeyboardInterrupt):
        save(str(out), rec.model, {"user_ids": ["a"], "item_ids": ["b"]}, np.array([0, 0]), np.array([], int))
    monkeypatch.undo()
    assert written and not (out / "_complete.json").exists()
    with pytest.raises(IncompleteArtifactError, match=r"no _complete.json .*files present: \[.*'model.pt'"):
        load(str(out))


def test_a_file_that_does_not_match_the_manifest_is_refused(tmp_path, ratings_file):
    out = tmp_path / "models" / "v1"
    train(ratings_file, str(out), TrainConfig(sweeps=2), model_version="v1")
    (out / "model.pt").write_bytes((out / "model.pt").read_bytes() + b"x")
    with pytest.raises(IncompleteArtifactError, match="model.pt .* does not match _complete.json"):
        load(str(out))
    (out / "seen.npz").unlink()
    (out / "model.pt").unlink()
    with pytest.raises(IncompleteArtifactError, match="model.pt is missing"):
        load(str(out))


def write_live(models: Path, live: str, previous: str | None = None) -> None:
    models.mkdir(parents=True, exist_ok=True)
    pointer = {"model_version": live, "model_uri": str(models / live),
               "previous": {"model_version": previous, "model_uri": str(models / previous)} if previous else None}
    (models / "_live.json").write_text(json.dumps(pointer))


@pytest.mark.parametrize("version", ["v2", "v1"])  # live, rollback target
def test_train_refuses_the_live_version_before_writing(tmp_path, ratings_file, version):
    models = tmp_path / "models"
    write_live(models, "v2", "v1")
    with pytest.raises(LiveVersionError, match=f"refusing to train over model version {version}"):
        train(ratings_file, str(models / version), TrainConfig(sweeps=2), model_version=version)
    assert not (models / version).exists()


def test_score_and_finalize_refuse_the_live_version(tmp_path):
    from tasks.publish import finalize
    from tasks.score import score_shard

    models = tmp_path / "models"
    write_live(models, "v2")
    with pytest.raises(LiveVersionError, match="refusing to write rows for model version v2: it is live"):
        score_shard(str(models / "v2"), "unused", "v2", 5, out=str(tmp_path / "recs"))
    with pytest.raises(LiveVersionError, match="refusing to finalize model version v2"):
        finalize(str(models / "v2"), "unused", "v2", 5, 1, "table")


def test_a_refused_stage_exits_3_and_states_why_on_its_last_line(tmp_path, ratings_file):
    models = tmp_path / "models"
    write_live(models, "v2")
    res = subprocess.run([sys.executable, "-m", "tasks.train", "--ratings", ratings_file, "--out", str(models / "v2"),
                          "--model-version", "v2", "--sweeps", "1"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == EXIT_NO_RETRY, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("RECSYS-ERROR: refusing to train over model version v2: it is live")


def test_bad_input_exits_3_naming_file_line_column(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "bad.csv").write_text("user_id,item_id,rating,timestamp\n1,2,4,1700000000\n1,3,lots,1700000001\n")
    res = subprocess.run([sys.executable, "-m", "tasks.data", "snapshot", "--raw", str(raw), "--ds", "2026-11-23",
                          "--out", str(tmp_path / "snap"), "--quarantine", str(tmp_path / "q")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == EXIT_NO_RETRY, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("RECSYS-ERROR: invalid input:") and "bad.csv, line 3, column 'rating'" in last
    assert "rejected input was copied to" in last and not (tmp_path / "snap").exists()


def test_plugins_and_tasks_read_the_exit_code_and_names_from_one_file():
    import os

    from recsys import layout as airflow_side
    from recsys import operators
    from tasks import errors, layout

    assert os.path.samefile(airflow_side.__file__, layout.__file__)
    assert operators.EXIT_NO_RETRY == errors.EXIT_NO_RETRY == 3 and operators.ERROR_PREFIX == errors.ERROR_PREFIX
