"""The recommendations table: item encoding, a retrying parallel batch writer, reads.

Schema (docs/pipeline.md, "Contracts"): partition key ``user_id`` (S), sort key ``model_version`` (S),
``items``, ``generated_at``, ``expires_at`` (TTL, epoch seconds).

``items`` is one String attribute holding compact columnar JSON,
``{"item_id": [...], "score": [...], "title": [...]}`` in rank order. Chosen by
measurement (bench/score_bench.py, 6,040 users x top-10 on a local moto server):
a DynamoDB list of maps took 12.5 s to publish and 1,115 bytes per row (2 write
units), the compact string 3.6 s and 514 bytes (1 write unit); reads halve too. Two reserved
partition keys per version:
``__complete__`` (the completion marker) and ``__popular__`` (the fallback list).
Shared by ``tasks.score`` (writes), ``tasks.publish`` (verification, marker, TTL) and
``tasks.serve`` (reads). Names and key schema: :mod:`tasks.layout`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from tasks import storage
from tasks.constants import DYNAMODB_ITEM_LIMIT, MAX_ROW_BYTES
from tasks.errors import PermanentError
from tasks.layout import (
    ATTR_EXPIRES_AT,
    ATTR_GENERATED_AT,
    ATTR_ITEMS,
    ATTR_TOP_N,
    ATTR_USER,
    ATTR_USERS,
    ATTR_VERSION,
    FALLBACK_USER,
    MARKER_USER,
    marker_key,
)

log = logging.getLogger(__name__)
BATCH_SIZE = 25  # BatchWriteItem's limit
GET_BATCH_SIZE = 100  # BatchGetItem's limit


class UnwrittenItemsError(RuntimeError):
    """Items DynamoDB still refused after every retry."""

    def __init__(self, table: str, keys: list[tuple[str, str]]):
        self.keys = keys
        shown = ", ".join(f"{u}/{v}" for u, v in keys[:10])
        more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
        super().__init__(f"{len(keys)} item(s) not written to {table} after retries: {shown}{more}")


class RowTooLargeError(PermanentError):
    """A row over :data:`tasks.constants.MAX_ROW_BYTES`: DynamoDB would refuse it (400 KB), and
    would again on every retry."""


class RefusedWriteError(PermanentError):
    """DynamoDB refused a write as invalid (``ValidationException``): a retry sends the same."""


def item_bytes(item: dict) -> int:
    """An item's size as DynamoDB counts it: attribute names plus values, UTF-8 bytes (a number
    counted as its digits: an upper bound of DynamoDB's ~1 byte per 2 digits)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        ((kind, raw),) = value.items()
        size += len(raw.encode()) if kind in ("S", "N") else len(json.dumps(raw).encode())
    return size


def check_row_size(item: dict) -> dict:
    """``item``, or :class:`RowTooLargeError` naming its key, its size and the likely cause."""
    size = item_bytes(item)
    if size > MAX_ROW_BYTES:
        user, version = _key(item)
        raise RowTooLargeError(
            f"row {ATTR_USER}={user!r:.80}, {ATTR_VERSION}={version!r} is {size:,} bytes, over the pipeline's "
            f"{MAX_ROW_BYTES:,} (DynamoDB's item limit is {DYNAMODB_ITEM_LIMIT:,}): an item title or id is too "
            "long (the snapshot bounds titles to tasks.constants.MAX_TITLE_LENGTH characters; a snapshot "
            "written before that bound needs re-running), or top_n is above tasks.constants.MAX_TOP_N")
    return item


def encode_items(item_ids: Sequence[str], scores: Sequence[float], titles: Sequence[str]) -> dict:
    if not len(item_ids) == len(scores) == len(titles):
        raise ValueError(f"item_ids, scores and titles differ in length "
                         f"({len(item_ids)}, {len(scores)}, {len(titles)})")
    body = {"item_id": [str(i) for i in item_ids], "score": [round(float(x), 5) for x in scores],
            "title": [str(t) for t in titles]}
    return {"S": json.dumps(body, separators=(",", ":"), ensure_ascii=False)}


def decode_items(attr: dict) -> list[dict]:
    body = json.loads(attr["S"])
    return [{"item_id": i, "score": s, "title": t}
            for i, s, t in zip(body["item_id"], body["score"], body["title"], strict=True)]


def rec_item(user_id: str, version: str, items: dict, generated_at: str, expires_at: int) -> dict:
    """One recommendation row; :class:`RowTooLargeError` if it could not fit DynamoDB's item limit."""
    return check_row_size({ATTR_USER: {"S": user_id}, ATTR_VERSION: {"S": version}, ATTR_ITEMS: items,
                           ATTR_GENERATED_AT: {"S": generated_at}, ATTR_EXPIRES_AT: {"N": str(int(expires_at))}})


def _key(item: dict) -> tuple[str, str]:
    return item[ATTR_USER]["S"], item[ATTR_VERSION]["S"]


class CorruptRowError(ValueError):
    """A row the pipeline did not write (or wrote under another encoding): named by table and key."""

    def __init__(self, table: str, user_id: str, version: str, reason: str) -> None:
        super().__init__(f"corrupt row in {table}: {ATTR_USER}={user_id!r}, {ATTR_VERSION}={version!r}: {reason}")
        self.table, self.user_id, self.version = table, user_id, version


def backoff_delay(attempt: int, base: float = 0.05, cap: float = 5.0) -> float:
    """Capped exponential backoff with full jitter."""
    return random.uniform(0, min(cap, base * 2 ** attempt))


def write_batch(table: str, items: list[dict], *, client=None, max_attempts: int = 8,
                base_delay: float = 0.05, max_delay: float = 5.0, sleep=time.sleep) -> None:
    """One ``BatchWriteItem`` of <= 25 items, resending ``UnprocessedItems`` with
    capped exponential backoff and full jitter; raises :class:`UnwrittenItemsError`."""
    client = client or storage.client("dynamodb")
    pending = [{"PutRequest": {"Item": it}} for it in items]
    from botocore.exceptions import ClientError

    for attempt in range(max_attempts):
        try:
            resp = client.batch_write_item(RequestItems={table: pending})
        except ClientError as err:  # throttling and 5xx were retried by botocore; this is final
            if err.response.get("Error", {}).get("Code") != "ValidationException":
                raise
            keys = ", ".join(f"{u!r:.80}/{v}" for u, v in (_key(p["PutRequest"]["Item"]) for p in pending[:3]))
            raise RefusedWriteError(
                f"DynamoDB refused a batch write to {table} (rows {keys}{', ...' if len(pending) > 3 else ''}): "
                f"{err.response['Error'].get('Message', err)}; a retry would send the same rows") from None
        pending = resp.get("UnprocessedItems", {}).get(table, [])
        if not pending:
            return
        delay = backoff_delay(attempt, base_delay, max_delay)
        log.warning("%d unprocessed item(s), retry %d in %.2fs", len(pending), attempt + 1, delay)
        sleep(delay)
    raise UnwrittenItemsError(table, [_key(p["PutRequest"]["Item"]) for p in pending])


def write_items(table: str, items: Iterable[dict], *, workers: int = 8, client=None, **retry) -> int:
    """Write all items in parallel batches of 25; returns how many were written."""
    items = list(items)
    batches = [items[n:n + BATCH_SIZE] for n in range(0, len(items), BATCH_SIZE)]
    client = client or storage.client("dynamodb")
    failed: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(write_batch, table, b, client=client, **retry) for b in batches]
        for fut in futures:
            try:
                fut.result()
            except UnwrittenItemsError as err:
                failed.extend(err.keys)
    if failed:
        raise UnwrittenItemsError(table, failed)
    return len(items)


def existing_users(table: str, version: str, user_ids: Sequence[str], *, workers: int = 8,
                   client=None) -> set[str]:
    """Which of ``user_ids`` have a row for ``version`` (BatchGetItem, keys only)."""
    client = client or storage.client("dynamodb")

    def get(chunk: Sequence[str]) -> list[str]:
        keys = [{ATTR_USER: {"S": u}, ATTR_VERSION: {"S": version}} for u in chunk]
        found: list[str] = []
        request = {table: {"Keys": keys, "ProjectionExpression": ATTR_USER}}
        for attempt in range(10):
            resp = client.batch_get_item(RequestItems=request)
            found.extend(it[ATTR_USER]["S"] for it in resp["Responses"].get(table, []))
            request = resp.get("UnprocessedKeys") or {}
            if not request:
                return found
            time.sleep(backoff_delay(attempt))
        raise RuntimeError(f"BatchGetItem on {table} kept returning unprocessed keys")

    chunks = [user_ids[n:n + GET_BATCH_SIZE] for n in range(0, len(user_ids), GET_BATCH_SIZE)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return {u for part in pool.map(get, chunks) for u in part}


def put_marker(table: str, version: str, users: int, top_n: int, generated_at: str, expires_at: int,
               *, client=None) -> None:
    """Mark ``version`` complete. Conditional: a marker from a later publish (newer
    ``generated_at``, ISO-8601 UTC so strings order like times) is never overwritten
    by a slower, older retry; raises ``ConditionalCheckFailedException`` then."""
    client = client or storage.client("dynamodb")
    client.put_item(TableName=table, Item={
        ATTR_USER: {"S": MARKER_USER}, ATTR_VERSION: {"S": version}, ATTR_USERS: {"N": str(users)},
        ATTR_TOP_N: {"N": str(top_n)}, ATTR_GENERATED_AT: {"S": generated_at},
        ATTR_EXPIRES_AT: {"N": str(int(expires_at))}},
        ConditionExpression="attribute_not_exists(#u) OR #g <= :g",
        ExpressionAttributeNames={"#u": ATTR_USER, "#g": ATTR_GENERATED_AT},
        ExpressionAttributeValues={":g": {"S": generated_at}})


def get_marker(table: str, version: str, *, client=None) -> dict | None:
    client = client or storage.client("dynamodb")
    item = client.get_item(TableName=table, Key=marker_key(version),
                           ConsistentRead=True).get("Item")
    if not item:
        return None
    try:
        return {"users": int(item[ATTR_USERS]["N"]), "top_n": int(item[ATTR_TOP_N]["N"]),
                "generated_at": item[ATTR_GENERATED_AT]["S"], "expires_at": int(item[ATTR_EXPIRES_AT]["N"])}
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptRowError(table, MARKER_USER, version, f"{type(err).__name__}: {err}") from None


def extend_ttl(table_name: str, version: str, user_ids: Sequence[str], expires_at: int, *, workers: int = 8,
               client=None) -> int:
    """Set ``expires_at`` on every existing row of ``version`` (users + marker + fallback).

    Rows that do not exist (users without a row) are left absent, never created.
    """
    client = client or storage.client("dynamodb")
    keys = [*user_ids, MARKER_USER, FALLBACK_USER]

    def update(user: str) -> int:
        try:
            client.update_item(TableName=table_name, Key={ATTR_USER: {"S": user}, ATTR_VERSION: {"S": version}},
                               UpdateExpression="SET #e = :e", ConditionExpression="attribute_exists(#u)",
                               ExpressionAttributeNames={"#e": ATTR_EXPIRES_AT, "#u": ATTR_USER},
                               ExpressionAttributeValues={":e": {"N": str(int(expires_at))}})
        except client.exceptions.ConditionalCheckFailedException:
            return 0
        return 1

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return sum(pool.map(update, keys))


def get_recommendations(table: str, version: str, user_id: str, *, client=None) -> list[dict] | None:
    client = client or storage.client("dynamodb")
    item = client.get_item(TableName=table, Key={ATTR_USER: {"S": user_id}, ATTR_VERSION: {"S": version}},
                           ProjectionExpression="#items",  # "items" is a reserved word
                           ExpressionAttributeNames={"#items": ATTR_ITEMS}).get("Item")
    if item is None:
        return None
    try:
        items = decode_items(item[ATTR_ITEMS])
        for it in items:  # what the API promises: str, float, str
            if not (isinstance(it["item_id"], str) and isinstance(it["score"], int | float)
                    and isinstance(it["title"], str)):
                raise TypeError(f"unexpected item {it!r:.120}")
    except (KeyError, TypeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise CorruptRowError(table, user_id, version, f"{type(err).__name__}: {err}"[:300]) from None
    return items


__all__ = ["FALLBACK_USER", "MARKER_USER", "CorruptRowError", "RefusedWriteError", "RowTooLargeError",
           "UnwrittenItemsError", "check_row_size", "item_bytes", "decode_items", "encode_items",
           "existing_users", "get_marker", "get_recommendations", "put_marker", "rec_item",
           "write_batch", "write_items"]
