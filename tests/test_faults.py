"""The fault suite (marker ``faults``): the stages as the DAG runs them (``python -m tasks.*``
subprocesses) against a moto server in its own process, which the tests stop, kill and restart.

- the moto server frozen (SIGSTOP) for 20 s while ``score`` writes rows: the run completes, one row
  per user;
- ``score`` and ``train`` killed (SIGKILL) mid-way: nothing partial is trusted, the re-run gives the
  same result as an uninterrupted run;
- two concurrent ``finalize`` calls for one version: both succeed, one marker, identical rows;
- the moto server killed and restarted between tasks: the task fails quickly with a clear,
  retryable error (exit 1, not 3), and the re-run succeeds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tasks import storage

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[1]
DS = "2026-11-23"
VERSION = "v20261123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoProcess:
    """``python -m moto.server`` on a fixed loopback port (kept across restarts)."""

    def __init__(self, log: Path):
        self.port, self.log, self.proc = free_port(), log, None
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=2).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.1)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def moto(tmp_path, monkeypatch):
    server = MotoProcess(tmp_path / "moto.log")
    server.start()
    env = {"AWS_ENDPOINT_URL": server.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "RECSYS_BUCKET": "recsys-faults", "RECSYS_TABLE": "recs-faults"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    storage.client.cache_clear()
    seed_account()
    yield server
    server.kill()
    storage.client.cache_clear()


def seed_account() -> None:
    from recsys import infra
    from recsys.settings import Settings

    infra.up(Settings(), ecs=False)


BASE = "s3://recsys-faults"
SNAP = f"{BASE}/datasets/ds={DS}"
MODEL = f"{BASE}/models/{VERSION}"
TABLE = "recs-faults"


def put_snapshot(users=400, items=120, ratings=8_000) -> list[str]:
    from tasks.data import generate

    r, it = generate(users, items, ratings, seed=11)
    r = r.astype({"user_id": str, "item_id": str})
    storage.write_parquet(f"{SNAP}/ratings.parquet", r)
    storage.write_parquet(f"{SNAP}/items.parquet", it.astype({"item_id": str}))
    return sorted(r.user_id.unique())


def stage(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RECSYS_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def run_stage(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    p = stage(*args)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def ok(*args: str) -> subprocess.CompletedProcess:
    res = run_stage(*args)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


TRAIN = ("tasks.train", "--ratings", SNAP, "--sweeps", "3")


def score_args(version: str, chunk: int = 25) -> tuple[str, ...]:
    return ("tasks.score", "--model", MODEL, "--ratings", SNAP, "--model-version", version, "--top-n", "5",
            "--table", TABLE, "--chunk-size", str(chunk))


def finalize_args(version: str) -> tuple[str, ...]:
    return ("tasks.publish", "finalize", "--model", MODEL, "--ratings", SNAP, "--model-version", version,
            "--top-n", "5", "--table", TABLE, "--shards", "1")


def rows(version: str) -> dict[str, str]:
    """user_id -> items attribute of every row of ``version`` (marker and fallback included)."""
    ddb, out, kw = storage.client("dynamodb"), {}, {}
    while True:
        page = ddb.scan(TableName=TABLE, **kw)
        for it in page["Items"]:
            if it["model_version"]["S"] == version:
                out[it["user_id"]["S"]] = it.get("items", {}).get("S") or it.get("users", {}).get("N")
        if "LastEvaluatedKey" not in page:
            return out
        kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def wait_for(predicate, what: str, timeout: float = 300, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)
    return value


def some_rows_written(version: str) -> bool:
    ddb = storage.client("dynamodb")
    return ddb.scan(TableName=TABLE, Select="COUNT", Limit=50)["Count"] > 0 and bool(rows(version))


def test_moto_frozen_20s_while_publishing(moto):
    users = put_snapshot()
    ok(*TRAIN, "--out", MODEL)
    p = stage(*score_args(VERSION))
    wait_for(lambda: p.poll() is not None or some_rows_written(VERSION), "the first rows")
    assert p.poll() is None, "score finished before the fault could be injected"
    os.kill(moto.proc.pid, signal.SIGSTOP)
    time.sleep(20)
    os.kill(moto.proc.pid, signal.SIGCONT)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    ok(*finalize_args(VERSION))
    got = rows(VERSION)
    assert sorted(set(got) - {"__complete__", "__popular__"}) == users  # exactly one row per user
    assert got["__complete__"] == str(len(users))


def test_score_killed_midway_then_rerun_gives_the_uninterrupted_result(moto):
    users = put_snapshot()
    ok(*TRAIN, "--out", MODEL)
    p = stage(*score_args(VERSION))
    wait_for(lambda: p.poll() is not None or some_rows_written(VERSION), "the first rows")
    assert p.poll() is None, "score finished before it could be killed"
    p.kill()
    p.wait()
    partial = rows(VERSION)
    assert 0 < len(partial) < len(users)
    # the shard manifest is written last: finalize refuses to mark the half-written version
    res = run_stage(*finalize_args(VERSION))
    assert res.returncode != 0 and "have no manifest" in res.stderr
    assert "__complete__" not in rows(VERSION)
    ok(*score_args(VERSION))
    ok(*finalize_args(VERSION))
    ok(*score_args("vclean"))  # the same model scored without interruption, under another version
    got, clean = rows(VERSION), rows("vclean")
    assert sorted(set(got) - {"__complete__", "__popular__"}) == users
    assert {u: got[u] for u in users} == {u: clean[u] for u in users}  # identical lists


def test_train_killed_midway_leaves_nothing_loadable_and_rerun_matches(moto):
    from tasks.errors import IncompleteArtifactError
    from tasks.model import load

    put_snapshot(users=2_000, items=400, ratings=120_000)
    ok(*TRAIN, "--out", f"{BASE}/models/vclean")
    p = stage(*TRAIN, "--out", MODEL)
    wait_for(lambda: p.poll() is not None or storage.list_files(MODEL), "the first artifact file", every=0.005)
    p.send_signal(signal.SIGSTOP)  # freeze it between its writes, then kill it there
    written = storage.list_files(MODEL)
    p.kill()
    p.wait()
    assert written and f"{MODEL}/_complete.json" not in written, written
    with pytest.raises(IncompleteArtifactError):
        load(MODEL)
    ok(*TRAIN, "--out", MODEL)
    a, b = load(MODEL), load(f"{BASE}/models/vclean")
    users = a.user_ids[:50]
    assert (a.recommend(users, 10)[0] == b.recommend(users, 10)[0]).all()


def test_two_concurrent_finalize_calls_for_one_version(moto):
    users = put_snapshot()
    ok(*TRAIN, "--out", MODEL)
    ok(*score_args(VERSION, chunk=4096))
    procs = [stage(*finalize_args(VERSION)) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    for code, err in results:
        assert code == 0, err[-3000:]
    got = rows(VERSION)
    assert sorted(set(got) - {"__complete__", "__popular__"}) == users
    assert got["__complete__"] == str(len(users))


def test_moto_restarted_between_tasks(moto):
    from tasks.data import generate

    def put_raw():
        r, _ = generate(50, 60, 900, seed=4)
        storage.write_bytes(f"{BASE}/raw/ratings/part.csv", r.to_csv(index=False).encode())

    snapshot = ("tasks.data", "snapshot", "--raw", f"{BASE}/raw/ratings", "--ds", DS, "--out", SNAP,
                "--quarantine", f"{BASE}/quarantine/ds={DS}")
    put_raw()
    moto.kill()  # the endpoint is gone: connections are refused
    start = time.monotonic()
    res = run_stage(*snapshot)
    elapsed = time.monotonic() - start
    assert res.returncode == 1, res.stderr[-2000:]  # transient: Airflow retries it (exit 3 would not)
    assert "Could not connect to the endpoint URL" in res.stderr
    assert elapsed < 120  # bounded attempts (5) with backoff, not an endless loop
    moto.start()  # a new, empty server on the same port: the account is set up again
    storage.client.cache_clear()
    seed_account()
    put_raw()
    ok(*snapshot)
    assert storage.exists(f"{SNAP}/ratings.parquet") and storage.exists(f"{SNAP}/_manifest.json")
