"""``report.html`` of a model version: metrics against baselines and champion, training curve.

Self-contained HTML (inline SVG, no JavaScript, no external assets) so it opens
straight from S3 or a browser download.
"""

from __future__ import annotations

import html

METRICS = ("rmse", "mae", "precision@10", "recall@10", "ndcg@10", "map@10", "coverage")
LOWER_IS_BETTER = {"rmse", "mae"}


def _curve(history: list[dict], width: int = 520, height: int = 220) -> str:
    nan = float("nan")
    series = {"train RMSE (current draw)": [h.get("train_rmse", nan) for h in history],
              "validation RMSE (posterior mean)": [h.get("val_rmse", nan) for h in history]}
    values = [v for vs in series.values() for v in vs if v == v]  # drop NaN
    if len(history) < 2 or not values:
        return "<p>(fewer than two iterations: no curve)</p>"
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    pad = 30

    def xy(n, v):
        x = pad + (width - 2 * pad) * n / (len(history) - 1)
        y = height - pad - (height - 2 * pad) * (v - lo) / span
        return f"{x:.1f},{y:.1f}"

    lines: list[str] = []
    for (name, vs), color in zip(series.items(), ("#1f77b4", "#d62728"), strict=True):
        pts = " ".join(xy(n, v) for n, v in enumerate(vs) if v == v)
        lines.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>'
                     f'<text x="{width - pad}" y="{pad + 14 * len(lines)}" fill="{color}" text-anchor="end" '
                     f'font-size="12">{html.escape(name)}</text>')
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="training curve">'
            f'<rect width="100%" height="100%" fill="white" stroke="#ccc"/>{"".join(lines)}'
            f'<text x="{pad}" y="{height - 8}" font-size="11">Gibbs sweep {history[0].get("sweep", 1)}..'
            f'{history[-1].get("sweep", len(history))}; RMSE {lo:.3f}..{hi:.3f}</text></svg>')


def render(model_version: str | None, metrics: dict) -> str:
    rows = {"candidate": metrics.get("candidate", {}), **metrics.get("baselines", {})}
    if metrics.get("champion"):
        rows["live model (champion)"] = metrics["champion"]
    notes = "".join(f"<li>{html.escape(name)}: {html.escape(values['skipped'])}</li>"
                    for name, values in rows.items() if "skipped" in values)
    head = "".join(f"<th>{html.escape(m)}</th>" for m in METRICS)
    body = []
    for name, values in rows.items():
        cells = []
        for m in METRICS:
            v = values.get(m)
            cand = rows["candidate"].get(m)
            better = (v is not None and cand is not None and name != "candidate"
                      and ((cand < v) if m in LOWER_IS_BETTER else (cand > v)))
            style = ' style="background:#e6f4e6"' if better else ""
            cells.append(f"<td{style}>{'' if v is None else f'{v:.4f}'}</td>")
        body.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    hold = metrics.get("holdout", {})
    fits = metrics.get("fits", {})
    shipped = fits.get("shipped", {})
    which = (f"These figures describe the configuration fitted without the holdout "
             f"({fits.get('estimate', {}).get('ratings', 0)} ratings); the artifact that is scored and served "
             f"is {html.escape(shipped.get('describes', ''))} ({shipped.get('ratings', 0)} ratings, "
             f"{shipped.get('seconds', 0):.1f} s)." if shipped else "")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>model {html.escape(str(model_version))}</title>
<style>body{{font-family:sans-serif;margin:2em}}
td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}}</style>
</head><body><h1>Model {html.escape(str(model_version))}</h1>
<p>Holdout: {hold.get('ratings', 0)} ratings of {hold.get('users', 0)} users (each user's latest ratings).
Fit time {metrics.get('fit_seconds', 0):.1f} s. Green: the candidate is better than that row.
The candidate's ranking metrics come from its ranking head ({metrics.get('ranking_head', {}).get('factors', 0)}
factors; 0 = ranked by predicted rating). {which}</p>
<table><tr><th></th>{head}</tr>{''.join(body)}</table>{f"<ul>{notes}</ul>" if notes else ""}
<h2>Training curve</h2>{_curve(metrics.get("history", []))}</body></html>"""
