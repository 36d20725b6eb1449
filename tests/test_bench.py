"""The benchmark scripts still run (they are not imported by anything else, so a renamed
contract breaks them silently): each on tiny inputs, its output checked for the lines that
carry its ratios and, where it has one, its correctness check. No timing is asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.bench


def run(script: str, *args: str, timeout: float = 600) -> str:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}
    res = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout, check=False)
    assert res.returncode == 0, f"bench/{script} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def test_score_bench_measures_both_scorers_and_publishes_every_row_once():
    out = run("score_bench.py", "--preset", "ml-100k", "--publish-users", "300", "--topk-users", "300",
              "--repeat", "1")
    assert "ratio to matmul" in out and "same, reference impl." in out, out
    assert "read back: 300 rows, lost 0, duplicated 0" in out, out


def test_parse_bench_parses_the_dag_against_its_baseline():
    out = run("parse_bench.py", "--repeat", "1")
    assert "recommender_pipeline" in out and "x baseline" in out, out


def test_snapshot_bench_compares_the_snapshot_to_read_csv():
    out = run("snapshot_bench.py", "--mb", "1")
    assert "python -m tasks.data snapshot" in out and "snapshot / baseline read_csv" in out, out
    assert "snapshot / baseline read_parquet" in out, out


def test_train_bench_loads():
    """Its smallest run takes about a minute (make bench-train): here only its imports and options."""
    out = run("train_bench.py", "--help")
    assert "--folds" in out and "--scale" in out, out


def test_serve_bench_measures_the_app_against_bare_fastapi_and_a_stall():
    out = run("serve_bench.py", "--clients", "1,2", "--seconds", "0.3", "--users", "20", "--stall-seconds", "1")
    assert "bare async def" in out and "stub 2 ms, warm" in out and "moto, warm" in out, out
    assert "through tasks.publish finalize" in out and "x bare" in out, out
    assert "DynamoDB stalled 1 s" in out and "answered 200 from the cache" in out, out
