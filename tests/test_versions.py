"""The versions page: its JSON from a known set of versions on the moto server, and the page
rendered by headless Chromium with its plots there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tasks import layout, table
from tasks.publish import __main__ as publish_cli
from tasks.publish import versions

V1, V2, V3 = "v20261101T020000s-aaaaaa", "v20261102T020000s-bbbbbb", "v20261103T020000s-cccccc"
BASE = {"global_mean": {"rmse": 1.12, "ndcg@10": 0.01}, "bias": {"rmse": 0.97}, "popularity": {"ndcg@10": 0.05}}


def put(s3, bucket, key, obj):
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(obj).encode())


@pytest.fixture
def bucket(aws, boto):
    """Three nights with versions (v1, v2 published and served, v3 rejected by the gate), a fourth
    night quarantined; v2 served, then an operator rolled back to v1."""
    s3, b = boto("s3"), aws["bucket"]
    for v, ds, rmse, ndcg, rows in ((V1, "2026-11-01", 0.95, 0.10, 1000), (V2, "2026-11-02", 0.93, 0.12, 1100),
                                    (V3, "2026-11-03", 1.20, 0.02, 1150)):
        put(s3, b, f"models/{v}/metrics.json", {"candidate": {"rmse": rmse, "ndcg@10": ndcg, "mae": 0.7},
                                                "baselines": BASE, "holdout": {"ratings": 100, "users": 50},
                                                "history": [{"sweep": 1}]})
        put(s3, b, f"models/{v}/_complete.json", {"model_version": v, "files": {}})
        s3.put_object(Bucket=b, Key=f"models/{v}/report.html", Body=b"<html></html>")
        put(s3, b, f"datasets/ds={ds}/_manifest.json", {"ds": ds, "rows": rows, "rows_read": rows + 5, "users": 60,
                                                        "items": 40})
    put(s3, b, f"runs/ds=2026-11-01/{V1}/gate.json", {"promote": True, "reasons": [], "forced": False})
    put(s3, b, f"runs/ds=2026-11-01/{V1}/summary.json", {"users_written": 900, "deployed": True})
    put(s3, b, f"runs/ds=2026-11-02/{V2}/gate.json", {"promote": True, "reasons": [], "forced": False})
    put(s3, b, f"runs/ds=2026-11-03/{V3}/gate.json",
        {"promote": False, "reasons": ["RMSE 1.2000 does not beat user+item biases (0.9700)"], "forced": False})
    table.put_marker(aws["table"], V1, 900, 10, "2026-11-01T02:30:00+00:00", 1_800_000_000)
    table.put_marker(aws["table"], V2, 910, 10, "2026-11-02T02:30:00+00:00", 1_800_000_000)
    s3.put_object(Bucket=b, Key="quarantine/ds=2026-11-04/bad.csv", Body=b"user_id\n")
    put(s3, b, "quarantine/ds=2026-11-04/_reason.json",
        {"ds": "2026-11-04", "files": ["s3://x/bad.csv"],
         "problems": ["bad.csv, line 3, column 'rating': not a number"]})
    for v, at in ((V1, "2026-11-01T03:00:00+00:00"), (V2, "2026-11-02T03:00:00+00:00")):
        put(s3, b, layout.live_history_key(at, v), {"model_version": v, "deployed_at": at})
    put(s3, b, layout.live_history_key("2026-11-02T12:00:00+00:00", V1),
        {"model_version": V1, "deployed_at": "2026-11-02T12:00:00+00:00",
         "rollback": {"from": V2, "reason": "odd recommendations", "by": "alice"}})
    put(s3, b, "models/_live.json", {"model_version": V1, "model_uri": f"s3://{b}/models/{V1}",
                                     "deployed_at": "2026-11-02T12:00:00+00:00",
                                     "previous": {"model_version": V2, "model_uri": f"s3://{b}/models/{V2}"}})
    return aws


def test_versions_json_has_the_known_answers(bucket, boto):
    root = f"s3://{bucket['bucket']}"
    assert publish_cli.main(["versions", "--root", root, "--table", bucket["table"]]) == 0
    s3 = boto("s3")
    data = json.loads(s3.get_object(Bucket=bucket["bucket"], Key="versions/versions.json")["Body"].read())
    page = s3.get_object(Bucket=bucket["bucket"], Key="versions/index.html")
    assert page["ContentType"].startswith("text/html")  # a browser shows it, not a download

    assert data["live"] == {"model_version": V1, "since": "2026-11-02T12:00:00+00:00", "previous": V2}
    assert [(s["model_version"], s["from"], s["until"], s["how"]) for s in data["served"]] == [
        (V1, "2026-11-01T03:00:00+00:00", "2026-11-02T03:00:00+00:00", "deploy"),
        (V2, "2026-11-02T03:00:00+00:00", "2026-11-02T12:00:00+00:00", "deploy"),
        (V1, "2026-11-02T12:00:00+00:00", None, "rollback")]
    assert data["served"][-1]["by"] == "alice" and data["served"][-1]["reason"] == "odd recommendations"
    by = {v["model_version"]: v for v in data["versions"]}
    assert [v["model_version"] for v in data["versions"]] == [V1, V2, V3]
    assert [by[v]["status"] for v in (V1, V2, V3)] == ["live", "rollback target", "rejected by the gate"]
    assert [by[v]["users_written"] for v in (V1, V2, V3)] == [900, 910, None]
    assert [by[v]["published"] for v in (V1, V2, V3)] == [True, True, False]
    assert [by[v]["input"]["rows"] for v in (V1, V2, V3)] == [1000, 1100, 1150]
    assert by[V2]["holdout"] == {"rmse": 0.93, "ndcg@10": 0.12, "mae": 0.7}
    assert by[V2]["baselines"]["bias"] == {"rmse": 0.97} and by[V1]["run_type"] == "scheduled"
    assert by[V3]["gate"]["reasons"] == ["RMSE 1.2000 does not beat user+item biases (0.9700)"]
    assert by[V1]["report"] == f"s3://{bucket['bucket']}/models/{V1}/report.html"
    assert data["nights"][-1] == {"ds": "2026-11-04", "input": None, "quarantined_files": 1,
                                  "problems": ["bad.csv, line 3, column 'rating': not a number"]}
    assert [n["ds"] for n in data["nights"]] == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]


def test_live_pointer_closes_a_gap_in_the_history(bucket, boto):
    """A rollback made with the CLI writes no history record: the live pointer still says who serves."""
    s3 = boto("s3")
    key = layout.live_history_key("2026-11-02T12:00:00+00:00", V1)
    assert key == f"runs/live/20261102T120000000000Z-{V1}.json"
    s3.delete_object(Bucket=bucket["bucket"], Key=key)
    data = versions.collect(f"s3://{bucket['bucket']}", bucket["table"], now="2026-11-05T00:00:00+00:00")
    assert [(s["model_version"], s["until"]) for s in data["served"]] == [
        (V1, "2026-11-02T03:00:00+00:00"), (V2, "2026-11-02T12:00:00+00:00"), (V1, None)]


def test_an_empty_bucket_gives_an_empty_page(aws):
    data = versions.collect(f"s3://{aws['bucket']}", aws["table"])
    assert data["live"] is None and data["versions"] == [] and data["served"] == [] and data["nights"] == []
    assert "Nothing is live yet" in versions.render_html(data)


# -- the page in a real browser -------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        if os.environ.get("RECSYS_REQUIRE_CHROMIUM") == "1":
            pytest.fail("RECSYS_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install chromium, as root)")
        pytest.skip("no chromium on PATH (Debian package `chromium`; apt-get needs root): "
                    "RECSYS_REQUIRE_CHROMIUM=1 makes this a failure")
    # no network, no first-run work, a throw-away profile: the page must render from itself alone
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
                           "--hide-scrollbars", *args], capture_output=True, text=True, timeout=120)


def plot_pixels(png: Path) -> int:
    """Pixels in matplotlib's default line colours (tab:blue, tab:orange, tab:green): text,
    tables and borders are black and grey, so these come from the plots only."""
    from PIL import Image

    img = Image.open(png).convert("RGB")
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44)]
    return sum(n for n, rgb in img.getcolors(maxcolors=1 << 24)
               if any(sum(abs(a - b) for a, b in zip(rgb, c, strict=True)) < 30 for c in colours))


def test_the_page_renders_offline_with_its_plots(bucket, tmp_path):
    data = versions.collect(f"s3://{bucket['bucket']}", bucket["table"], now="2026-11-05T00:00:00+00:00")
    page = tmp_path / "index.html"
    page.write_text(versions.render_html(data))
    html = page.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html  # nothing to fetch

    dom = chromium("--dump-dom", page.as_uri(), tmp=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('<img class="plot"') == 3 and dom.stdout.count('src="data:image/png;base64,') == 3
    assert V3 in dom.stdout and "odd recommendations" in dom.stdout

    shot = tmp_path / "page.png"
    res = chromium(f"--screenshot={shot}", "--window-size=1300,2600", page.as_uri(), tmp=tmp_path)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    # The same page without its plots: the plot colours vanish (so they came from the images).
    bare = tmp_path / "bare.html"
    bare.write_text(html.replace('src="data:image/png;base64,', 'data-gone="'))
    bare_shot = tmp_path / "bare.png"
    chromium(f"--screenshot={bare_shot}", "--window-size=1300,2600", bare.as_uri(), tmp=tmp_path)
    with_plots, without = plot_pixels(shot), plot_pixels(bare_shot)
    assert without == 0 and with_plots > 5000, (with_plots, without)
