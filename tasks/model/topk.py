"""Exact top-k selection and ordering, compiled with numba.

``recommend`` scores and selects in one pass (:mod:`tasks.model.fused`, ordered
by :mod:`tasks.model.sortnet`) and takes its first threshold from here
(:func:`aim`); the bucket ordering below is :mod:`tasks.model.sortnet`'s
fallback for long candidate lists. :func:`topk` is the exact top-k of a score
matrix you already hold (``torch.topk`` costs about 2-6 ns per score on this
machine's CPUs); it reads each score once:

- the first threshold is placed with the row's mean and standard deviation
  where, if scores were normal, about k + 2.5 sqrt(k) items would be above it.
  The caller may pass each row's exact moments (``recommend`` computes them
  from the model's vectors); without them they come from a sample of the row
  (about 256 scores or more, at most one per 64) and the threshold aims at
  1.5k items. A wrong guess
  costs time, never exactness: fewer than k items above it trigger a scan from
  a lower guess, then from -inf;
- scores are compared with the threshold 32 at a time into a bit mask (four
  8-wide SIMD compares, :func:`_mask32`, written as LLVM vector IR because
  numba does not vectorise an early-exit scan); a zero mask skips the block,
  and the set bits are walked to append just the items above the threshold:
  about 0.15 ns per score, 5x faster than a block maximum per 8 scores;
- when the candidate list reaches ``2k``, it is ordered and cut to the best
  ``k``, and the threshold rises to the k-th best score;
- the candidates are ordered by one counting pass over score buckets (a
  monotone map of the score, so buckets never invert the order), placing only
  the buckets up to the k-th best, and an insertion sort by a 64-bit key,
  ``(score descending, item index ascending)``: equal scores rank by lower item
  index, and ``-0.0`` ties with ``0.0`` (and comes out as ``0.0``).

Items masked as seen are set to ``-inf`` in the scratch score matrix and never
enter. Rows with fewer than ``k`` eligible items (finite or ``+inf``) are padded
with index ``-1`` and score ``-inf``. NaN scores never enter (they compare false).

Tested against a brute-force ``np.lexsort`` reference in ``tests/test_model.py``.
"""

from __future__ import annotations

import functools
from statistics import NormalDist

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

LANES = 32  # scores per threshold test (one bit mask from four 8-wide compares)
GUESS = 1.5  # the first threshold aims at this many times k items above it (sampled moments)
GUESS_LOW = 3.0  # the second, when fewer than k items were above the first (a heavy upper tail)
CAP = 2.0  # candidates kept before a cut to the best k, times k
_LOW = np.uint64(0xFFFFFFFF)
_SIGN = np.uint64(0x80000000)
_SHIFT31 = np.uint64(31)
_SHIFT32 = np.uint64(32)
_ONE = np.uint64(1)


_V8 = ir.VectorType(ir.FloatType(), 8)


def _splat8(builder, x):
    """LLVM IR: the scalar ``x`` (a float, an int) in all 8 lanes of a vector."""
    i32 = ir.IntType(32)
    vt = ir.VectorType(x.type, 8)
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(i32, 0))
    return builder.shuffle_vector(v, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(i32, 8), [0] * 8))


@intrinsic
def _mask32(typingctx, row, q, thr):
    """Bit ``t`` set when ``row[q + t] > thr``, ``t < 32`` (an ordered compare: NaN never).

    Four unaligned 8-float loads and compares, each packed to 8 bits: LLVM emits
    ``vcmpps`` + ``vmovmskps`` with AVX and lowers the same generic vector IR for
    other targets (only x86-64 with AVX2 is tested here). The caller guarantees
    ``q + 32 <= len(row)`` (no bounds check).
    """
    sig = types.uint64(row, q, thr)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        i64 = ir.IntType(64)
        t = _splat8(builder, args[2])
        base = builder.gep(data, [args[1]])
        out = ir.Constant(i64, 0)
        for b in range(4):
            v = builder.load(builder.bitcast(builder.gep(base, [ir.Constant(i64, 8 * b)]), _V8.as_pointer()), align=4)
            m = builder.zext(builder.bitcast(builder.fcmp_ordered(">", v, t), ir.IntType(8)), i64)
            out = builder.or_(out, builder.shl(m, ir.Constant(i64, 8 * b)))
        return out

    return sig, codegen


@njit(inline="always", boundscheck=False)
def _key(bits, t):
    """Sort key: ascending key == descending score, then ascending item index ``t``."""
    x = np.uint64(bits)
    x = x & ~(np.uint64(x == _SIGN) << _SHIFT31)  # -0.0 ranks as 0.0
    x = x ^ (((x >> _SHIFT31) * np.uint64(0x7FFFFFFF)) | _SIGN)  # order-preserving map of the float's bits
    return ((_LOW - x) << _SHIFT32) | np.uint64(t)


@njit(inline="always", boundscheck=False)
def _unkey(key):
    """The float32 bits of a key's score (``-0.0`` comes back as ``0.0``)."""
    x = _LOW - (key >> _SHIFT32)
    return np.uint32(x ^ _SIGN if x & _SIGN else x ^ _LOW)


@njit(inline="always", boundscheck=False)
def _order(cand, cbits, idx, c, keys, cnt, k):
    """``keys[:k]`` = the best ``k`` of the ``c`` candidates (scores ``cand[:c]``, the same
    memory as float bits ``cbits``, items ``idx[:c]``) as sort keys, best first (all ``c``
    when ``c <= k``). ``cnt``: scratch of ``3c + 1``.

    A counting pass over ``2c`` buckets of ``(best - score) * scale`` (IEEE
    subtraction and multiplication are monotone, so a better score never lands
    in a later bucket); only the buckets up to the one holding the k-th best are
    placed, then an insertion sort by the full key, which only moves items
    within their bucket. float32 arithmetic, each candidate's bucket kept from
    the counting pass: together about 1.7x faster than placing and sorting all
    candidates in float64.
    """
    hi = cand[0]
    lo = hi
    for i in range(1, c):
        v = cand[i]
        hi = v if v > hi else hi
        lo = v if v < lo else lo
    nb = 2 * c
    span = hi - lo
    scale = np.float32(nb - 1) / span if span > 0 else np.float32(0.0)
    placed = c
    if scale > 0 and scale < np.float32(1e30):  # not: all equal, an infinite score, a subnormal range
        bucket = cnt[nb + 1:]
        for b in range(nb + 1):
            cnt[b] = 0
        for i in range(c):
            b = np.int64((hi - cand[i]) * scale)
            b = b if b < nb - 1 else nb - 1
            bucket[i] = b
            cnt[b + 1] += 1
        last = nb - 1
        for b in range(nb):
            cnt[b + 1] += cnt[b]
            if cnt[b + 1] >= k:
                last = b
                break
        placed = cnt[last + 1]
        for i in range(c):  # candidates past the k-th's bucket land after the placed ones (no branch)
            b = bucket[i]
            b = b if b <= last else last + 1
            keys[cnt[b]] = _key(cbits[i], idx[i])
            cnt[b] += 1
    else:
        for i in range(c):
            keys[i] = _key(cbits[i], idx[i])
    for i in range(1, placed):
        v = keys[i]
        j = i - 1
        while j >= 0 and keys[j] > v:
            keys[j + 1] = keys[j]
            j -= 1
        keys[j + 1] = v


@njit(fastmath=True, cache=True, boundscheck=False)
def _moments(row, stride):
    """Mean and standard deviation of a sample of a row (every ``stride``-th score)."""
    s = 0.0
    ss = 0.0
    m = 0
    for t in range(0, row.shape[0], stride):
        v = np.float64(row[t])
        s += v
        ss += v * v
        m += 1
    mean = s / m
    return mean, np.sqrt(max(ss / m - mean * mean, 0.0))


@njit(inline="always", boundscheck=False)
def _cut(cand, cbits, idx, c, keys, cnt, k):
    """The best ``k`` of the ``c`` candidates (all, when ``c <= k``) to the front, in order; returns
    the last of them: the new threshold when ``c > k`` (the k-th best score)."""
    m = min(c, k)
    _order(cand, cbits, idx, c, keys, cnt, k)
    for q in range(m):
        idx[q] = np.int64(keys[q] & _LOW)
        cbits[q] = _unkey(keys[q])
    return cand[m - 1]


@njit(inline="always", boundscheck=False)
def _scan(row, thr, cand, cbits, idx, keys, cnt, cap, k):
    """Candidates above ``thr`` (rising as the list fills): scores into ``cand``, items into
    ``idx``; returns their count. ``cap >= k + 32``: a cut always leaves room for a block."""
    n = row.shape[0]
    full = n - n % LANES
    c = 0
    for j in range(0, full, LANES):
        m = _mask32(row, j, thr)
        if m == 0:
            continue
        if c + LANES > cap:  # perhaps no room for the whole block: keep the best k, raise the threshold
            thr = _cut(cand, cbits, idx, c, keys, cnt, k)
            c = k
            m = _mask32(row, j, thr)
        while m:
            t = j + trailing_zeros(m)
            idx[c] = t
            cand[c] = row[t]
            c += 1
            m &= m - _ONE
    if c + LANES > cap:
        thr = _cut(cand, cbits, idx, c, keys, cnt, k)
        c = k
    for t in range(full, n):  # the last n % 32 scores, appended without a branch
        idx[c] = t
        cand[c] = row[t]
        c += row[t] > thr
    return c


@njit(inline="always", boundscheck=False)
def _emit(cand, cbits, idx, c, keys, cnt, k, out_scores, out_index):
    """Write the best ``k`` of ``c`` candidates, best first, padded with index -1 and score -inf."""
    if c:
        _order(cand, cbits, idx, c, keys, cnt, k)
    m = min(k, c)
    out_bits = out_scores.view(np.uint32)
    for q in range(m):
        out_index[q] = np.int64(keys[q] & _LOW)
        out_bits[q] = _unkey(keys[q])
    for q in range(m, k):
        out_scores[q] = -np.inf
        out_index[q] = -1


def _topk_rows(scores, rows, indptr, indices, k, out_scores, out_index, groups, z, z_low, stride, moments):
    """Top-``k`` of each row of ``scores`` (float32, C-contiguous, overwritten).

    ``rows[r]`` is the user whose seen items ``indices[indptr[u]:indptr[u + 1]]``
    are excluded from row ``r`` (``-1``: exclude nothing). Writes ``out_scores``
    and ``out_index`` of shape ``(len(scores), k)``, best first. ``moments``:
    each row's mean and standard deviation, shape ``(len(scores), 2)``, or
    ``(0, 2)`` to estimate them from a sample of every ``stride``-th score.
    """
    n_rows, n = scores.shape
    cap = max(int(CAP * k), k + LANES)  # a cut always leaves room for one more block
    step = (n_rows + groups - 1) // groups
    for g in prange(groups):
        idx = np.empty(cap, dtype=np.int64)
        cand = np.empty(cap, dtype=np.float32)
        cbits = cand.view(np.uint32)
        keys = np.empty(cap, dtype=np.uint64)
        cnt = np.empty(3 * cap + 1, dtype=np.int64)
        for r in range(g * step, min(n_rows, (g + 1) * step)):
            row = scores[r]
            if z == -np.inf:
                mean, std = 0.0, 0.0
            elif moments.shape[0]:
                mean, std = moments[r, 0], moments[r, 1]
            else:
                mean, std = _moments(row, stride)
            u = rows[r]
            if u >= 0:
                for p in range(indptr[u], indptr[u + 1]):
                    row[indices[p]] = -np.inf
            c = 0
            if z > -np.inf:  # a first threshold near the score of the (aim * k)-th item
                c = _scan(row, np.float32(mean + z * std), cand, cbits, idx, keys, cnt, cap, k)
            if c < k and z_low > -np.inf:  # fewer than k above it (a heavy tail): a lower guess
                c = _scan(row, np.float32(mean + z_low * std), cand, cbits, idx, keys, cnt, cap, k)
            if c < k:  # no guess (k near n), still too few, NaN scores, or fewer eligible items than k
                c = _scan(row, np.float32(-np.inf), cand, cbits, idx, keys, cnt, cap, k)
            _emit(cand, cbits, idx, c, keys, cnt, k, out_scores[r], out_index[r])


topk_rows = njit(parallel=True, cache=True, boundscheck=False, nogil=True)(_topk_rows)
# one thread, safe to call from several Python threads at once (numba's parallel pool is not)
topk_rows_serial = njit(cache=True, boundscheck=False, nogil=True)(_topk_rows)


def sample_stride(n: int) -> int:
    """Every how many scores the first threshold's sample takes one: about 256 or more samples,
    at most one per 64 scores (4 cache lines: the sample should not read the whole row)."""
    return max(1, min(64, n // 256))


def aim(k: int, exact: bool) -> float:
    """How many times k items the first threshold aims to leave above it.

    With a row's exact mean and standard deviation the count above is close to
    Poisson: k + 2.5 sqrt(k) left 0.15-1.1% of rows short at k=10 and 100. With
    sampled ones the estimate's own error needs more room: 1.5k left 8% of rows
    short at k=100. (ML-1M and ML-25M shapes, bench/score_bench.py's random model.)
    """
    return 1.0 + 2.5 / k ** 0.5 if exact else GUESS


@functools.lru_cache(maxsize=64)
def _first_guess_z(k: int, n: int, times: float = GUESS) -> float:
    """If scores were normal, z standard deviations above the mean would leave about ``times * k``
    of n items above the threshold. Only a guess: more items above it cost time, fewer than k
    trigger a scan from a lower guess, then from -inf; the result is exact either way."""
    return NormalDist().inv_cdf(1 - times * k / n) if times * k < n else -np.inf


def topk(scores: np.ndarray, k: int, rows: np.ndarray | None = None, indptr: np.ndarray | None = None,
         indices: np.ndarray | None = None, threads: int = 1,
         moments: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` per row; ``scores`` is used as scratch space (seen items set to -inf).

    ``threads=1`` runs on the calling thread and releases the GIL, so Python
    threads may call it concurrently; more threads use numba's parallel pool.
    ``moments``, shape ``(rows, 2)``: each row's exact mean and standard
    deviation before masking, when the caller knows them (a better first
    threshold than a sample's; any values give the exact result).
    """
    if scores.dtype != np.float32 or not scores.flags.c_contiguous:
        raise ValueError("scores must be a C-contiguous float32 matrix")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    n_rows, n = scores.shape
    if moments is None:
        moments = np.zeros((0, 2))
    elif moments.shape != (n_rows, 2):
        raise ValueError(f"moments must have shape ({n_rows}, 2), got {moments.shape}")
    if rows is None:
        rows = np.full(n_rows, -1, dtype=np.int64)
        indptr = np.zeros(1, dtype=np.int64)
        indices = np.zeros(0, dtype=np.int64)
    first = aim(k, exact=len(moments) > 0)
    z = _first_guess_z(k, n, first)
    z_low = _first_guess_z(k, n, max(GUESS_LOW, 2 * first)) if z > -np.inf else -np.inf
    out_s = np.empty((n_rows, k), dtype=np.float32)
    out_i = np.empty((n_rows, k), dtype=np.int64)
    if n_rows:
        kernel = topk_rows if threads > 1 else topk_rows_serial
        kernel(scores, np.ascontiguousarray(rows, dtype=np.int64), indptr, indices, k, out_s, out_i,
               max(1, min(n_rows, 4 * threads)), z, z_low, sample_stride(n),
               np.ascontiguousarray(moments, dtype=np.float64))
    return out_s, out_i
