"""Exact top-k per row with seen-item masking, compiled with numba.

``torch.topk`` costs about 2-6 ns per score on this machine's CPUs: at MovieLens-25M
scale (162k users x 59k items) about 4x the matrix multiply that produced the
scores (bench/score_bench.py). This kernel passes over each score once, plus a
1-in-16 sample:

- a *reservoir* per row keeps every item that beats a running threshold. When
  it holds ``2k`` entries, a quickselect keeps the best ``k`` and the threshold
  rises to the k-th best score, so after the first few hundred items almost
  nothing enters;
- the first threshold is a guess from the mean and standard deviation of a
  sample of the row (where about 1.5k items would be above it if scores were
  normal; a wrong guess costs time, never exactness: fewer than k items above
  it trigger a second scan from -inf);
- the threshold test runs on blocks of 64 scores at a time, as eight 8-wide
  running maxima the compiler turns into SIMD instructions; only a block whose
  maximum beats the threshold is looked at item by item;
- entries are 64-bit keys, ``(score descending, item index ascending)``, so one
  integer sort gives the exact, deterministic order: equal scores rank by lower
  item index.

Items masked as seen are set to ``-inf`` in the scratch score matrix and never
enter. Rows with fewer than ``k`` eligible items are padded with index ``-1``
and score ``-inf``. NaN scores never enter (they compare false).

Tested against a brute-force ``np.lexsort`` reference in ``tests/test_model.py``.
"""

from __future__ import annotations

import functools
from statistics import NormalDist

import numpy as np
from numba import njit, prange

BLOCK = 64  # scores tested per vectorised threshold check (8 lanes x 8)
STRIDE = 16  # the first threshold's mean and std come from every 16th score
_LOW = np.uint64(0xFFFFFFFF)
_SIGN = np.uint64(0x80000000)
_SHIFT31 = np.uint64(31)
_SHIFT32 = np.uint64(32)


@njit(inline="always", boundscheck=False)
def _select(a, n, k):
    """Rearrange ``a[:n]`` so its ``k`` smallest keys are in ``a[:k]`` (Hoare quickselect)."""
    left, right = 0, n - 1
    target = k - 1
    while right > left:
        mid = (left + right) >> 1
        if a[mid] < a[left]:
            a[mid], a[left] = a[left], a[mid]
        if a[right] < a[left]:
            a[right], a[left] = a[left], a[right]
        if a[right] < a[mid]:
            a[right], a[mid] = a[mid], a[right]
        pivot = a[mid]
        i, j = left, right
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if target <= j:
            right = j
        elif target >= i:
            left = i
        else:
            break


@njit(inline="always", boundscheck=False)
def _key(bits, t):
    """Sort key: ascending key == descending score, then ascending item index ``t``."""
    x = np.uint64(bits)
    x = x ^ _LOW if x >> _SHIFT31 else x ^ _SIGN  # order-preserving map of the float's bits
    return ((_LOW - x) << _SHIFT32) | np.uint64(t)


@njit(fastmath=True, cache=True, boundscheck=False)
def _moments(row):
    """Mean and standard deviation of a sample of a row (every STRIDE-th score)."""
    s = 0.0
    ss = 0.0
    m = 0
    for t in range(0, row.shape[0], STRIDE):
        v = np.float64(row[t])
        s += v
        ss += v * v
        m += 1
    mean = s / m
    return mean, np.sqrt(max(ss / m - mean * mean, 0.0))


@njit(inline="always", boundscheck=False)
def _block_max(row, base):
    """Largest of ``row[base:base + 64]``, ignoring NaN, in 8 independent lanes (SIMD max)."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = np.float32(-np.inf)
    for q in range(base, base + BLOCK, 8):
        v = row[q]
        m0 = v if v > m0 else m0
        v = row[q + 1]
        m1 = v if v > m1 else m1
        v = row[q + 2]
        m2 = v if v > m2 else m2
        v = row[q + 3]
        m3 = v if v > m3 else m3
        v = row[q + 4]
        m4 = v if v > m4 else m4
        v = row[q + 5]
        m5 = v if v > m5 else m5
        v = row[q + 6]
        m6 = v if v > m6 else m6
        v = row[q + 7]
        m7 = v if v > m7 else m7
    return max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))


@njit(inline="always", boundscheck=False)
def _scan(row, bits, thr, res, cap, k):
    """Insert every item scoring above ``thr`` (rising as the reservoir fills); returns the count."""
    n = row.shape[0]
    full = n - n % BLOCK
    c = 0
    for j in range(0, n, BLOCK):
        hi = min(j + BLOCK, n)
        if j < full and not _block_max(row, j) > thr:  # vectorised: nothing in the block enters
            continue
        for t in range(j, hi):
            if row[t] > thr:
                res[c] = _key(bits[t], t)
                c += 1
                if c == cap and cap > k:  # (k >= n: every item fits, never full)
                    _select(res, c, k)
                    c = k
                    worst = res[0]
                    for q in range(1, k):
                        if res[q] > worst:
                            worst = res[q]
                    thr = row[np.int64(worst & _LOW)]
    return c


def _topk_rows(scores, rows, indptr, indices, k, out_scores, out_index, groups, z):
    """Top-``k`` of each row of ``scores`` (float32, C-contiguous, overwritten).

    ``rows[r]`` is the user whose seen items ``indices[indptr[u]:indptr[u + 1]]``
    are excluded from row ``r`` (``-1``: exclude nothing). Writes ``out_scores``
    and ``out_index`` of shape ``(len(scores), k)``, best first.
    """
    n_rows, n = scores.shape
    cap = min(2 * k, n)
    step = (n_rows + groups - 1) // groups
    bits_all = scores.view(np.uint32)
    for g in prange(groups):
        res = np.empty(max(cap, 1), dtype=np.uint64)
        for r in range(g * step, min(n_rows, (g + 1) * step)):
            row = scores[r]
            bits = bits_all[r]
            if z > -np.inf:  # a first threshold near the score of the (1.5k)-th item
                mean, std = _moments(row)
                thr = np.float32(mean + z * std)
            else:
                thr = np.float32(-np.inf)
            u = rows[r]
            if u >= 0:
                for p in range(indptr[u], indptr[u + 1]):
                    row[indices[p]] = -np.inf
            c = _scan(row, bits, thr, res, cap, k)
            if c < k and z > -np.inf:  # fewer than k items above the guess (too high, or NaN)
                c = _scan(row, bits, np.float32(-np.inf), res, cap, k)
            if c > k:
                _select(res, c, k)
                c = k
            res[:c].sort()
            m = min(k, c)
            for q in range(m):
                t = np.int64(res[q] & _LOW)
                out_scores[r, q] = row[t]
                out_index[r, q] = t
            for q in range(m, k):
                out_scores[r, q] = -np.inf
                out_index[r, q] = -1


topk_rows = njit(parallel=True, cache=True, boundscheck=False, nogil=True)(_topk_rows)
# one thread, safe to call from several Python threads at once (numba's parallel pool is not)
topk_rows_serial = njit(cache=True, boundscheck=False, nogil=True)(_topk_rows)


@functools.lru_cache(maxsize=64)
def _first_guess_z(k: int, n: int) -> float:
    """If scores were normal, z standard deviations above the mean would leave about 1.5k of
    n items above the first threshold. Only a guess: more items above it cost time, fewer than
    k trigger a second scan from -inf; the result is exact either way."""
    return NormalDist().inv_cdf(1 - 1.5 * k / n) if 1.5 * k < n else -np.inf


def topk(scores: np.ndarray, k: int, rows: np.ndarray | None = None, indptr: np.ndarray | None = None,
         indices: np.ndarray | None = None, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` per row; ``scores`` is used as scratch space (seen items set to -inf).

    ``threads=1`` runs on the calling thread and releases the GIL, so Python
    threads may call it concurrently; more threads use numba's parallel pool.
    """
    if scores.dtype != np.float32 or not scores.flags.c_contiguous:
        raise ValueError("scores must be a C-contiguous float32 matrix")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    n_rows = scores.shape[0]
    if rows is None:
        rows = np.full(n_rows, -1, dtype=np.int64)
        indptr = np.zeros(1, dtype=np.int64)
        indices = np.zeros(0, dtype=np.int64)
    z = _first_guess_z(k, scores.shape[1])
    out_s = np.empty((n_rows, k), dtype=np.float32)
    out_i = np.empty((n_rows, k), dtype=np.int64)
    if n_rows:
        kernel = topk_rows if threads > 1 else topk_rows_serial
        kernel(scores, np.ascontiguousarray(rows, dtype=np.int64), indptr, indices, k, out_s, out_i,
               max(1, min(n_rows, 4 * threads)), z)
    return out_s, out_i


def warm_up() -> None:
    """Compile both kernels into numba's on-disk cache (run at image build: saves ~10 s per task)."""
    for threads in (1, 2):
        topk(np.zeros((4, 8), dtype=np.float32), 2, threads=threads)
