"""The accelerator: scoring and exact top-k in one pass, without materialising the score matrix.

Same contract as :func:`tasks.model.scoring.reference.select` (which it is tested
against, bit for bit), for ``k <= MAX_K``; chosen by :mod:`tasks.model.scoring` on
x86-64.

With a ranking head of k=16 the matrix multiply that scores every (user, item)
pair does 32 flops per score but writes 4 bytes per score: torch's ``mm`` is
bound by writing its output, and a top-k pass then reads it all back. This
kernel computes the scores of 4 users x 32 items in registers (one 8-wide
vector FMA per user, factor and 8 items; the item vectors are loaded once for
the 4 users), compares them with each user's threshold, and only the few items
above it leave the registers, so it can beat torch's ``mm`` of the same shapes,
which has to write every score (``make bench-score`` compares the whole top-k,
this kernel alone and the reference against the bare multiply; docs/performance.md has figures).

The block is written as LLVM vector IR (:func:`_block_select`): numba does not
vectorise a loop nest of this shape. ``llvm.fmuladd`` fuses the multiply-add
where the CPU has FMA and is a multiply and an add elsewhere. The scores of one
build are the same for every call (the order of the additions is fixed: factor
0 first). Each 8 scores are compared into an 8-bit mask, the user's seen items
(a bitmap per group of 4 users) and the padding columns are cleared from it,
and the lanes still set are packed to the front of the vector and stored at the
end of the user's candidate list, whole: no branch per block. The packing is
one ``vpermps`` where numba's target has AVX2 and a generic extract per lane
elsewhere; the rest of the IR is generic. Only x86-64 is tested here, with AVX2
and with ``NUMBA_CPU_NAME=generic`` (the portable path, SSE2).

Around it: the first threshold from the row's exact mean and standard deviation
(:mod:`tasks.model.scoring`); when the candidate list could overflow, its
best k are kept and the threshold rises to the k-th; at the end the candidates
are ordered by :func:`tasks.model.scoring.sortnet.order` (score descending, then
item index ascending). Rows with fewer than k items above their first threshold
are reported back: the caller reruns them with a lower one.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from tasks.model.scoring import PAD_ITEMS
from tasks.model.scoring.sortnet import _V8, _VI8, NET, ROOM, order


def _splat8(builder, x):
    """LLVM IR: the scalar ``x`` (a float, an int) in all 8 lanes of a vector."""
    i32 = ir.IntType(32)
    vt = ir.VectorType(x.type, 8)
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(i32, 0))
    return builder.shuffle_vector(v, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(i32, 8), [0] * 8))


def _target_has(feature: str) -> bool:
    """Whether numba compiles for a CPU with ``feature`` (its target: NUMBA_CPU_NAME/FEATURES, else the host)."""
    from llvmlite import binding
    from numba.core import config

    features, name = getattr(config, "CPU_FEATURES", None), getattr(config, "CPU_NAME", None)
    if features is not None:
        return f"+{feature}" in features.split(",")
    if name is not None and name != "host":
        return False  # a named, e.g. generic, target: the portable path
    return (binding.get_process_triple().startswith(("x86_64", "i686"))
            and bool(binding.get_host_cpu_features().get(feature)))


MAX_K = NET  # the most items per row it selects (the sorting networks' reach)
GROUP = 4  # users scored together (each item vector load serves all four)
WIDTH = PAD_ITEMS  # items per block (32): one 32-bit mask per user; the item columns are padded to it
_VECTORS = 2  # 8-wide vectors per user per factor step: 4 users x 2 = 8 accumulators
_ONE = np.uint64(1)
_AVX2 = _target_has("avx2")
# fmuladd is one rounding (as BLAS's FMA kernels) where the target has FMA, two elsewhere
FMA = _target_has("fma")
# _LUT[m]: the lanes of the set bits of the 8-bit mask m, in order (then zeros)
_LUT = np.array([[t for t in range(8) if m >> t & 1] + [0] * (8 - bin(m).count("1")) for m in range(256)],
                dtype=np.int32)



def _scores(context, builder, users, items_t, j, consume):
    """LLVM IR: the scores of the ``GROUP`` users (rows of ``users`` (G, F)) for items ``j .. j + 32``
    of ``items_t`` (F, I), 16 items at a time: ``consume(col, scores)`` gets, for items
    ``j + col .. j + col + 16``, each user's ``_VECTORS`` vectors of 8 scores."""
    i64 = ir.IntType(64)
    v8 = _V8
    n_factors = cgutils.unpack_tuple(builder, users.shape, 2)[1]
    n_cols = cgutils.unpack_tuple(builder, items_t.shape, 2)[1]
    fmuladd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8, v8]),
                                             "llvm.fmuladd.v8f32")

    def const(x):
        return ir.Constant(i64, x)

    acc = [[cgutils.alloca_once(builder, v8) for _ in range(_VECTORS)] for _ in range(GROUP)]
    for s in range(0, WIDTH // 8, _VECTORS):
        for row in acc:
            for a in row:
                builder.store(ir.Constant(v8, [0.0] * 8), a)
        with cgutils.for_range(builder, n_factors) as loop:  # kept in registers (mem2reg)
            f = loop.index
            base = builder.add(builder.mul(f, n_cols), builder.add(j, const(8 * s)))
            item = [builder.load(builder.bitcast(builder.gep(items_t.data, [builder.add(base, const(8 * v))]),
                                                 v8.as_pointer()), align=4)
                    for v in range(_VECTORS)]
            for u in range(GROUP):
                at = builder.add(builder.mul(const(u), n_factors), f)
                x = _splat8(builder, builder.load(builder.gep(users.data, [at])))
                for v in range(_VECTORS):
                    builder.store(builder.call(fmuladd, [x, item[v], builder.load(acc[u][v])]), acc[u][v])
        consume(8 * s, [[builder.load(a) for a in row] for row in acc])


@intrinsic
def _block_scores(typingctx, users, items_t, j, out):
    """Scores of the ``GROUP`` rows of ``users`` (G, F) for items ``j .. j + 32`` of
    ``items_t`` (F, I), I a multiple of 32, both float32 and C-contiguous, into ``out``
    (G, 32): the same IR as :func:`_block_select`'s scores."""
    sig = types.void(users, items_t, j, out)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        p, q, o = (context.make_array(signature.args[a])(context, builder, args[a]) for a in (0, 1, 3))

        def consume(col0, scores):
            for u in range(GROUP):
                for v, score in enumerate(scores[u]):
                    at = builder.gep(o.data, [ir.Constant(i64, u * WIDTH + col0 + 8 * v)])
                    builder.store(score, builder.bitcast(at, _V8.as_pointer()), align=4)

        _scores(context, builder, p, q, args[2], consume)
        return context.get_dummy_value()

    return sig, codegen


def _left_pack(builder, scores, lanes):
    """The lanes ``lanes`` (<8 x i32>) of ``scores`` (<8 x float>), in that order: ``vpermps`` where
    the target has AVX2, else one extract per lane (LLVM spills the vector once and loads)."""
    if _AVX2:
        permps = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_V8, _VI8]),
                                                "llvm.x86.avx2.permps")
        return builder.call(permps, [scores, lanes])
    out = ir.Constant(_V8, ir.Undefined)
    for t in range(8):
        lane = builder.extract_element(lanes, ir.Constant(ir.IntType(32), t))
        out = builder.insert_element(out, builder.extract_element(scores, lane), ir.Constant(ir.IntType(32), t))
    return out


@intrinsic
def _block_select(typingctx, users, items_t, thr, j, n_items, seen, lut, cand, idx, count):
    """The items of ``j .. j + 32`` whose score is above each user's threshold, appended to the
    user's candidates: scores to ``cand[u, count[u]:]``, item indexes to ``idx[u, ...]``.

    Items set in ``seen[u, j >> 5]`` (a bit per item) and from ``n_items`` on are left out. Each
    group of 8 scores is compared into an 8-bit mask, and the lanes whose bit is set are packed
    to the front of the vector (the lanes from ``lut[mask]``) and stored whole: no branch, the
    8 slots past the new count are scratch. Needs 32 + 8 free slots past ``count[u]``.
    """
    sig = types.void(users, items_t, thr, j, n_items, seen, lut, cand, idx, count)

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        p, q, t, sn, lt, cd, ix, cn = (context.make_array(signature.args[a])(context, builder, args[a])
                                       for a in (0, 1, 2, 5, 6, 7, 8, 9))
        j, n_items = args[3], args[4]
        room = cgutils.unpack_tuple(builder, cd.shape, 2)[1]
        n_words = cgutils.unpack_tuple(builder, sn.shape, 2)[1]
        ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32]), "llvm.ctpop.i32")
        # the block's valid items: all 32, or the first n_items - j (the last block's padding out), or none
        valid = builder.sub(n_items, j)
        valid = builder.select(builder.icmp_signed("<", valid, ir.Constant(i64, 0)), ir.Constant(i64, 0), valid)
        low_bits = builder.trunc(builder.sub(builder.shl(ir.Constant(i64, 1), valid), ir.Constant(i64, 1)), i32)
        tail = builder.select(builder.icmp_signed(">=", valid, ir.Constant(i64, 32)), ir.Constant(i32, -1), low_bits)
        word = builder.ashr(j, ir.Constant(i64, 5))
        thresholds, keep, counts = [], [], []
        for u in range(GROUP):
            uu = ir.Constant(i64, u)
            thresholds.append(_splat8(builder, builder.load(builder.gep(t.data, [uu]))))
            s = builder.trunc(builder.load(builder.gep(sn.data, [builder.add(builder.mul(uu, n_words), word)])), i32)
            keep.append(builder.and_(tail, builder.xor(s, ir.Constant(i32, -1))))
            counts.append(builder.load(builder.gep(cn.data, [uu])))

        def consume(col0, scores):
            for u in range(GROUP):
                row = builder.mul(ir.Constant(i64, u), room)
                for v, score in enumerate(scores[u]):
                    col = col0 + 8 * v
                    over = builder.fcmp_ordered(">", score, thresholds[u])
                    above = builder.zext(builder.bitcast(over, ir.IntType(8)), i32)
                    bits = builder.and_(above, builder.lshr(keep[u], ir.Constant(i32, col)))
                    bits = builder.and_(bits, ir.Constant(i32, 0xFF))
                    lut_row = builder.gep(lt.data, [builder.mul(builder.zext(bits, i64), ir.Constant(i64, 8))])
                    lanes = builder.load(builder.bitcast(lut_row, _VI8.as_pointer()), align=4)
                    at = builder.add(row, counts[u])
                    builder.store(_left_pack(builder, score, lanes),
                                  builder.bitcast(builder.gep(cd.data, [at]), _V8.as_pointer()), align=4)
                    base = builder.trunc(builder.add(j, ir.Constant(i64, col)), i32)
                    builder.store(builder.add(lanes, _splat8(builder, base)),
                                  builder.bitcast(builder.gep(ix.data, [at]), _VI8.as_pointer()), align=4)
                    counts[u] = builder.add(counts[u], builder.zext(builder.call(ctpop, [bits]), i64))

        _scores(context, builder, p, q, j, consume)
        for u in range(GROUP):
            builder.store(counts[u], builder.gep(cn.data, [ir.Constant(i64, u)]))
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always", boundscheck=False)
def _emit(cand, idx, c, k, out_scores, out_index):
    """Write the best ``k`` of ``c`` candidates, best first, padded with index -1 and score -inf."""
    if c:
        order(cand, idx, c, k)
    m = min(k, c)
    for q in range(m):
        out_scores[q] = cand[q]  # order() writes -0.0 as 0.0
        out_index[q] = idx[q]
    for q in range(m, k):
        out_scores[q] = -np.inf
        out_index[q] = -1


@njit(cache=True, boundscheck=False, nogil=True)
def select(vectors, items_t, n_items, rows, indptr, indices, k, thresholds, out_scores, out_index, short):
    """Top-``k`` items of each row by ``vectors[r] . items_t[:, i]``, best first.

    ``vectors`` (B, F) float32; ``items_t`` (F, I) float32 with I a multiple of 32
    (columns from ``n_items`` on are padding, never selected); ``rows[r]``: the user
    whose seen items ``indices[indptr[u]:indptr[u + 1]]`` (each below ``n_items``, ascending
    within a user) are excluded (``-1``: none); ``thresholds[r]``: the first guess, only items strictly above
    it are candidates (``-inf``: every item). A row with fewer than ``k``
    candidates above any other guess (NaN included) is left unwritten and flagged in ``short``
    (the caller reruns it lower); otherwise ``out_scores[r]``, ``out_index[r]``
    get its top k, padded with -inf / -1. Returns how many rows are short.
    ``k <= MAX_K`` (the caller checks: the ordering covers at most 256 candidates).
    """
    n_rows, n_factors = vectors.shape
    n_cols = items_t.shape[1]
    cap = max(2 * k, k + WIDTH)  # a cut always leaves room for a whole block
    group = np.zeros((GROUP, n_factors), dtype=np.float32)
    thr = np.empty(GROUP, dtype=np.float32)
    room = max(cap + 8, ROOM)  # + 8: a block stores 8 lanes past its last candidate; the sort pads up to ROOM
    cand = np.empty((GROUP, room), dtype=np.float32)
    idx = np.empty((GROUP, room), dtype=np.int32)
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
                if user >= 0:  # the bitmap, a word at a time (sorted indexes: a word's items are adjacent)
                    w_prev = -1
                    acc = np.uint64(0)
                    for p in range(indptr[user], indptr[user + 1]):
                        w = indices[p] >> 5
                        acc = (acc if w == w_prev else np.uint64(0)) | (_ONE << np.uint64(indices[p] & 31))
                        seen[u, w] = acc
                        w_prev = w
            else:  # padding rows: no candidates
                group[u] = 0.0
                thr[u] = np.inf
        for j in range(0, n_cols, WIDTH):
            for u in range(g):
                if count[u] > cap - WIDTH:  # perhaps no room for a whole block: keep the best k, raise the threshold
                    order(cand[u], idx[u], count[u], k)
                    thr[u] = cand[u, k - 1]
                    count[u] = k
            _block_select(group, items_t, thr, j, n_items, seen, _LUT, cand, idx, count)
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
                _emit(cand[u], idx[u], count[u], k, out_scores[r], out_index[r])
    return n_short


@njit(cache=True, boundscheck=False, nogil=True)
def fused_scores(vectors, items_t, n_items):
    """Every score ``fused_topk`` compares, (B, n_items): the same code, for tests and inspection."""
    n_rows, n_factors = vectors.shape
    out = np.empty((n_rows, n_items), dtype=np.float32)
    group = np.zeros((GROUP, n_factors), dtype=np.float32)
    scratch = np.empty((GROUP, WIDTH), dtype=np.float32)
    for r0 in range(0, n_rows, GROUP):
        g = min(GROUP, n_rows - r0)
        group[:] = 0.0
        group[:g] = vectors[r0:r0 + g]
        for j in range(0, items_t.shape[1], WIDTH):
            _block_scores(group, items_t, j, scratch)
            w = min(WIDTH, n_items - j)
            if w > 0:
                out[r0:r0 + g, j:j + w] = scratch[:g, :w]
    return out


def warm_up() -> None:
    """Compile into numba's on-disk cache (run at image build)."""
    from tasks.model.scoring import Items

    vectors = np.ones((5, 3), dtype=np.float32)
    items = Items.from_vectors(np.ones((40, 3), dtype=np.float32)).t
    out_s, out_i = np.empty((5, 2), dtype=np.float32), np.empty((5, 2), dtype=np.int64)
    select(vectors, items, 40, np.full(5, -1, dtype=np.int64), np.zeros(1, dtype=np.int64),
           np.zeros(0, dtype=np.int64), 2, np.full(5, -np.inf, dtype=np.float32), out_s, out_i,
           np.zeros(5, dtype=np.bool_))
    fused_scores(vectors, items, 40)
