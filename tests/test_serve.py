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
