"""Precompute top-N unseen items for every user of a shard.

``score_shard`` writes one row per user to DynamoDB (or Parquet with ``out``)
plus a shard manifest next to the model. :mod:`tasks.publish` then checks that
every user has a row, writes the fallback list and the completion marker.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import pandas as pd

from tasks import layout, storage, table
from tasks.constants import ITEM_ID, USER_ID
from tasks.live import refuse_protected
from tasks.shards import expiry, load_inputs, manifest_uri, shard_users

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












def score_shard(model_uri: str, ratings_uri: str, model_version: str, top_n: int,
                shard: tuple[int, int] = (0, 1), table_name: str | None = None, out: str | None = None,
                ttl_days: int = 30, chunk_size: int = 4096, min_ratings: int = 1) -> layout.ShardManifest:
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
    t_score = 0.0
    # Score and write one chunk of users at a time: peak memory is set by
    # --chunk-size (the chunk's top-N lists), not by the shard size.
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
        if table_name:
            table.write_items(table_name, (
                table.rec_item(u, model_version,
                               table.encode_items(its, ss[:len(its)], [titles.get(i, i) for i in its]), generated, exp)
                for u, its, ss in zip(chunk, lists, scores, strict=True)))
    if out:
        storage.write_parquet(storage.join(out, f"part-{shard[0]:04d}-of-{shard[1]:04d}.parquet"),
                              pd.DataFrame(parquet_rows))
    result: layout.ShardManifest = {
        "model_version": model_version, "shard": f"{shard[0]}/{shard[1]}", "users": int(len(users)),
        "ratings_uri": ratings_uri, "min_ratings": min_ratings, "first_user": str(users[0]) if len(users) else None,
        "top_n": top_n, "score_seconds": round(t_score, 3), "total_seconds": round(time.perf_counter() - t0, 3),
        "generated_at": generated}
    storage.write_json(manifest_uri(model_uri, *shard), result)
    log.info("shard %s: %d users scored in %.2fs", result["shard"], len(users), t_score)
    return result
