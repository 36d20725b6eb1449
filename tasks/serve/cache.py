"""The row cache and the DynamoDB concurrency bound, with the counters ``/metrics`` shows.

A model version's rows never change once its completion marker is written (the marker
protocol), so a row cached under (version, user) is valid for the life of the process: the cache
needs a size bound and nothing else. Absent rows are cached too (users the model does not know,
answered with the fallback list), so they cost DynamoDB one read per process, like the others.
"""

from __future__ import annotations

import asyncio
import sys
from collections import OrderedDict
from dataclasses import dataclass

ENTRY_OVERHEAD = 200  # bytes: the key tuple, the OrderedDict link, the size record


def row_bytes(key: tuple[str, str], items: list[dict] | None) -> int:
    """What one cached row holds in memory (CPython object sizes), so the bound is in real bytes."""
    size = ENTRY_OVERHEAD + sum(sys.getsizeof(k) for k in key)
    if items is not None:
        size += sys.getsizeof(items)
        for it in items:
            size += sys.getsizeof(it) + sum(sys.getsizeof(v) for v in it.values())
    return size


MISS = object()


class RowCache:
    """LRU of decoded rows keyed by (model version, user), bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._rows: OrderedDict[tuple[str, str], tuple[list[dict] | None, int]] = OrderedDict()
        self.bytes = self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: tuple[str, str]):
        """The cached row (``None``: the user has no row), or :data:`MISS`."""
        found = self._rows.get(key)
        if found is None:
            self.misses += 1
            return MISS
        self._rows.move_to_end(key)
        self.hits += 1
        return found[0]

    def put(self, key: tuple[str, str], items: list[dict] | None) -> None:
        size = row_bytes(key, items)
        if size > self.max_bytes:
            return  # also the max_bytes=0 case: caching off
        old = self._rows.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._rows[key] = (items, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._rows.popitem(last=False)
            self.bytes -= evicted
            self.evictions += 1

    @property
    def hit_ratio(self) -> float:
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else 0.0


class Overloaded(Exception):
    """Every DynamoDB slot stayed busy for the whole wait: the request is shed (503)."""


class DeadlineExceeded(Exception):
    """DynamoDB did not answer within the request's budget (503)."""


@dataclass
class Bulkhead:
    """At most ``limit`` DynamoDB reads in flight; a request that cannot get a slot within
    ``wait`` seconds raises :class:`Overloaded` instead of queueing behind a stalled backend."""

    limit: int
    wait: float

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.limit)
        self.in_flight = self.shed = 0

    async def __aenter__(self) -> None:
        if self._slots.locked() and self.wait <= 0:
            self.shed += 1
            raise Overloaded
        try:
            async with asyncio.timeout(self.wait):
                await self._slots.acquire()
        except TimeoutError:
            self.shed += 1
            raise Overloaded from None
        self.in_flight += 1

    async def __aexit__(self, *exc) -> None:
        self.in_flight -= 1
        self._slots.release()
