"""Exact top-n items per user by dot product: one interface, two implementations.

    items = Items.from_vectors(item_vectors)               # (I, F), once per model
    indexes, scores = top_n(user_vectors, items, n, seen)  # (B, F) -> (B, n), (B, n)

Row ``r`` gets the ``n`` items with the highest ``user_vectors[r] . item_vectors[i]``,
best first; equal scores rank by the lower item index, ``-0.0`` ties with ``0.0``
(and is written as ``0.0``); NaN and ``-inf`` scores are never selected; items in
``seen`` are excluded; a row with fewer than ``n`` selectable items is padded with
index ``-1`` and score ``-inf``. The result is exact whatever the data.

Both implementations compute the scores with one float32 multiply-add per factor,
factor 0 first, and select with the same rule, so they agree bit for bit:

- ``reference`` (:mod:`.reference`): ``torch.mm`` into a cache-sized buffer, then a
  plain numba selection and a stable sort. Portable (any CPU numba and torch run on).
- ``fused`` (:mod:`.fused`): scoring, selection and ordering in registers, without
  writing the scores (hand-written LLVM vector IR; tested on x86-64), for
  ``n <= 128``: several times faster than the reference (``make bench-score`` prints both).

``RECSYS_SCORER`` = ``auto`` (default: ``fused`` on x86-64, else ``reference``),
``fused`` or ``reference``. Rows needing more than the fused kernel's 128 use the
reference whatever the choice.

Both take a first threshold per row from its exact mean and standard deviation
(from the items' mean and covariance, :func:`row_moments`: no score is read) where
about ``n + 2.5 sqrt(n)`` items would be above it if scores were normal; rows with
fewer than ``n`` items above it are rerun from a lower threshold, then from ``-inf``.
A wrong guess costs time, never exactness.
"""

from __future__ import annotations

import functools
import os
import platform
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from statistics import NormalDist
from typing import NamedTuple

import numpy as np
from numba import njit

ENV = "RECSYS_SCORER"
IMPLEMENTATIONS = ("fused", "reference")
PAD_ITEMS = 32  # item columns are padded with zeros to a multiple of this (the fused kernel's block)
MAX_ITEMS = 2**31 - PAD_ITEMS  # item indexes are int32 inside the kernels, padding included
GUESS_LOW = 3.0  # the second threshold aims at this many times n items above it (a heavy upper tail)
CHUNK = 256  # rows per kernel call (per thread at a time), unless chunk_size is given


@dataclass(frozen=True)
class Items:
    """Item vectors prepared once for :func:`top_n`.

    :param t: (F, I') float32, C-contiguous: the vectors as columns, I' = I padded with
        zero columns to a multiple of :data:`PAD_ITEMS` (padding is never selected).
    :param n: I, the number of real items.
    :param mean: (F,) float64, the mean item vector.
    :param cov: (F, F) float64, the item vectors' covariance (population).
    """

    t: np.ndarray
    n: int
    mean: np.ndarray
    cov: np.ndarray

    @classmethod
    def from_vectors(cls, vectors: np.ndarray) -> Items:
        """From (I, F) item vectors (any float dtype)."""
        vectors = np.asarray(vectors)
        n, f = vectors.shape
        if n >= MAX_ITEMS:
            raise ValueError(f"at most {MAX_ITEMS - 1} items can be ranked, got {n}")
        t = np.zeros((f, max(PAD_ITEMS, -(-n // PAD_ITEMS) * PAD_ITEMS)), dtype=np.float32)
        t[:, :n] = vectors.T
        exact = vectors.astype(np.float64)
        mean = exact.mean(0) if n else np.zeros(f)
        centered = exact - mean
        return cls(t, n, mean, centered.T @ centered / max(1, n))


class Seen(NamedTuple):
    """Items to exclude, as CSR rows.

    :param rows: (B,) int64: the CSR row of each query row (``-1``: exclude nothing).
    :param indptr: (R + 1,) int64.
    :param indices: item indexes, each below the number of items, ascending within a row.
    """

    rows: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray


def choose(name: str | None = None) -> str:
    """The implementation to use: ``name``, else ``$RECSYS_SCORER``, where ``auto`` (the
    default) is ``fused`` on x86-64 and ``reference`` elsewhere."""
    name = (name or os.environ.get(ENV) or "auto").strip().lower()
    if name == "auto":
        return "fused" if platform.machine().lower() in ("x86_64", "amd64") else "reference"
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"{ENV}={name!r}: expected auto, {' or '.join(IMPLEMENTATIONS)}")
    return name


def _kernel(name: str, k: int):
    if name == "fused":
        from tasks.model.scoring import fused

        if k <= fused.MAX_K:
            return fused.select
    from tasks.model.scoring import reference

    return reference.select


def top_n(user_vectors: np.ndarray, items: Items, n: int, seen: Seen | None = None, *,
          chunk_size: int | None = None, threads: int = 1,
          implementation: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact top ``n`` items of each row (module docstring): item indexes (B, n) int64
    and scores (B, n) float32.

    :param user_vectors: (B, F) float32 (converted if not).
    :param items: the prepared items (:meth:`Items.from_vectors`).
    :param n: items per row, positive; rows are padded past the number of items.
    :param seen: items to exclude per row, or None.
    :param chunk_size: rows per kernel call (default :data:`CHUNK`).
    :param threads: Python threads taking chunks in turn (the kernels release the GIL).
    :param implementation: ``fused``, ``reference`` or ``auto`` (default: ``$RECSYS_SCORER``).
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    chunk_size = chunk_size or CHUNK
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    vectors = np.ascontiguousarray(user_vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != items.t.shape[0]:
        raise ValueError(f"user vectors must have shape (B, {items.t.shape[0]}), got {vectors.shape}")
    b = len(vectors)
    if seen is None:
        seen = Seen(np.full(b, -1, dtype=np.int64), np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64))
    rows = np.ascontiguousarray(seen.rows, dtype=np.int64)
    k = min(n, items.n)
    top_s = np.full((b, n), -np.inf, dtype=np.float32)
    top_i = np.full((b, n), -1, dtype=np.int64)
    if k == 0 or b == 0:
        return top_i, top_s
    select = _kernel(choose(implementation), k)
    moments = row_moments(vectors, items.mean, items.cov)
    first = 1.0 + 2.5 / k ** 0.5  # with exact moments the count above is close to Poisson
    z = _guess_z(k, items.n, first)
    guesses = [z, _guess_z(k, items.n, max(GUESS_LOW, 2 * first)) if z > -np.inf else -np.inf, -np.inf]
    out_s, out_i = top_s[:, :k], top_i[:, :k]
    todo = np.arange(b)
    for guess in dict.fromkeys(guesses):  # distinct guesses, in order
        if not len(todo):
            break
        thr = (moments[todo, 0] + guess * moments[todo, 1]).astype(np.float32) if guess > -np.inf \
            else np.full(len(todo), -np.inf, dtype=np.float32)
        whole = len(todo) == b
        vec, sel = (vectors, rows) if whole else (vectors[todo], rows[todo])
        got_s = np.empty((len(todo), k), np.float32)
        got_i = np.empty((len(todo), k), np.int64)
        short = np.zeros(len(todo), dtype=np.bool_)

        def run(start: int, vec=vec, sel=sel, thr=thr, got_s=got_s, got_i=got_i, short=short) -> None:
            end = start + chunk_size
            select(vec[start:end], items.t, items.n, sel[start:end], seen.indptr, seen.indices, k,
                   thr[start:end], got_s[start:end], got_i[start:end], short[start:end])

        _parallel(run, range(0, len(todo), chunk_size), threads)
        done = ~short
        out_s[todo[done]] = got_s[done]
        out_i[todo[done]] = got_i[done]
        todo = todo[short]
    return top_i, top_s


@functools.lru_cache(maxsize=64)
def _guess_z(k: int, n: int, times: float) -> float:
    """If scores were normal, z standard deviations above the mean would leave about
    ``times * k`` of ``n`` items above the threshold (``-inf``: no useful guess)."""
    return NormalDist().inv_cdf(1 - times * k / n) if times * k < n else -np.inf


@njit(cache=True, boundscheck=False, nogil=True, fastmath=True)
def row_moments(vectors, item_mean, item_cov):
    """Mean and standard deviation of each row's scores over all items, (B, 2) float64, from
    the item vectors' mean (F,) and covariance (F, F): ``v . mean`` and ``sqrt(v' C v)``."""
    n_rows, n_factors = vectors.shape
    out = np.empty((n_rows, 2))
    v = np.empty(n_factors)
    for r in range(n_rows):
        for f in range(n_factors):
            v[f] = vectors[r, f]
        mean = 0.0
        var = 0.0
        for f in range(n_factors):
            mean += v[f] * item_mean[f]
            s = 0.0
            for g in range(n_factors):
                s += item_cov[f, g] * v[g]
            var += v[f] * s
        out[r, 0] = mean
        out[r, 1] = np.sqrt(max(var, 0.0))
    return out


def _parallel(fn, starts, threads: int) -> None:
    """``fn(start)`` for every start, on ``threads`` threads that each take the next start."""
    if threads <= 1 or len(starts) <= 1:
        for start in starts:
            fn(start)
        return
    pending = iter(starts)
    take = threading.Lock()

    def worker() -> None:
        while True:
            with take:
                start = next(pending, None)
            if start is None:
                return
            fn(start)

    with ThreadPoolExecutor(min(threads, len(starts))) as pool:
        for done in [pool.submit(worker) for _ in range(min(threads, len(starts)))]:
            done.result()


def warm_up() -> None:
    """Compile every kernel into numba's on-disk cache (run at image build)."""
    items = Items.from_vectors(np.ones((40, 3), dtype=np.float32))
    for name in IMPLEMENTATIONS:
        top_n(np.ones((5, 3), dtype=np.float32), items, 2, implementation=name)
    if choose() == "fused":
        from tasks.model.scoring import fused

        fused.warm_up()
