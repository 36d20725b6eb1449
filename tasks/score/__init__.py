"""Precompute top-N unseen items for every user of a shard and publish them.

``score_shard`` writes one row per user to DynamoDB (or Parquet with ``out``)
plus a shard manifest next to the model; ``finalize`` checks that every user of
the snapshot has a row for the version, writes the popularity fallback list and
then the completion marker. Serving refuses a version without its marker.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import numpy as np
import pandas as pd

from tasks import storage, table
from tasks.constants import FALLBACK_USER, ITEM_ID, ITEMS_FILE, META_FILE, RATINGS_FILE, TITLE, USER_ID
from tasks.live import refuse_protected

log = logging.getLogger(__name__)


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> ``(2, 8)``; shards are numbered from 0."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N, got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= I < N")
    return index, count


def eligible_users(user_ids: np.ndarray, min_ratings: int = 1) -> np.ndarray:
    """Sorted distinct users with at least ``min_ratings`` ratings; the others get the fallback list."""
    import pandas as pd

    counts = pd.Series(user_ids).value_counts(sort=False)  # distinct raw ids first: cheap at 25M
    users = counts.index.to_numpy()[counts.to_numpy() >= max(1, min_ratings)]
    users = users.astype(str)
    if len(np.unique(users)) != len(users):  # e.g. 1 and "1" in one object column
        return eligible_users(np.asarray(user_ids).astype(str), min_ratings)
    return np.sort(users)


def shard_users(user_ids: np.ndarray, index: int, count: int, min_ratings: int = 1) -> np.ndarray:
    """Users of one shard: every count-th of the sorted eligible ids (balanced, stable)."""
    return eligible_users(user_ids, min_ratings)[index::count]


def manifest_uri(model_uri: str, index: int, count: int) -> str:
    return storage.join(model_uri, "shards", f"{index:04d}-of-{count:04d}.json")


def load_inputs(ratings_uri: str) -> tuple[pd.DataFrame, dict[str, str]]:
    if ratings_uri.endswith(".parquet"):
        return storage.read_parquet(ratings_uri, [USER_ID, ITEM_ID]), {}
    ratings = storage.read_parquet(storage.join(ratings_uri, RATINGS_FILE), [USER_ID, ITEM_ID])
    titles: dict[str, str] = {}
    items_uri = storage.join(ratings_uri, ITEMS_FILE)
    if storage.exists(items_uri):
        items = storage.read_parquet(items_uri, [ITEM_ID, TITLE])
        titles = dict(zip(items[ITEM_ID].astype(str), items[TITLE].astype(str), strict=True))
    return ratings, titles


def expiry(days: int) -> int:
    return int(time.time() + days * 86400)


def score_shard(model_uri: str, ratings_uri: str, model_version: str, top_n: int,
                shard: tuple[int, int] = (0, 1), table_name: str | None = None, out: str | None = None,
                ttl_days: int = 30, chunk_size: int = 4096, min_ratings: int = 1,
                import_out: str | None = None) -> dict:
    from tasks.model import load, set_threads

    if top_n <= 0:
        raise ValueError(f"--top-n must be positive, got {top_n}")
    refuse_protected(model_uri, model_version, "write rows for")
    set_threads()
    t0 = time.perf_counter()
    rec = load(model_uri)
    ratings, titles = load_inputs(ratings_uri)
    user_col = ratings[USER_ID].to_numpy()
    rec.set_seen_from_ratings(user_col, ratings[ITEM_ID].to_numpy())
    users = shard_users(user_col, *shard, min_ratings=min_ratings)
    del ratings
    generated = dt.datetime.now(dt.timezone.utc).isoformat()
    exp = expiry(ttl_days)
    parquet_rows: list[dict] = []
    import_file = table.ImportFileWriter() if import_out else None
    t_score = 0.0
    # Score and write one chunk of users at a time: peak memory is set by
    # --chunk-size (the chunk's top-N lists), not by the shard size (the fused
    # kernel holds no score matrix).
    user_index = rec.user_index_of(users)
    item_ids = rec.item_ids.tolist()
    for start in range(0, len(users), chunk_size):
        chunk = users[start:start + chunk_size]
        t1 = time.perf_counter()
        top, scores = rec.recommend_index(user_index[start:start + chunk_size], top_n, exclude_seen=True)
        t_score += time.perf_counter() - t1
        # raw item ids; rows shorter than top_n (index -1) lose their padding
        lists = [[item_ids[t] for t in row if t >= 0] for row in top.tolist()]
        if out:
            parquet_rows.extend({"user_id": u, "model_version": model_version, "rank": r + 1, "item_id": it,
                                 "score": float(ss[r]), "title": titles.get(it, it)}
                                for u, its, ss in zip(chunk, lists, scores, strict=True)
                                for r, it in enumerate(its))
        if table_name or import_out:
            rows = (table.rec_item(u, model_version, table.encode_items(its, ss[:len(its)],
                                                                        [titles.get(i, i) for i in its]),
                                   generated, exp)
                    for u, its, ss in zip(chunk, lists, scores, strict=True))
            if import_file:
                import_file.write(rows)
            else:
                table.write_items(table_name, rows)
    if out:
        storage.write_parquet(storage.join(out, f"part-{shard[0]:04d}-of-{shard[1]:04d}.parquet"),
                              pd.DataFrame(parquet_rows))
    if import_file:  # one file per shard: a re-run overwrites it (idempotent)
        storage.write_bytes(storage.join(import_out, f"part-{shard[0]:04d}-of-{shard[1]:04d}{table.IMPORT_SUFFIX}"),
                            import_file.getvalue())
    result = {"model_version": model_version, "shard": f"{shard[0]}/{shard[1]}", "users": int(len(users)),
              "ratings_uri": ratings_uri, "min_ratings": min_ratings,
              "first_user": str(users[0]) if len(users) else None, "top_n": top_n, "score_seconds": round(t_score, 3),
              "total_seconds": round(time.perf_counter() - t0, 3), "generated_at": generated}
    storage.write_json(manifest_uri(model_uri, *shard), result)
    log.info("shard %s: %d users scored in %.2fs", result["shard"], len(users), t_score)
    return result


def popular_items(ratings: pd.DataFrame, n: int) -> tuple[list[str], list[float]]:
    """The n most-rated items and their rating counts; ties by id, so deterministic."""
    counts = ratings[ITEM_ID].astype(str).value_counts()
    order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [k for k, _ in order], [float(c) for _, c in order]


def finalize(model_uri: str, ratings_uri: str, model_version: str, top_n: int, shards: int,
             table_name: str, ttl_days: int = 30, min_ratings: int = 1, import_from: str | None = None) -> dict:
    """Verify every shard and every user, write the fallback list, then the marker.

    With ``import_from`` (the shards' ``--import-out`` prefix), ``table_name`` is
    first created by DynamoDB's import from S3 (it must be a new table: one per
    version); verification and marker are then the same as for batch writes, and
    once the marker is written the import files are deleted.
    """
    refuse_protected(model_uri, model_version, "finalize")
    missing, stale = [], []
    for i in range(shards):
        uri = manifest_uri(model_uri, i, shards)
        if not storage.exists(uri):
            missing.append(i)
            continue
        # a manifest from an earlier run of this version (another snapshot, n or threshold) is not this run's
        m = storage.read_json(uri)
        got = {k: m.get(k) for k in ("model_version", "ratings_uri", "top_n", "min_ratings")}
        want = {"model_version": model_version, "ratings_uri": ratings_uri, "top_n": top_n, "min_ratings": min_ratings}
        if got != want:
            stale.append(f"{i} ({', '.join(f'{k}={got[k]!r}, expected {want[k]!r}' for k in want if got[k] != want[k])})")
    if missing or stale:
        raise RuntimeError("; ".join(
            ([f"shards {missing} of {shards} have no manifest under {model_uri}/shards"] if missing else [])
            + ([f"shard manifests from another run: {'; '.join(stale)}"] if stale else []))
            + ": re-run those score tasks")
    if import_from:
        table.import_table(table_name, import_from)
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
    if import_from:  # imported and marked: the files are spent (a re-run finds the table and skips the import)
        log.info("deleted %d import file(s) below %s", storage.delete_prefix(import_from), import_from)
    return {"model_version": model_version, "users": int(len(expected)), "complete": True}


def retain(table_name: str, versions: dict[str, str], ttl_days: int, now: float | None = None,
           per_version: bool = False) -> dict:
    """Keep the given versions (``{model_version: model_uri}``, e.g. live and previous) from expiring.

    A version is refreshed only when its marker expires within half the TTL, so
    the extra writes happen about twice per TTL period, not every night. With
    ``per_version`` (the import path) version V lives in table ``{table_name}-V``,
    and per-version tables older than the TTL that are not kept are dropped.
    """
    now = time.time() if now is None else now
    out = {}
    for version, model_uri in versions.items():
        version_table = f"{table_name}-{version}" if per_version else table_name
        marker = table.get_marker(version_table, version) if table.table_exists(version_table) else None
        if marker is None:
            out[version] = "no marker: nothing to keep"
        elif marker["expires_at"] - now > ttl_days * 86400 / 2:
            out[version] = f"expires in {(marker['expires_at'] - now) / 86400:.1f} days: left as is"
        else:
            users = storage.read_json(storage.join(model_uri, META_FILE))["user_ids"]
            n = table.extend_ttl(version_table, version, users, int(now + ttl_days * 86400))
            out[version] = f"{n} rows extended by {ttl_days} days"
        log.info("retain %s: %s", version, out[version])
    if per_version:
        out["dropped"] = table.drop_version_tables(table_name, set(versions), now - ttl_days * 86400)
    return out

