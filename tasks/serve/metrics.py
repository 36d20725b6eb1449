"""``GET /metrics`` in Prometheus' text exposition format (version 0.0.4), written by hand: the
serving image carries no client library for a dozen numbers.

Every sample is this process's own (one uvicorn worker per container); Prometheus adds the
instance label when it scrapes. Hit rate over a window: ``rate(recsys_cache_hits_total[5m]) /
(rate(recsys_cache_hits_total[5m]) + rate(recsys_cache_misses_total[5m]))``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.serve.deps import RecsTable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(table: RecsTable) -> str:
    c, b = table.cache, table.bulkhead
    version = f'{{model_version="{_label(table.version)}"}}'
    samples = [
        ("recsys_model_version_info", "gauge", "the model version this replica serves", version, 1),
        ("recsys_cache_hits_total", "counter", "row lookups answered from the in-process cache", "", c.hits),
        ("recsys_cache_misses_total", "counter", "row lookups that read DynamoDB", "", c.misses),
        ("recsys_cache_hit_ratio", "gauge", "hits / lookups since the process started", "", c.hit_ratio),
        ("recsys_cache_rows", "gauge", "rows in the cache", "", len(c)),
        ("recsys_cache_bytes", "gauge", "bytes the cached rows hold", "", c.bytes),
        ("recsys_cache_max_bytes", "gauge", "the cache's bound (RECSYS_SERVE_CACHE_BYTES)", "", c.max_bytes),
        ("recsys_cache_evictions_total", "counter", "rows evicted to stay within the bound", "", c.evictions),
        ("recsys_dynamodb_in_flight", "gauge", "DynamoDB reads in flight", "", b.in_flight),
        ("recsys_dynamodb_concurrency_limit", "gauge", "DynamoDB reads in flight at most "
         "(RECSYS_SERVE_DDB_CONCURRENCY)", "", b.limit),
        ("recsys_dynamodb_errors_total", "counter", "DynamoDB reads that failed (each answered 503 or 500)", "",
         table.backend_errors),
        ("recsys_requests_shed_total", "counter", "requests answered 503 at once: no DynamoDB slot free", "",
         b.shed),
    ]
    lines = []
    for name, kind, doc, labels, value in samples:
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}", f"{name}{labels} {float(value)!r}"]
    return "\n".join(lines) + "\n"
