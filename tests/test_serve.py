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
    from tasks.serve.config import Settings

    # botocore's own retries can outlast two seconds (rand(0, 1) s backoff between the attempts):
    # the app's deadline is what bounds a request, so it must be the shorter of the two
    deadline = Settings.model_fields["recsys_serve_deadline_seconds"].default
    assert deadline < 2.0 < storage.worst_case_seconds("serve")
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
    # bounded, no stacking; the request's deadline may end it before botocore's second attempt
    assert 1 <= stalled.accepted <= storage.RETRY_PROFILES["serve"]["total_max_attempts"]
    # the guard is loose (a shared machine); before this profile the same request took 120 s
    assert elapsed < storage.worst_case_seconds("serve") + 5
    records = [rec for rec in caplog.records if rec.name == "tasks.serve"]
    assert len(records) == 1 and records[0].exc_info is None
    assert any(e in records[0].getMessage() for e in ("ReadTimeout", "DeadlineExceeded")), records[0].getMessage()


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
    from tasks.schema import DataValidationError, validate_ratings

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


# -- under load: the row cache, ETags, the DynamoDB bound, /metrics, size limits ----------------

def settings(**kw):
    return Settings(recsys_table="recs", model_version="v1", **kw)


MARKER = {"users": 1, "top_n": 2, "generated_at": "t", "expires_at": 0}
ROW = [{"item_id": "7", "score": 4.5, "title": "Seven"}, {"item_id": "9", "score": 4.1, "title": "Nine"}]


class StubReader:
    """The app's DynamoDB reads (tasks.serve.deps.Reader), counted; ``gate`` blocks them (a stall)."""

    def __init__(self, gate=None):
        import threading

        self.gate, self.calls, self.lock = gate, [], threading.Lock()

    def _call(self, what):
        with self.lock:
            self.calls.append(what)
        if self.gate is not None:
            self.gate.wait(timeout=60)

    def marker(self, version):
        self._call(("marker", version))
        return MARKER

    def items(self, version, user_id):
        self._call((version, user_id))
        return None if user_id.startswith("new") else ROW


def metric(c, name):
    for line in c.get("/metrics").text.splitlines():
        if line.split("{")[0].split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_cache_hit_makes_no_dynamodb_call(seeded, aws_calls):
    c = client(seeded, "v1")
    first = c.get("/recommendations/42?n=1")
    assert [call.operation for call in aws_calls] == ["GetItem", "GetItem"]  # the marker, the row
    aws_calls.clear()
    again, other_n = c.get("/recommendations/42?n=1"), c.get("/recommendations/42?n=2")
    assert aws_calls == []  # the same row, from the cache, for any n
    assert again.json() == first.json() and len(other_n.json()["items"]) == 2
    assert metric(c, "recsys_cache_hits_total") == 2 and metric(c, "recsys_cache_misses_total") == 1
    assert metric(c, "recsys_cache_hit_ratio") == 2 / 3
    c.get("/recommendations/nobody")  # no row: the miss and the fallback list are cached too
    aws_calls.clear()
    assert c.get("/recommendations/nobody").json()["source"] == "fallback" and aws_calls == []


def test_cache_off_reads_every_time():
    from tasks.serve import create_app

    reader = StubReader()
    c = TestClient(create_app(settings(recsys_serve_cache_bytes=0), reader))
    for _ in range(3):
        assert c.get("/recommendations/u1").status_code == 200
    assert reader.calls.count(("v1", "u1")) == 3


def test_row_cache_is_an_lru_bounded_in_bytes():
    from tasks.serve.cache import MISS, RowCache, row_bytes

    one = row_bytes(("v1", "u0"), ROW)
    cache = RowCache(max_bytes=3 * one)
    for u in ("u0", "u1", "u2"):
        cache.put(("v1", u), ROW)
    assert cache.get(("v1", "u0")) == ROW  # now the most recently used
    cache.put(("v1", "u3"), ROW)  # over the bound: the least recently used (u1) goes
    assert cache.get(("v1", "u1")) is MISS and cache.get(("v1", "u0")) == ROW
    assert len(cache) == 3 and cache.bytes == 3 * one <= cache.max_bytes and cache.evictions == 1
    cache.put(("v1", "big"), ROW * 1000)  # larger than the whole cache: not cached, nothing evicted
    assert cache.get(("v1", "big")) is MISS and len(cache) == 3


def test_etag_cache_control_and_304_without_a_dynamodb_read(seeded, aws_calls):
    c = client(seeded, "v1")
    r = c.get("/recommendations/42?n=1")
    tag = r.headers["etag"]
    assert r.status_code == 200 and r.headers["cache-control"] == "public, max-age=60"
    assert tag.startswith('"') and tag.endswith('"') and len(tag) == 34
    assert c.get("/recommendations/42?n=2").headers["etag"] != tag  # another body, another tag
    assert client(seeded, "v2").app.state.settings.model_version == "v2"
    aws_calls.clear()
    for header in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        not_modified = c.get("/recommendations/42?n=1", headers={"If-None-Match": header})
        assert not_modified.status_code == 304 and not_modified.content == b""
        assert not_modified.headers["etag"] == tag and "cache-control" in not_modified.headers
    assert aws_calls == []
    assert c.get("/recommendations/42?n=1", headers={"If-None-Match": '"other"'}).status_code == 200


def test_versions_have_their_own_tags():
    from tasks.serve.routes import etag

    assert etag("v1", "42", 10) != etag("v2", "42", 10)
    assert etag("v1", "42", 10) == etag("v1", "42", 10) != etag("v1", "43", 10)


def _concurrently(app, paths, until):
    """GET ``paths`` at once against the app in this event loop; ``until(results_so_far)`` is awaited
    (polled) before the blocked ones are let go by the caller's ``release``."""
    import asyncio

    import httpx

    async def run():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as ac:
            tasks = [asyncio.create_task(ac.get(p)) for p in paths]
            await until(tasks)
            return [await t for t in tasks]

    return asyncio.run(run())


def test_a_stalled_backend_sheds_beyond_the_bound_and_cache_hits_still_answer():
    import asyncio
    import threading

    from tasks.serve import create_app

    gate = threading.Event()
    reader = StubReader(gate)
    app = create_app(settings(recsys_serve_ddb_concurrency=2, recsys_serve_queue_seconds=0), reader)
    table = app.state.table
    table._marker, table._marker_at = MARKER, 1e18  # known complete
    table.cache.put(("v1", "cached"), ROW)
    reader.calls.clear()
    shed = {}

    async def until(tasks):
        for _ in range(6000):  # both slots taken by blocked reads (a bound on polls, not a timing)
            if len(reader.calls) == 2:
                break
            await asyncio.sleep(0.005)
        async with __import__("httpx").AsyncClient(transport=__import__("httpx").ASGITransport(app=app),
                                                   base_url="http://t") as ac:
            shed["over"] = await ac.get("/recommendations/u3")
            shed["hit"] = await ac.get("/recommendations/cached")
            shed["metrics"] = (await ac.get("/metrics")).text
        gate.set()

    blocked = _concurrently(app, ["/recommendations/u1", "/recommendations/u2"], until)
    assert [r.status_code for r in blocked] == [200, 200]
    assert shed["over"].status_code == 503 and shed["over"].json() == {"detail": "overloaded, retry"}
    assert shed["over"].headers["retry-after"] == "1" and shed["over"].headers["cache-control"] == "no-store"
    assert shed["hit"].status_code == 200  # from the cache while both slots are stuck
    assert sorted(reader.calls) == [("v1", "u1"), ("v1", "u2")]  # the shed request made no call
    assert "recsys_requests_shed_total 1.0" in shed["metrics"]
    assert "recsys_dynamodb_in_flight 2.0" in shed["metrics"]


def test_a_request_waits_for_a_slot_within_the_queue_time_and_same_user_reads_are_shared():
    import asyncio
    import threading

    from tasks.serve import create_app

    gate = threading.Event()
    reader = StubReader(gate)
    app = create_app(settings(recsys_serve_ddb_concurrency=1, recsys_serve_queue_seconds=60), reader)
    app.state.table._marker, app.state.table._marker_at = MARKER, 1e18
    reader.calls.clear()

    async def until(tasks):
        for _ in range(6000):
            if reader.calls:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # the others are queued (or sharing u1's read) by now
        gate.set()

    paths = ["/recommendations/u1", "/recommendations/u1", "/recommendations/u2"]
    got = _concurrently(app, paths, until)
    assert [r.status_code for r in got] == [200, 200, 200]
    assert sorted(reader.calls) == [("v1", "u1"), ("v1", "u2")]  # u1 read once for both requests


def test_a_seen_marker_survives_a_failed_re_read():
    from tasks.serve import create_app

    class Flaky(StubReader):
        fail = False

        def marker(self, version):
            if self.fail:
                raise ConnectionError("stalled")
            return super().marker(version)

    reader = Flaky()
    c = TestClient(create_app(settings(marker_ttl_seconds=0), reader), raise_server_exceptions=False)
    assert c.get("/recommendations/u1").status_code == 200
    reader.fail = True
    assert c.get("/recommendations/u1").status_code == 200  # cached row, marker kept
    fresh = TestClient(create_app(settings(marker_ttl_seconds=0), reader), raise_server_exceptions=False)
    assert fresh.get("/recommendations/u1").status_code == 500  # never seen: not served


def test_metrics_are_prometheus_text_format():
    import re

    from tasks.serve import create_app

    c = TestClient(create_app(settings(), StubReader()))
    c.get("/recommendations/u1")
    r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    lines = r.text.splitlines()
    assert r.text.endswith("\n")
    helped = {ln.split()[2] for ln in lines if ln.startswith("# HELP ")}
    typed = {ln.split()[2]: ln.split()[3] for ln in lines if ln.startswith("# TYPE ")}
    samples = [ln for ln in lines if not ln.startswith("#")]
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"\})? (\S+)$')
    for ln in samples:
        m = sample.match(ln)
        assert m, ln
        name = m.group(1)
        assert name in helped and name in typed and typed[name] in ("counter", "gauge")
        assert name.endswith("_total") == (typed[name] == "counter"), name
        float(m.group(3))
    assert 'recsys_model_version_info{model_version="v1"} 1.0' in samples
    assert "recsys_cache_misses_total 1.0" in samples and "recsys_cache_rows 1.0" in samples


@pytest.mark.parametrize("path", ["/recommendations/" + "x" * 10_000, "/recommendations/42?n=" + "9" * 10_000,
                                  "/recommendations/" + "%01" * 5_000])
def test_422_quotes_only_a_short_prefix_of_the_input(path):
    from tasks.serve import create_app

    r = TestClient(create_app(settings(), StubReader())).get(path)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"]
    assert len(r.content) < 1_000, len(r.content)  # FastAPI's own handler quoted all 10,000 characters
    assert "(10000 characters)" in r.text or "(5000 characters)" in r.text


def test_oversized_headers_get_431_from_the_app():
    from tasks.serve import create_app

    c = TestClient(create_app(settings(), StubReader()))
    assert c.get("/recommendations/u1", headers={"X-Big": "a" * 8_000}).status_code == 200
    r = c.get("/recommendations/u1", headers={"X-Big": "a" * 20_000})
    assert r.status_code == 431 and r.json() == {"detail": "request headers too large"}


def test_the_server_bounds_request_headers(seeded, tmp_path):
    """``python -m tasks.serve`` as the image runs it: a head over 16 KiB is refused, whether it
    arrives in one piece (the app's 431) or keeps coming (h11's buffer bound: 400, connection closed).
    uvicorn's default parser where httptools is installed took 8 MB."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.conftest import free_port

    port = free_port()
    env = {**os.environ, "RECSYS_TABLE": seeded, "MODEL_VERSION": "v1"}
    log = (tmp_path / "serve.log").open("wb")
    app = subprocess.Popen([sys.executable, "-m", "tasks.serve", "--host", "127.0.0.1", "--port", str(port)],
                           env=env, stdout=log, stderr=subprocess.STDOUT)

    def status(header_bytes: int, chunk: int) -> int:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET /recommendations/42 HTTP/1.1\r\nHost: x\r\n")
            line = b"X-Big: " + b"a" * (header_bytes - 9) + b"\r\n"
            try:
                for at in range(0, len(line), chunk):
                    s.sendall(line[at:at + chunk])
                s.sendall(b"\r\n")
            except OSError:  # the server answered and closed while we were still sending
                pass
            return int(s.recv(65536).split(b" ", 2)[1])

    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        assert status(8_000, 1 << 20) == 200
        assert status(64_000, 1 << 20) in (400, 431)  # one write
        assert status(8 << 20, 64 << 10) in (400, 431)  # 8 MB in 64 KB pieces
    finally:
        app.terminate()
        app.wait(timeout=30)
        log.close()


def test_a_request_answers_503_at_its_deadline_while_the_read_keeps_its_slot():
    import asyncio
    import threading

    from tasks.serve import create_app

    gate = threading.Event()
    reader = StubReader(gate)
    app = create_app(settings(recsys_serve_deadline_seconds=0.2, recsys_serve_ddb_concurrency=1,
                              recsys_serve_queue_seconds=0), reader)
    app.state.table._marker, app.state.table._marker_at = MARKER, 1e18
    reader.calls.clear()
    got = {}

    async def until(tasks):
        got["first"] = await tasks[0]  # the stalled read outlived the request's deadline
        async with __import__("httpx").AsyncClient(transport=__import__("httpx").ASGITransport(app=app),
                                                   base_url="http://t") as ac:
            got["next"] = await ac.get("/recommendations/u2")  # the stuck read still holds the one slot
            gate.set()
            for _ in range(6000):
                if app.state.table.bulkhead.in_flight == 0:
                    break
                await asyncio.sleep(0.005)
            got["after"] = await ac.get("/recommendations/u1")  # the late answer was cached

    _concurrently(app, ["/recommendations/u1"], until)
    assert got["first"].status_code == 503 and got["first"].json() == {"detail": "backend unavailable"}
    assert got["next"].status_code == 503 and got["next"].json() == {"detail": "overloaded, retry"}
    assert got["after"].status_code == 200 and reader.calls == [("v1", "u1")]


def test_the_serving_images_files_are_enough_to_import_the_app(tmp_path):
    """The serving Dockerfile copies a hand-picked list of tasks/ modules. A new import in one of
    them (tasks.table importing tasks.errors) once broke the image only in the Docker tier: this
    lays out exactly what the Dockerfile copies and imports the app from it, no engine needed."""
    import shlex
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    lines = (root / "tasks" / "serve" / "Dockerfile").read_text().splitlines()
    copies = [shlex.split(line)[1:] for line in lines if line.startswith("COPY ") and "--from" not in line]
    copied = 0
    for *sources, dest in copies:
        for src in sources:
            if not src.startswith("tasks"):
                continue
            target = tmp_path / (dest if dest.endswith("/") and not src.endswith("/") else dest.rstrip("/"))
            if src.endswith("/"):
                shutil.copytree(root / src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(root / src, target / Path(src).name)
            copied += 1
    assert copied >= 2, f"no tasks/ COPY lines found in the serving Dockerfile: {copies}"
    res = subprocess.run([sys.executable, "-c", "import tasks.serve, tasks.serve.__main__"], cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
