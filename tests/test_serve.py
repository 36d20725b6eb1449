"""The HTTP service against DynamoDB in the moto server."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tasks import table
from tasks.serve import create_app
from tasks.serve.config import Settings


@pytest.fixture
def seeded(aws):
    name = aws["table"]
    rows = [table.rec_item("42", "v1", table.encode_items(["7", "9"], [4.5, 4.1], ["Seven", "Nine"]), "t", 0),
            table.rec_item("__popular__", "v1", table.encode_items(["1"], [300.0], ["Popular"]), "t", 0)]
    table.write_items(name, rows)
    table.put_marker(name, "v1", 1, 2, "t", 0)
    table.write_items(name, [table.rec_item("42", "v2", table.encode_items(["8"], [3.0], ["Eight"]), "t", 0)])
    return name


def client(name, version):
    # raise_server_exceptions=False: see what a real client sees for unhandled errors
    return TestClient(create_app(Settings(recsys_table=name, model_version=version)), raise_server_exceptions=False)


def test_known_user_gets_ordered_items(seeded):
    r = client(seeded, "v1").get("/recommendations/42?n=1")
    assert r.status_code == 200
    assert r.json() == {"user_id": "42", "model_version": "v1", "source": "personal",
                        "items": [{"item_id": "7", "score": 4.5, "title": "Seven"}]}


def test_unknown_user_gets_the_documented_fallback(seeded):
    body = client(seeded, "v1").get("/recommendations/nobody").json()
    assert body["source"] == "fallback" and body["items"][0]["item_id"] == "1"


@pytest.mark.parametrize("path", ["/recommendations/42?n=0", "/recommendations/42?n=101",
                                  "/recommendations/42?n=ten", "/recommendations/__complete__",
                                  "/recommendations/" + "x" * 65])
def test_malformed_requests_are_4xx_json(seeded, path):
    r = client(seeded, "v1").get(path)
    assert r.status_code == 422 and "detail" in r.json()


def test_incomplete_version_is_refused(seeded):
    c = client(seeded, "v2")  # rows exist but no completion marker
    assert c.get("/healthz").status_code == 200
    assert c.get("/readyz").status_code == 503
    r = c.get("/recommendations/42")
    assert r.status_code == 503 and "not complete" in r.json()["detail"]


def test_ready_and_openapi(seeded):
    c = client(seeded, "v1")
    assert c.get("/readyz").json() == {"status": "ready", "model_version": "v1", "users": 1}
    spec = c.get("/openapi.json").json()
    assert "/recommendations/{user_id}" in spec["paths"] and "/readyz" in spec["paths"]


def test_backend_failure_is_503_not_500(aws):
    c = client("no-such-table", "v1")
    r = c.get("/recommendations/42")
    assert r.status_code == 503 and "backend unavailable" in r.json()["detail"]


def test_missing_model_version_is_a_clear_startup_error(monkeypatch, capsys):
    from tasks.serve.__main__ import main

    monkeypatch.delenv("MODEL_VERSION", raising=False)
    assert main(["--port", "0"]) == 2
    assert "MODEL_VERSION" in capsys.readouterr().err


# -- hardening: a stalled backend, error mapping, HEAD, the id rule -------------------------

class StalledServer:
    """A TCP server that accepts connections and never answers (a stalled DynamoDB)."""

    def __init__(self):
        import socket
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted, self._held = 0, []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)

    def close(self):
        for c in self._held:
            c.close()
        self.sock.close()


def serving_client_at(endpoint, monkeypatch):
    """The app with its production DynamoDB client (storage.client, serve profile) at ``endpoint``."""
    from tasks import storage

    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    storage.client.cache_clear()
    return client("recs", "v1")


def test_serving_budget_is_under_two_seconds():
    from tasks import storage

    assert storage.worst_case_seconds("serve") < 2.0
    cfg = storage.client_config("serve")
    assert cfg.connect_timeout <= 0.5 and cfg.read_timeout <= 1.0 and cfg.retries["total_max_attempts"] == 2


def test_stalled_dynamodb_answers_503_within_the_budget(moto_endpoint, monkeypatch, caplog):
    import time

    from tasks import storage

    stalled = StalledServer()
    try:
        c = serving_client_at(f"http://127.0.0.1:{stalled.port}", monkeypatch)
        start = time.monotonic()
        with caplog.at_level("WARNING", logger="tasks.serve"):
            r = c.get("/recommendations/42")
        elapsed = time.monotonic() - start
    finally:
        stalled.close()
        storage.client.cache_clear()
    assert r.status_code == 503 and r.json() == {"detail": "backend unavailable"}
    assert stalled.accepted == storage.RETRY_PROFILES["serve"]["total_max_attempts"]  # bounded, no stacking
    # the guard is loose (a shared machine); before this profile the same request took 120 s
    assert elapsed < storage.worst_case_seconds("serve") + 5
    records = [rec for rec in caplog.records if rec.name == "tasks.serve"]
    assert len(records) == 1 and records[0].exc_info is None and "ReadTimeout" in records[0].getMessage()


def test_refused_dynamodb_answers_503(moto_endpoint, monkeypatch):
    import socket
    import time

    from tasks import storage

    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed when the block ends: connections are refused
    try:
        start = time.monotonic()
        r = serving_client_at(f"http://127.0.0.1:{port}", monkeypatch).get("/readyz")
        elapsed = time.monotonic() - start
    finally:
        storage.client.cache_clear()
    assert r.status_code == 503 and r.json() == {"detail": "backend unavailable"}
    assert elapsed < storage.worst_case_seconds("serve") + 5


def test_corrupt_row_is_a_500_logged_once_with_its_key(seeded, caplog):
    from tasks import storage

    storage.client("dynamodb").put_item(TableName=seeded, Item={
        "user_id": {"S": "broken"}, "model_version": {"S": "v1"}, "items": {"S": '{"item_id": ['}})
    with caplog.at_level("INFO", logger="tasks.serve"):
        r = client(seeded, "v1").get("/recommendations/broken")
    assert r.status_code == 500 and r.json() == {"detail": "internal error"}
    records = [rec for rec in caplog.records if rec.name == "tasks.serve"]
    assert len(records) == 1 and records[0].exc_info is None
    assert "'broken'" in records[0].getMessage() and seeded in records[0].getMessage()


def test_a_bug_is_a_500_without_details(seeded, monkeypatch):
    from tasks.serve.deps import RecsTable

    def boom(self, user_id):
        raise ZeroDivisionError("secret internals")

    monkeypatch.setattr(RecsTable, "recommendations", boom)
    r = client(seeded, "v1").get("/recommendations/42")
    assert r.status_code == 500 and r.json() == {"detail": "internal error"}


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/recommendations/42?n=1", "/recommendations/nobody",
                                  "/recommendations/__x", "/openapi.json"])
def test_head_answers_as_get_without_a_body(seeded, path):
    c = client(seeded, "v1")
    got, head = c.get(path), c.head(path)
    assert head.status_code == got.status_code != 405
    assert head.content == b"" and head.headers["content-length"] == str(len(got.content))


USER_IDS = ["42", "_", "_x", "...", ".x", "é", "a?b#%", "x" * 64, "user@example.com",
            "", "__x", ".", "..", "a b", "a/b", "x" * 65, "x\n", "x\t", "x\x85", "x\x1c", "x\ufeff", "x\u00a0",
            "x\u2028", "x\x7f"]


@pytest.mark.parametrize("user_id", USER_IDS, ids=lambda u: repr(u)[:20])
def test_one_id_rule_in_the_schema_the_server_and_the_snapshot(seeded, user_id, tmp_path):
    import re
    from urllib.parse import quote

    import pandas as pd

    from tasks.constants import USER_ID_PATTERN
    from tasks.data.schema import DataValidationError, validate_ratings

    c = client(seeded, "v1")
    spec = c.get("/openapi.json").json()
    param = spec["paths"]["/recommendations/{user_id}"]["get"]["parameters"][0]
    assert param["schema"]["pattern"] == USER_ID_PATTERN
    valid = re.fullmatch(USER_ID_PATTERN, user_id) is not None
    # the ECMA reading of the published pattern, as a client's validator would apply it
    ecma_valid = _ecma_match(param["schema"]["pattern"], user_id)
    assert ecma_valid == valid
    if user_id and user_id not in (".", ".."):  # "", "." and ".." never reach the route as a segment
        status = c.get("/recommendations/" + quote(user_id, safe="")).status_code
        # invalid: 422, or 404 for "/" (decoded before routing, so it splits the path)
        assert status == 200 if valid else status == (404 if "/" in user_id else 422)
    raw = pd.DataFrame({"user_id": [user_id], "item_id": ["1"], "rating": [4.0], "timestamp": [1]})
    try:
        validate_ratings("s3://b/ratings.csv", raw, 2, rating_min=0.5, rating_max=5.0, max_timestamp=None)
        accepted = True
    except DataValidationError as e:
        accepted, err = False, e
        assert "column 'user_id'" in str(err) and "line 2" in str(err)
    # the snapshot strips surrounding whitespace, then applies the same rule to what it stores
    assert accepted == (re.fullmatch(USER_ID_PATTERN, user_id.strip()) is not None)
    if not accepted and user_id.strip():
        assert repr(user_id)[:20] in str(err)  # the message quotes the value


def _ecma_match(pattern: str, value: str) -> bool:
    """ECMA-262 regex semantics for this pattern: no \\s, \\d or \\w in it (so no dialect gap there),
    $ only at the end (Python's $ would also match before a final newline)."""
    import re

    assert not re.search(r"\\[sdwSDWbB]", pattern)
    return re.fullmatch(pattern, value) is not None


def test_schemathesis_finds_no_failure_against_the_running_app(seeded, tmp_path):
    """``schemathesis run`` (all checks, bounded examples) against the app served by uvicorn on
    loopback, reading the moto server: what the OpenAPI schema promises is what the server does."""
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    st = shutil.which("schemathesis", path=os.path.dirname(sys.executable))
    assert st, "schemathesis is in requirements.txt (pyproject.toml, group test)"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RECSYS_TABLE": seeded, "MODEL_VERSION": "v1"}
    log = (tmp_path / "serve.log").open("wb")
    app = subprocess.Popen([sys.executable, "-m", "tasks.serve", "--host", "127.0.0.1", "--port", str(port)],
                           env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        res = subprocess.run([st, "run", f"http://127.0.0.1:{port}/openapi.json", "--checks", "all",
                              "--max-examples", "40", "--seed", "1", "--workers", "1", "--no-color"],
                             capture_output=True, text=True, timeout=600, env={**os.environ, "NO_COLOR": "1"})
    finally:
        app.terminate()
        app.wait(timeout=30)
        log.close()
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert "No issues found" in res.stdout or "passed" in res.stdout, res.stdout[-3000:]
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
