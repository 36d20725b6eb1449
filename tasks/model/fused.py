"""Scoring and exact top-k in one pass, without materialising the score matrix.

With a ranking head of k=16 the matrix multiply that scores every (user, item)
pair does 32 flops per score but writes 4 bytes per score: torch's ``mm`` is
bound by writing its output, and a top-k pass then reads it all back. This
kernel computes the scores of 4 users x 32 items in registers (one 8-wide
vector FMA per user, factor and 8 items; the item vectors are loaded once for
the 4 users), compares them with each user's threshold into a 32-bit mask, and
only the few items above the threshold leave the registers. Computing the
scores this way takes 0.54-0.88x the time of torch's ``mm`` for the same shapes
(bench/score_bench.py compares the whole top-k against the bare multiply).

The block is written as LLVM vector IR (:func:`_block_scores`): numba does not
vectorise a loop nest of this shape. ``llvm.fmuladd`` fuses the multiply-add
where the CPU has FMA and is a multiply and an add elsewhere; the IR is
generic, not x86-specific, though only x86-64 with AVX2 is tested here. The
scores of one build are the same for every call (the order of the additions is
fixed: factor 0 first).

The selection around it is :mod:`tasks.model.topk`'s (the first threshold from
the row's exact mean and standard deviation, cuts to the best k when the
candidate list fills, the same ordering and tie rule). A user's seen items
are set in a bitmap (a bit per item, for the 4 users of the group) that clears
their bits from each block's mask without a branch. Rows with fewer
than k items above their first threshold are reported back: the caller reruns
them with a lower one (0.15-0.9% of rows at ML-1M and ML-25M shapes).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

from tasks.model.sortnet import ROOM, order
from tasks.model.topk import _V8, _mask32, _splat8

GROUP = 4  # users scored together (each item vector load serves all four)
WIDTH = 32  # items per block: one 32-bit mask per user
_VECTORS = 2  # 8-wide vectors per user per factor step: 4 users x 2 = 8 accumulators
_ONE = np.uint64(1)
MAX_ITEMS = 2**31 - 32  # int32 item indexes, padding included


@intrinsic
def _block_scores(typingctx, users, items_t, thr, j, out, masks):
    """Scores of the ``GROUP`` rows of ``users`` (G, F) for items ``j .. j + 32`` of
    ``items_t`` (F, I), I a multiple of 32, both float32 and C-contiguous, into ``out``
    (G, 32); bit t of ``masks[u]`` set when ``out[u, t] > thr[u]`` (ordered: NaN never)."""
    sig = types.void(users, items_t, thr, j, out, masks)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        v8 = _V8
        p, q, t, o, m = (context.make_array(signature.args[a])(context, builder, args[a]) for a in (0, 1, 2, 4, 5))
        n_factors = cgutils.unpack_tuple(builder, p.shape, 2)[1]
        n_cols = cgutils.unpack_tuple(builder, q.shape, 2)[1]
        fmuladd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8, v8]),
                                                 "llvm.fmuladd.v8f32")

        def const(x):
            return ir.Constant(i64, x)

        def vec(ptr):
            return builder.bitcast(ptr, v8.as_pointer())

        thresholds = [_splat8(builder, builder.load(builder.gep(t.data, [const(u)]))) for u in range(GROUP)]
        bits = [const(0)] * GROUP
        acc = [[cgutils.alloca_once(builder, v8) for _ in range(_VECTORS)] for _ in range(GROUP)]
        for s in range(0, WIDTH // 8, _VECTORS):
            for row in acc:
                for a in row:
                    builder.store(ir.Constant(v8, [0.0] * 8), a)
            with cgutils.for_range(builder, n_factors) as loop:  # kept in registers (mem2reg)
                f = loop.index
                base = builder.add(builder.mul(f, n_cols), builder.add(args[3], const(8 * s)))
                item = [builder.load(vec(builder.gep(q.data, [builder.add(base, const(8 * v))])), align=4)
                        for v in range(_VECTORS)]
                for u in range(GROUP):
                    x = _splat8(builder, builder.load(builder.gep(p.data, [builder.add(builder.mul(const(u), n_factors), f)])))
                    for v in range(_VECTORS):
                        builder.store(builder.call(fmuladd, [x, item[v], builder.load(acc[u][v])]), acc[u][v])
            for u in range(GROUP):
                for v in range(_VECTORS):
                    col = 8 * (s + v)
                    score = builder.load(acc[u][v])
                    builder.store(score, vec(builder.gep(o.data, [const(u * WIDTH + col)])), align=4)
                    above = builder.bitcast(builder.fcmp_ordered(">", score, thresholds[u]), ir.IntType(8))
                    bits[u] = builder.or_(bits[u], builder.shl(builder.zext(above, i64), const(col)))
        for u in range(GROUP):
            builder.store(bits[u], builder.gep(m.data, [const(u)]))
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always", boundscheck=False)
def _emit(cand, idx, c, keys, cnt, k, out_scores, out_index):
    """Write the best ``k`` of ``c`` candidates, best first, padded with index -1 and score -inf."""
    if c:
        order(cand, idx, c, k, keys, cnt)
    m = min(k, c)
    for q in range(m):
        out_scores[q] = cand[q]  # order() writes -0.0 as 0.0
        out_index[q] = idx[q]
    for q in range(m, k):
        out_scores[q] = -np.inf
        out_index[q] = -1


@njit(cache=True, boundscheck=False, nogil=True)
def fused_topk(vectors, items_t, n_items, rows, indptr, indices, k, thresholds, out_scores, out_index, short):
    """Top-``k`` items of each row by ``vectors[r] . items_t[:, i]``, best first.

    ``vectors`` (B, F) float32; ``items_t`` (F, I) float32 with I a multiple of 32
    (columns from ``n_items`` on are padding, never selected); ``rows[r]``: the user
    whose seen items ``indices[indptr[u]:indptr[u + 1]]`` (each below ``n_items``) are excluded
    (``-1``: none); ``thresholds[r]``: the first guess, only items strictly above
    it are candidates (``-inf``: every item). A row with fewer than ``k``
    candidates above any other guess (NaN included) is left unwritten and flagged in ``short``
    (the caller reruns it lower); otherwise ``out_scores[r]``, ``out_index[r]``
    get its top k, padded with -inf / -1. Returns how many rows are short.
    """
    n_rows, n_factors = vectors.shape
    n_cols = items_t.shape[1]
    cap = max(2 * k, k + WIDTH)  # a cut always leaves room for a whole block
    group = np.zeros((GROUP, n_factors), dtype=np.float32)
    thr = np.empty(GROUP, dtype=np.float32)
    scratch = np.empty((GROUP, WIDTH), dtype=np.float32)
    masks = np.empty(GROUP, dtype=np.uint64)
    room = max(cap + 1, ROOM)  # + 1 spare: the walk writes two slots per turn; the sort pads up to ROOM
    cand = np.empty((GROUP, room), dtype=np.float32)
    idx = np.empty((GROUP, room), dtype=np.int32)
    keys = np.empty(cap, dtype=np.uint64)
    cnt = np.empty(3 * cap + 1, dtype=np.int64)
    count = np.zeros(GROUP, dtype=np.int64)
    seen = np.zeros((GROUP, n_cols // WIDTH), dtype=np.uint64)  # the group's seen items, a bit per item
    n_short = 0
    for r0 in range(0, n_rows, GROUP):
        g = min(GROUP, n_rows - r0)
        for u in range(GROUP):
            count[u] = 0
            if u < g:
                group[u] = vectors[r0 + u]
                thr[u] = thresholds[r0 + u]
                user = rows[r0 + u]
                if user >= 0:
                    for p in range(indptr[user], indptr[user + 1]):
                        seen[u, indices[p] >> 5] |= _ONE << np.uint64(indices[p] & 31)
            else:  # padding rows: no candidates
                group[u] = 0.0
                thr[u] = np.inf
        for j in range(0, n_cols, WIDTH):
            _block_scores(group, items_t, thr, j, scratch, masks)
            for u in range(g):
                m = masks[u]
                if m == 0:
                    continue
                if j + WIDTH > n_items:  # the last block's padding columns
                    m &= (_ONE << np.uint64(max(0, n_items - j))) - _ONE
                m &= ~seen[u, j >> 5]
                if m == 0:
                    continue
                c = count[u]
                if c + WIDTH > cap:  # perhaps no room for the block: keep the best k, raise the threshold
                    order(cand[u], idx[u], c, k, keys, cnt)
                    thr[u] = cand[u, k - 1]
                    c = k
                    m &= _mask32(scratch[u], 0, thr[u])
                while m:  # two items per turn: most blocks have one or two, so the loop rarely turns twice
                    t = trailing_zeros(m)
                    m &= m - _ONE
                    t2 = trailing_zeros(m) & 31  # 64 when m is now 0: written below, not counted
                    idx[u, c] = j + t
                    cand[u, c] = scratch[u, t]
                    idx[u, c + 1] = j + t2
                    cand[u, c + 1] = scratch[u, t2]
                    c += 1 + (m != 0)
                    m &= m - _ONE
                count[u] = c
        for u in range(g):
            r = r0 + u
            user = rows[r]
            if user >= 0:  # clear the bitmap for the next group (cheaper than zeroing it at 59k items)
                for p in range(indptr[user], indptr[user + 1]):
                    seen[u, indices[p] >> 5] = 0
            if count[u] < k and thresholds[r] != -np.inf:  # a NaN guess is a guess too
                short[r] = True
                n_short += 1
            else:
                _emit(cand[u], idx[u], count[u], keys, cnt, k, out_scores[r], out_index[r])
    return n_short


@njit(cache=True, boundscheck=False, nogil=True)
def fused_scores(vectors, items_t, n_items):
    """Every score ``fused_topk`` compares, (B, n_items): the same code, for tests and inspection."""
    n_rows, n_factors = vectors.shape
    out = np.empty((n_rows, n_items), dtype=np.float32)
    group = np.zeros((GROUP, n_factors), dtype=np.float32)
    thr = np.full(GROUP, np.inf, dtype=np.float32)
    scratch = np.empty((GROUP, WIDTH), dtype=np.float32)
    masks = np.empty(GROUP, dtype=np.uint64)
    for r0 in range(0, n_rows, GROUP):
        g = min(GROUP, n_rows - r0)
        group[:] = 0.0
        group[:g] = vectors[r0:r0 + g]
        for j in range(0, items_t.shape[1], WIDTH):
            _block_scores(group, items_t, thr, j, scratch, masks)
            w = min(WIDTH, n_items - j)
            if w > 0:
                out[r0:r0 + g, j:j + w] = scratch[:g, :w]
    return out


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


def pad_items(items_t: np.ndarray) -> np.ndarray:
    """(F, I) item vectors as the kernel wants them: float32, C-contiguous, I padded with
    zero columns to a multiple of 32 (at least 32). Candidates carry int32 item indexes."""
    f, n = items_t.shape
    if n >= MAX_ITEMS:
        raise ValueError(f"at most {MAX_ITEMS - 1} items can be ranked, got {n}")
    out = np.zeros((f, max(WIDTH, -(-n // WIDTH) * WIDTH)), dtype=np.float32)
    out[:, :n] = items_t
    return out


def warm_up() -> None:
    """Compile into numba's on-disk cache (run at image build)."""
    vectors = np.ones((5, 3), dtype=np.float32)
    items = pad_items(np.ones((3, 40), dtype=np.float32))
    out_s, out_i = np.empty((5, 2), dtype=np.float32), np.empty((5, 2), dtype=np.int64)
    fused_topk(vectors, items, 40, np.full(5, -1, dtype=np.int64), np.zeros(1, dtype=np.int64),
               np.zeros(0, dtype=np.int64), 2, np.full(5, -np.inf, dtype=np.float32), out_s, out_i,
               np.zeros(5, dtype=np.bool_))
    fused_scores(vectors, items, 40)
