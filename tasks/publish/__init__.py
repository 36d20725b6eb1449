"""Publishing a scored version: verify, fall back, mark; keep the served versions alive.

``finalize`` checks that every shard of this run wrote its manifest and every
eligible user of the snapshot has a row for the version, writes the popularity
fallback list (``__popular__``) and then the completion marker (``__complete__``):
serving refuses a version without it. ``retain`` keeps the live and previous
versions' rows from expiring (DynamoDB TTL).
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import pandas as pd

from tasks import storage, table
from tasks.constants import ITEM_ID, USER_ID
from tasks.layout import FALLBACK_USER, META_FILE, ShardManifest
from tasks.live import refuse_protected
from tasks.shards import eligible_users, expiry, load_inputs, manifest_uri

log = logging.getLogger(__name__)


def popular_items(ratings: pd.DataFrame, n: int) -> tuple[list[str], list[float]]:
    """The n most-rated items and their rating counts; ties by id, so deterministic."""
    counts = ratings[ITEM_ID].astype(str).value_counts()
    order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [k for k, _ in order], [float(c) for _, c in order]


def finalize(model_uri: str, ratings_uri: str, model_version: str, top_n: int, shards: int,
             table_name: str, ttl_days: int = 30, min_ratings: int = 1) -> dict:
    """Verify every shard and every user, write the fallback list, then the marker."""
    refuse_protected(model_uri, model_version, "finalize")
    missing, stale = [], []
    for i in range(shards):
        uri = manifest_uri(model_uri, i, shards)
        if not storage.exists(uri):
            missing.append(i)
            continue
        # a manifest from an earlier run of this version (another snapshot, n or threshold) is not this run's
        m: ShardManifest = storage.read_json(uri)
        got = {"model_version": m.get("model_version"), "ratings_uri": m.get("ratings_uri"), "top_n": m.get("top_n"),
               "min_ratings": m.get("min_ratings")}
        want = {"model_version": model_version, "ratings_uri": ratings_uri, "top_n": top_n, "min_ratings": min_ratings}
        if got != want:
            diff = ", ".join(f"{k}={got[k]!r}, expected {want[k]!r}" for k in want if got[k] != want[k])
            stale.append(f"{i} ({diff})")
    if missing or stale:
        raise RuntimeError("; ".join(
            ([f"shards {missing} of {shards} have no manifest under {model_uri}/shards"] if missing else [])
            + ([f"shard manifests from another run: {'; '.join(stale)}"] if stale else []))
            + ": re-run those score tasks")
    ratings, titles = load_inputs(ratings_uri)
    expected = eligible_users(ratings[USER_ID].to_numpy(), min_ratings)
    found = table.existing_users(table_name, model_version, list(expected))
    absent = sorted(set(expected) - found)
    if absent:
        raise RuntimeError(f"{len(absent)} of {len(expected)} users have no row for {model_version} in "
                           f"{table_name} (e.g. {', '.join(str(u) for u in absent[:5])}); the version stays invisible")
    popular, scores = popular_items(ratings, top_n)
    generated = dt.datetime.now(dt.timezone.utc).isoformat()
    exp = expiry(ttl_days)
    table.write_items(table_name, [table.rec_item(FALLBACK_USER, model_version,
                                                  table.encode_items(popular, scores,
                                                                     [titles.get(i, i) for i in popular]),
                                                  generated, exp)])
    table.put_marker(table_name, model_version, len(expected), top_n, generated, exp)
    log.info("version %s complete: %d users", model_version, len(expected))
    return {"model_version": model_version, "users": int(len(expected)), "complete": True}


def retain(table_name: str, versions: dict[str, str], ttl_days: int, now: float | None = None) -> dict:
    """Keep the given versions (``{model_version: model_uri}``, e.g. live and previous) from expiring.

    A version is refreshed only when its marker expires within half the TTL, so
    the extra writes happen about twice per TTL period, not every night.
    """
    now = time.time() if now is None else now
    out = {}
    for version, model_uri in versions.items():
        marker = table.get_marker(table_name, version)
        if marker is None:
            out[version] = "no marker: nothing to keep"
        elif marker["expires_at"] - now > ttl_days * 86400 / 2:
            out[version] = f"expires in {(marker['expires_at'] - now) / 86400:.1f} days: left as is"
        else:
            users = storage.read_json(storage.join(model_uri, META_FILE))["user_ids"]
            n = table.extend_ttl(table_name, version, users, int(now + ttl_days * 86400))
            out[version] = f"{n} rows extended by {ttl_days} days"
        log.info("retain %s: %s", version, out[version])
    return out

