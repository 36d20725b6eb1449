"""Typed dependencies: the settings and the recommendations store (overridable in tests).

``DynamoReader`` is the only code that calls DynamoDB (blocking boto3, through
:mod:`tasks.table`). ``RecsTable`` puts the row cache and the concurrency bound in front of it
and is what the routes use; its reads run on worker threads, so the event loop keeps answering
cache hits while DynamoDB is slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Protocol

import anyio.to_thread
from fastapi import Depends, Request

from tasks import table
from tasks.layout import FALLBACK_USER
from tasks.serve.cache import MISS, Bulkhead, DeadlineExceeded, RowCache
from tasks.serve.config import Settings

log = logging.getLogger("tasks.serve")
MARKER = object()  # the marker's key among the reads in flight
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
                 concurrency: int = 16, queue_seconds: float = 0.1, deadline: float = 1.5) -> None:
        self.reader, self.version, self.marker_ttl, self.deadline = reader, version, marker_ttl, deadline
        self.cache = RowCache(cache_bytes)
        self.bulkhead = Bulkhead(concurrency, queue_seconds)
        self.backend_errors = 0
        self._marker: dict | None = None
        self._marker_at = -1e18
        self._refresh: asyncio.Future | None = None
        self._loading: dict[Any, asyncio.Future] = {}  # (version, user) or MARKER
        self._stats_at = time.monotonic()

    @classmethod
    def from_settings(cls, settings: Settings, reader: Reader | None = None) -> RecsTable:
        return cls(reader or DynamoReader(settings.recsys_table), settings.model_version,
                   marker_ttl=settings.marker_ttl_seconds, cache_bytes=settings.recsys_serve_cache_bytes,
                   concurrency=settings.recsys_serve_ddb_concurrency,
                   queue_seconds=settings.recsys_serve_queue_seconds,
                   deadline=settings.recsys_serve_deadline_seconds)

    @contextlib.asynccontextmanager
    async def budget(self) -> AsyncIterator[None]:
        """A request's DynamoDB reads end within ``deadline`` seconds, answered or not. Only the
        request stops waiting: a shared read goes on (shielded) and keeps its slot until botocore
        returns."""
        try:
            async with asyncio.timeout(self.deadline):
                yield
        except TimeoutError:
            raise DeadlineExceeded(f"no answer within {self.deadline:g} s") from None

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self.bulkhead:
            try:
                return await anyio.to_thread.run_sync(fn, *args)
            except Exception:
                self.backend_errors += 1
                raise

    async def _once(self, key: Any, read: Callable[[], Awaitable[Any]]) -> Any:
        """One read per key at a time: concurrent requests for the same row share it, and a
        request that stops waiting (its deadline) leaves the read running for the others."""
        fut = self._loading.get(key)
        if fut is None or fut.get_loop().is_closed():  # (a closed loop: TestClient runs one per request)
            fut = self._loading[key] = asyncio.ensure_future(read())
            fut.add_done_callback(lambda f: (self._loading.pop(key, None), f.cancelled() or f.exception()))
        return await asyncio.shield(fut)

    async def _read_marker(self) -> dict | None:
        value = await self._read(self.reader.marker, self.version)
        self._marker = value
        if value is not None:
            self._marker_at = time.monotonic()
        return value

    async def _read_row(self, user_id: str) -> list[dict] | None:
        items = await self._read(self.reader.items, self.version, user_id)
        self.cache.put((self.version, user_id), items)  # even if every request waiting for it gave up
        return items

    async def marker(self) -> dict | None:
        """The version's completion marker, or None while it has none (then read again on the next
        request). Once seen, it is re-read in the background every ``marker_ttl`` seconds and a
        failed re-read keeps it: a complete version stays complete (the marker protocol), so a
        DynamoDB outage does not turn cache hits into 503s."""
        if self._marker is None:
            return await self._once(MARKER, self._read_marker)
        stale = time.monotonic() - self._marker_at > self.marker_ttl
        if stale and (self._refresh is None or self._refresh.done() or self._refresh.get_loop().is_closed()):
            self._refresh = asyncio.ensure_future(self._refresh_marker())
        return self._marker

    async def _refresh_marker(self) -> None:
        try:
            await self._once(MARKER, self._read_marker)
        except Exception as err:
            log.warning("completion marker of %s not re-read (%s: %s): still serving it",
                        self.version, type(err).__name__, err)

    async def recommendations(self, user_id: str) -> list[dict] | None:
        """The user's ranked items, or None if the version has no row for them."""
        key = (self.version, user_id)
        items = self.cache.get(key)
        if items is MISS:
            items = await self._once(key, functools.partial(self._read_row, user_id))
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
