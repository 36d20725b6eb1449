"""The versions page: every model version of the bucket, what served when, and why nights failed.

``collect`` reads only what the pipeline already writes (one pass over ``models/``,
``runs/``, ``datasets/`` and ``quarantine/``, one DynamoDB ``GetItem`` per version for its
completion marker) and returns plain JSON-able data; ``render_html`` turns it into one
self-contained page: plots drawn by matplotlib as PNG images embedded as ``data:`` URIs, no
script and nothing fetched, so it opens offline straight from S3 or a download. ``publish``
writes both next to each other (``versions/index.html``, ``versions/versions.json``).

Where the facts come from:

- live version and since when: ``models/_live.json`` (``deployed_at``); which version
  served when: ``runs/live/*.json``, one record per change of the live version (record_live,
  the rollback DAG), the live pointer itself when that history is empty or behind;
- holdout metrics against the baselines and the live model of the day: ``models/<v>/metrics.json``;
- gate verdicts: ``runs/ds=<ds>/<v>/gate.json``; users written: the version's completion
  marker in the table (``__complete__``), else its run summary;
- input rows: the snapshot manifest ``datasets/ds=<ds>/_manifest.json``; quarantined files
  and the reasons: ``quarantine/ds=<ds>/``.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import logging
import re
from typing import Any, cast

from tasks import layout, storage, table

log = logging.getLogger(__name__)

VERSION_RE = re.compile(r"^v(\d{4})(\d{2})(\d{2})T\d{6}([a-z])-[0-9a-f]+$")
RUN_TYPES = {"s": "scheduled", "m": "manual", "b": "backfill", "a": "asset-triggered"}
QUALITY = ("rmse", "mae", "ndcg@10", "precision@10", "recall@10", "coverage")
# what each plot compares the candidate with (baselines missing from a version are left out)
RMSE_BASELINES = ("global_mean", "bias", "svd")
NDCG_BASELINES = ("popularity", "ease")


def _ds_of_version(version: str) -> str | None:
    """The date in a version name (its run's logical date): only for versions with no run record."""
    m = VERSION_RE.match(version)
    return f"{m.group(1)}-{m.group(2)}-{m.group(3)}" if m else None


def _read(uri: str) -> Any:
    try:
        return storage.read_json(uri)
    except ValueError as err:  # a half-written or hand-edited record must not hide every other version
        log.warning("skipping %s: not JSON (%s)", uri, err)
        return None


def _children(root: str, prefix: str) -> dict[str, list[str]]:
    """{first path part below ``prefix``: [the rest of each key]} of every object below it."""
    base = storage.join(root, prefix) + "/"
    out: dict[str, list[str]] = {}
    for uri in storage.list_files(storage.join(root, prefix)):
        head, _, rest = uri[len(base):].partition("/")
        out.setdefault(head, []).append(rest)
    return out


def served_intervals(history: list[layout.LiveHistoryEntry], live: layout.LivePointer | None,
                     now: str) -> list[dict]:
    """Which version served from when until when (``until`` None: still serving), oldest first.

    ``history`` is the ``runs/live`` records in time order; the live pointer closes any gap (a
    rollback made with the CLI, or a bucket from before the history existed).
    """
    changes: list[Any] = [h for h in history if h.get("model_version") and h.get("deployed_at")]
    if live and live.get("model_version") and (
            not changes or changes[-1]["model_version"] != live["model_version"]
            or str(changes[-1]["deployed_at"]) < str(live.get("deployed_at") or "")):
        changes.append(live)
    changes.sort(key=lambda h: str(h["deployed_at"]))
    out = []
    for n, h in enumerate(changes):
        until = str(changes[n + 1]["deployed_at"]) if n + 1 < len(changes) else None
        how = "rollback" if (h.get("rollback") or (h.get("deployed") or {}).get("rollback_from")) else "deploy"
        entry = {"model_version": h["model_version"], "from": str(h["deployed_at"]), "until": until, "how": how}
        for key in ("reason", "by"):
            if (h.get("rollback") or {}).get(key):
                entry[key] = h["rollback"][key]
        out.append(entry)
    if out and now and out[-1]["until"] is None and out[-1]["from"] > now:
        log.warning("the live version's deployed_at %s is in the future of %s", out[-1]["from"], now)
    return out


def collect(root: str, table_name: str | None = None, now: str | None = None) -> dict:
    """Every version below ``root`` (``s3://bucket`` or a local folder) and every night's input."""
    now = now or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    live_uri = storage.join(root, layout.LIVE_POINTER)
    live: layout.LivePointer | None = _read(live_uri) if storage.exists(live_uri) else None
    rollback_target = live.get("previous") if live else None
    previous = rollback_target.get("model_version") if rollback_target else None

    models = _children(root, layout.MODELS)
    runs = _children(root, layout.RUNS)
    # runs/ds=<ds>/<version>/{summary,gate}.json -> the version's date and records
    records: dict[str, dict[str, Any]] = {}
    for part, rests in runs.items():
        if not part.startswith("ds="):
            continue
        for rest in rests:
            version, _, name = rest.partition("/")
            if name in (layout.SUMMARY_FILE, layout.GATE_FILE):
                rec = records.setdefault(version, {"ds": part[3:]})
                rec[name.split(".")[0]] = _read(storage.join(root, layout.RUNS, part, version, name))
    records_of_live = (_read(storage.join(root, layout.LIVE_HISTORY, name))
                       for name in sorted(runs.get(layout.LIVE_HISTORY.split("/", 1)[1], [])))
    history = cast(list[layout.LiveHistoryEntry], [r for r in records_of_live if isinstance(r, dict)])

    # per night: the snapshot's input and what was quarantined
    nights: dict[str, dict[str, Any]] = {}
    for part, rests in _children(root, layout.DATASETS).items():
        if part.startswith("ds=") and layout.MANIFEST_FILE in rests:
            m = _read(storage.join(root, layout.DATASETS, part, layout.MANIFEST_FILE)) or {}
            nights.setdefault(part[3:], {})["input"] = {k: m.get(k) for k in ("rows", "rows_read", "users", "items")}
    for part, rests in _children(root, layout.QUARANTINE).items():
        if part.startswith("ds="):
            why = layout.QUARANTINE_REASON
            reason = _read(storage.join(root, layout.QUARANTINE, part, why)) if why in rests else None
            nights.setdefault(part[3:], {})["quarantine"] = {
                "files": sorted(r for r in rests if r != why),
                "problems": list((reason or {}).get("problems", []))[:5]}

    versions = []
    for version, files in sorted(models.items()):
        if version.startswith("_") or not ({layout.METRICS_FILE, layout.ARTIFACT_MANIFEST} & set(files)):
            continue
        rec = records.get(version, {})
        ds = rec.get("ds") or _ds_of_version(version)
        metrics = (_read(storage.join(root, layout.model_key(version), layout.METRICS_FILE))
                   if layout.METRICS_FILE in files else None) or {}
        marker = table.get_marker(table_name, version) if table_name else None
        summary: layout.RunSummary | dict = rec.get("summary") or {}
        gate: layout.GateVerdict | None = rec.get("gate")
        m = VERSION_RE.match(version)
        complete = layout.ARTIFACT_MANIFEST in files
        if live and version == live.get("model_version"):
            status = "live"
        elif version == previous:
            status = "rollback target"
        elif gate is not None and not gate.get("promote", True):
            status = "rejected by the gate"
        elif not complete:
            status = "incomplete (train did not finish)"
        elif marker:
            status = "published"
        else:
            status = "not published"
        versions.append({
            "model_version": version, "ds": ds, "run_type": RUN_TYPES.get(m.group(4), "other") if m else None,
            "status": status, "complete": complete, "published": marker is not None,
            "users_written": marker["users"] if marker else summary.get("users_written"),
            "expires_at": dt.datetime.fromtimestamp(marker["expires_at"], dt.timezone.utc).isoformat()
            if marker and marker.get("expires_at") else None,
            "holdout": {k: metrics.get("candidate", {}).get(k) for k in QUALITY if k in metrics.get("candidate", {})},
            "holdout_size": metrics.get("holdout"),
            "baselines": {name: {k: v for k, v in vals.items() if k in QUALITY}
                          for name, vals in (metrics.get("baselines") or {}).items() if isinstance(vals, dict)},
            "champion": {k: v for k, v in (metrics.get("champion") or {}).items() if k in QUALITY or k == "uri"}
            or None,
            "gate": gate, "input": (nights.get(ds or "") or {}).get("input"),
            "quarantined_files": len(((nights.get(ds or "") or {}).get("quarantine") or {}).get("files", [])),
            "report": storage.join(root, layout.model_key(version), layout.REPORT_FILE)
            if layout.REPORT_FILE in files else None,
        })
    versions.sort(key=lambda v: (v["ds"] or "", v["model_version"]))
    return {
        "generated_at": now, "root": root, "table": table_name,
        "live": {"model_version": live.get("model_version"), "since": live.get("deployed_at"),
                 "previous": previous} if live else None,
        "served": served_intervals(history, live, now),
        "versions": versions,
        "nights": [{"ds": ds, "input": n.get("input"), "quarantined_files": len((n.get("quarantine") or {})
                                                                                  .get("files", [])),
                    "problems": (n.get("quarantine") or {}).get("problems", [])}
                   for ds, n in sorted(nights.items())],
    }


# -- plots ------------------------------------------------------------------------------------

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _label(v: dict) -> str:
    return f"{v['ds'] or '?'}\n{v['model_version'][-6:]}"


def plot_quality(versions: list[dict]) -> str | None:
    """Holdout RMSE and NDCG@10 of each version against the baselines of its own run."""
    rows = [v for v in versions if v["holdout"]]
    if not rows:
        return None
    import matplotlib.pyplot as plt

    fig, (ax_rmse, ax_ndcg) = plt.subplots(1, 2, figsize=(12, 4))
    x = list(range(len(rows)))
    for ax, metric, names in ((ax_rmse, "rmse", RMSE_BASELINES), (ax_ndcg, "ndcg@10", NDCG_BASELINES)):
        ax.plot(x, [v["holdout"].get(metric) for v in rows], "o-", lw=2, label="candidate", zorder=3)
        for name in names:
            ys = [(v["baselines"].get(name) or {}).get(metric) for v in rows]
            if any(y is not None for y in ys):
                ax.plot(x, [float("nan") if y is None else y for y in ys], "--", marker=".", label=name)
        champ = [(v["champion"] or {}).get(metric) for v in rows]
        if any(c is not None for c in champ):
            ax.plot(x, [float("nan") if c is None else c for c in champ], ":", marker="s", label="live model then")
        rejected = [n for n, v in enumerate(rows) if v["status"].startswith("rejected")]
        if rejected:
            ax.scatter(rejected, [rows[n]["holdout"].get(metric) for n in rejected], s=120, marker="x",
                       color="red", zorder=4, label="rejected by the gate")
        ax.set_title(f"holdout {metric.upper()} ({'lower' if metric == 'rmse' else 'higher'} is better)")
        ax.set_xticks(x, [_label(v) for v in rows], fontsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def plot_volume(versions: list[dict], nights: list[dict]) -> str | None:
    """Users written per version; input rows and quarantined files per night."""
    if not versions and not nights:
        return None
    import matplotlib.pyplot as plt

    fig, (ax_users, ax_input) = plt.subplots(1, 2, figsize=(12, 4))
    x = list(range(len(versions)))
    ax_users.bar(x, [v["users_written"] or 0 for v in versions], color="tab:blue")
    ax_users.set_xticks(x, [_label(v) for v in versions], fontsize=7)
    ax_users.set_title("users written per version")
    xn = list(range(len(nights)))
    ax_input.plot(xn, [(n["input"] or {}).get("rows") or float("nan") for n in nights], "o-", color="tab:green",
                  label="valid input rows")
    ax_input.set_ylabel("rows")
    ax_input.set_xticks(xn, [n["ds"] for n in nights], fontsize=7, rotation=30)
    ax_q = ax_input.twinx()
    ax_q.bar(xn, [n["quarantined_files"] for n in nights], color="tab:red", alpha=0.5, width=0.4,
             label="quarantined files")
    ax_q.set_ylabel("files")
    ax_input.set_title("input per night")
    lines = ax_input.get_legend_handles_labels()
    bars = ax_q.get_legend_handles_labels()
    ax_input.legend(lines[0] + bars[0], lines[1] + bars[1], fontsize=7)
    return _png(fig)


def plot_served(served: list[dict], now: str) -> str | None:
    """Which version served when: one bar per interval, one row per version."""
    if not served:
        return None
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    def when(s: str) -> dt.datetime:
        t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
        return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)

    order = list(dict.fromkeys(s["model_version"] for s in served))
    fig, ax = plt.subplots(figsize=(12, 0.6 * len(order) + 1.5))
    end_now = max(when(now), *(when(s["from"]) for s in served))
    for s in served:
        start, end = when(s["from"]), when(s["until"]) if s["until"] else end_now
        color = "tab:orange" if s["how"] == "rollback" else "tab:blue"
        ax.barh(order.index(s["model_version"]), mdates.date2num(end) - mdates.date2num(start),
                left=mdates.date2num(start), height=0.6, color=color)
    ax.set_yticks(range(len(order)), order, fontsize=8)
    ax.xaxis_date()
    ax.set_title("served (blue: deployed by a run, orange: rolled back to)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


# -- the page -----------------------------------------------------------------------------------

def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.4f}"
    return html.escape(str(x))


def _img(png: str | None, alt: str) -> str:
    if png is None:
        return f"<p>(nothing to plot yet: {html.escape(alt)})</p>"
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{png}">'


def render_html(data: dict) -> str:
    live = data["live"]
    head = (f"<p><b>Live:</b> {_fmt(live['model_version'])} since {_fmt(live['since'])}; rollback target "
            f"{_fmt(live['previous'])}.</p>" if live else "<p><b>Nothing is live yet.</b></p>")
    rows = []
    for v in reversed(data["versions"]):
        gate = v["gate"] or {}
        verdict = ("–" if not gate else ("promoted" + (" (forced)" if gate.get("forced") else ""))
                   if gate.get("promote") else "rejected: " + "; ".join(gate.get("reasons", [])))
        base = ", ".join(f"{n} {_fmt(b.get('rmse'))}/{_fmt(b.get('ndcg@10'))}" for n, b in v["baselines"].items())
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
            _fmt(v["model_version"]), _fmt(v["ds"]), _fmt(v["run_type"]), _fmt(v["status"]),
            _fmt(v["holdout"].get("rmse")), _fmt(v["holdout"].get("ndcg@10")), html.escape(base) or "–",
            _fmt(v["users_written"]), _fmt((v["input"] or {}).get("rows")), _fmt(v["quarantined_files"]),
            html.escape(verdict), _fmt(v["report"]))) + "</tr>")
    served = "".join(f"<tr><td>{_fmt(s['model_version'])}</td><td>{_fmt(s['from'])}</td>"
                     f"<td>{_fmt(s['until']) if s['until'] else 'now'}</td><td>{_fmt(s['how'])}</td>"
                     f"<td>{_fmt(s.get('by'))}</td><td>{_fmt(s.get('reason'))}</td></tr>"
                     for s in reversed(data["served"]))
    nights = "".join(f"<tr><td>{_fmt(n['ds'])}</td><td>{_fmt((n['input'] or {}).get('rows'))}</td>"
                     f"<td>{_fmt(n['quarantined_files'])}</td><td>{html.escape('; '.join(n['problems'])) or '–'}"
                     "</td></tr>" for n in reversed(data["nights"]))
    now = data["generated_at"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>recsys: model versions</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1300px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}} img.plot{{display:block;
max-width:100%;margin:1em 0}}</style></head><body>
<h1>Model versions</h1>
{head}
<p>Generated {_fmt(now)} from {_fmt(data['root'])} (table {_fmt(data['table'])}); the same data as JSON:
<code>versions.json</code> next to this page.</p>
<h2>Holdout quality</h2>
{_img(plot_quality(data['versions']), 'holdout RMSE and NDCG@10 per version against its baselines')}
<h2>Volume</h2>
{_img(plot_volume(data['versions'], data['nights']), 'users written per version, input per night')}
<h2>Served</h2>
{_img(plot_served(data['served'], now), 'which version served when')}
<table><tr><th>version</th><th>from</th><th>until</th><th>how</th><th>by</th><th>reason</th></tr>{served}</table>
<h2>Versions</h2>
<table><tr><th>version</th><th>ds</th><th>run</th><th>status</th><th>RMSE</th><th>NDCG@10</th>
<th>baselines RMSE/NDCG@10</th><th>users written</th><th>input rows</th><th>quarantined files</th>
<th>gate</th><th>report</th></tr>
{''.join(rows)}</table>
<h2>Nights</h2>
<table><tr><th>ds</th><th>input rows</th><th>quarantined files</th><th>why</th></tr>{nights}</table>
</body></html>
"""


def _write(uri: str, body: bytes, content_type: str) -> None:
    """With its Content-Type in S3: a browser (or a pre-signed URL) then shows the page, not a download."""
    if storage.is_s3(uri):
        bucket, key = storage.split_s3(uri)
        storage.client("s3").put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
    else:
        storage.write_bytes(uri, body)


def publish(root: str, table_name: str | None, out: str | None = None, now: str | None = None) -> dict:
    """Collect, render and write ``versions.json`` and ``index.html`` (below ``out``, default
    ``<root>/versions``); returns their URIs and the counts."""
    import json

    data = collect(root, table_name, now)
    out = out or storage.join(root, layout.VERSIONS_PAGE.rsplit("/", 1)[0])
    page, data_uri = storage.join(out, layout.VERSIONS_PAGE.rsplit("/", 1)[1]), \
        storage.join(out, layout.VERSIONS_DATA.rsplit("/", 1)[1])
    # the JSON first: the page says it is next to it
    _write(data_uri, json.dumps(data, indent=2, sort_keys=True, default=str).encode(), "application/json")
    _write(page, render_html(data).encode(), "text/html; charset=utf-8")
    log.info("versions page %s: %d versions, %d nights", page, len(data["versions"]), len(data["nights"]))
    return {"page": page, "data": data_uri, "versions": len(data["versions"]), "nights": len(data["nights"]),
            "live": (data["live"] or {}).get("model_version")}
