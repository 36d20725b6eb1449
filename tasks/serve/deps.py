"""Typed dependencies: the settings and the recommendations store (overridable in tests).

``DynamoReader`` is the only code that calls DynamoDB (blocking boto3, through
:mod:`tasks.table`). ``RecsTable`` puts the row cache and the concurrency bound in front of it
and is what the routes use; its reads run on worker threads, so the event loop keeps answering
cache hits while DynamoDB is slow.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Annotated, Any, Protocol

import anyio.to_thread
from fastapi import Depends, Request

from tasks import table
from tasks.constants import FALLBACK_USER
from tasks.serve.cache import MISS, Bulkhead, RowCache
from tasks.serve.config import Settings

log = logging.getLogger("tasks.serve")
STATS_LOG_SECONDS = 60.0


class Reader(Protocol):
    """Blocking reads of one table (what :class:`DynamoReader` does; tests stub it)."""

    def marker(self, version: str) -> dict | None: ...

    def items(self, version: str, user_id: str) -> list[dict] | None: ...


class DynamoReader:
    def __init__(self, name: str, client=None) -> None:
        self.name, self._client = name, client

    @functools.cached_property
    def client(self):
        if self._client is not None:
            return self._client
        from tasks import storage

        return storage.client("dynamodb", profile="serve")  # a tight budget: 503 in < 2 s

    def marker(self, version: str) -> dict | None:
        return table.get_marker(self.name, version, client=self.client)

    def items(self, version: str, user_id: str) -> list[dict] | None:
        return table.get_recommendations(self.name, version, user_id, client=self.client)


class RecsTable:
    """One model version's rows: cached by (version, user), read through a bounded number of
    DynamoDB slots; the completion marker is re-read every ``marker_ttl`` seconds."""

    def __init__(self, reader: Reader, version: str, *, marker_ttl: float = 30.0, cache_bytes: int = 0,
                 concurrency: int = 16, queue_seconds: float = 0.1) -> None:
        self.reader, self.version, self.marker_ttl = reader, version, marker_ttl
        self.cache = RowCache(cache_bytes)
        self.bulkhead = Bulkhead(concurrency, queue_seconds)
        self.backend_errors = 0
        self._marker: dict | None = None
        self._marker_at = -1e18
        self._marker_loading: asyncio.Future | None = None
        self._loading: dict[tuple[str, str], asyncio.Future] = {}
        self._stats_at = time.monotonic()

    @classmethod
    def from_settings(cls, settings: Settings, reader: Reader | None = None) -> RecsTable:
        return cls(reader or DynamoReader(settings.recsys_table), settings.model_version,
                   marker_ttl=settings.marker_ttl_seconds, cache_bytes=settings.recsys_serve_cache_bytes,
                   concurrency=settings.recsys_serve_ddb_concurrency,
                   queue_seconds=settings.recsys_serve_queue_seconds)

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self.bulkhead:
            try:
                return await anyio.to_thread.run_sync(fn, *args)
            except Exception:
                self.backend_errors += 1
                raise

    async def _once(self, loads: dict, key: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """One read per key at a time: concurrent requests for the same row share it."""
        fut = loads.get(key)
        if fut is None:
            fut = loads[key] = asyncio.ensure_future(self._read(fn, *args))
            fut.add_done_callback(lambda _: loads.pop(key, None))
        return await asyncio.shield(fut)

    async def marker(self) -> dict | None:
        """The version's completion marker, or None while it has none. Once seen, a failed
        re-read keeps it: a complete version stays complete, so a DynamoDB outage does not turn
        cache hits into 503s."""
        if time.monotonic() - self._marker_at <= self.marker_ttl:
            return self._marker
        if self._marker is not None and self._marker_loading is not None:
            return self._marker  # another request is re-reading it
        try:
            if self._marker_loading is None:
                self._marker_loading = asyncio.ensure_future(self._read(self.reader.marker, self.version))
                self._marker_loading.add_done_callback(lambda _: setattr(self, "_marker_loading", None))
            value = await asyncio.shield(self._marker_loading)
        except Exception as err:
            if self._marker is None:
                raise
            log.warning("completion marker of %s not re-read (%s: %s): still serving it",
                        self.version, type(err).__name__, err)
            return self._marker
        self._marker = value
        if value is not None:  # an incomplete version is asked again on the next request
            self._marker_at = time.monotonic()
        return value

    async def recommendations(self, user_id: str) -> list[dict] | None:
        """The user's ranked items, or None if the version has no row for them."""
        key = (self.version, user_id)
        items = self.cache.get(key)
        if items is MISS:
            items = await self._once(self._loading, key, self.reader.items, self.version, user_id)
            self.cache.put(key, items)
        self._log_stats()
        return items

    async def fallback(self) -> list[dict] | None:
        return await self.recommendations(FALLBACK_USER)

    def _log_stats(self) -> None:
        now = time.monotonic()
        if now - self._stats_at >= STATS_LOG_SECONDS:
            self._stats_at = now
            c = self.cache
            log.info("row cache: %d hits, %d misses (%.1f%% hit rate), %d rows, %.1f of %.1f MiB, %d evicted; "
                     "%d requests shed", c.hits, c.misses, 100 * c.hit_ratio, len(c), c.bytes / 2**20,
                     c.max_bytes / 2**20, c.evictions, self.bulkhead.shed)


# async: FastAPI runs a plain ``def`` dependency on a worker thread, a hop per request
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_table(request: Request) -> RecsTable:
    return request.app.state.table


SettingsDep = Annotated[Settings, Depends(get_settings)]
TableDep = Annotated[RecsTable, Depends(get_table)]
