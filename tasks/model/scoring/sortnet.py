"""Ordering a few hundred top-k candidates with a SIMD sorting network.

The candidates of one row (a float32 score and an int32 item index each, in two
arrays) are ordered best first: higher score, then lower item index, so every
key is distinct and the order is total and deterministic. ``-0.0`` and ``0.0``
compare equal (the lower index first); NaN never reaches here (candidates are
above a threshold under an ordered compare).

Each candidate becomes one signed 64-bit key: the score's bits mapped so that
integer order is float order (``-0.0`` first made ``0.0``, which is also how it
is written back) in the high half, the item index's complement in the low half.
One integer compare then orders by score and breaks ties by the lower index.
A bitonic network on vectors of 4 keys, written as LLVM vector IR (generic
``icmp``/``select``/``shufflevector``; on x86-64 with AVX2, the only target tested
here, LLVM emits ``vpcmpgtq``, ``vblendvpd`` and ``vpermpd``), sorts 32, 64 or 128
candidates in registers with no branch. It is emitted depth first (each half
sorted and merged before the next), so a block of a few vectors stays in
registers through its stages: about 3,300 instructions for 128 candidates.
Between 129 and 256 candidates, the first 128 and the rest are sorted
separately and merged, keeping the best 128: enough for ``k <= 128``, the most
the fused kernel selects (:data:`tasks.model.scoring.fused.MAX_K`; it cuts its
list to the best k before it passes 256).

Why: a scalar ordering of the ~125 candidates of a top-100 (bucket counting,
scattering and insertion sort: data-dependent branches and store-to-load chains)
cost nearly what computing the user's scores costs. The network does more
comparisons but no branch (docs/performance.md has the scoring figures).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

NET = 128  # the largest network
ROOM = 2 * NET  # the candidate arrays need at least this many entries (padding is written up to here)
_PAD_INDEX = np.int32(np.iinfo(np.int32).max)

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_VI8 = ir.VectorType(_I32, 8)
_V8 = ir.VectorType(ir.FloatType(), 8)
_VK = ir.VectorType(_I64, 4)  # four 64-bit keys
_VB4 = ir.VectorType(ir.IntType(1), 4)
_L = 4  # keys per vector


def _const(ty, values):
    return ir.Constant(ty, list(values))


def _permute(builder, v, perm):
    return builder.shuffle_vector(v, ir.Constant(v.type, ir.Undefined), _const(ir.VectorType(_I32, len(perm)), perm))


def _to_keys(builder, scores, index):
    """Two vectors of 4 keys from 8 scores (float32) and item indexes (int32): a signed 64-bit
    integer, larger for a better candidate. High half: the score's bits mapped so that signed
    integer order is float order (``-0.0`` first made ``0.0``); low half: the index's complement,
    so that the lower index of an equal score is the larger key."""
    bits = builder.bitcast(scores, _VI8)
    sign = _const(_VI8, [-0x80000000] * 8)
    bits = builder.select(builder.icmp_unsigned("==", bits, sign), _const(_VI8, [0] * 8), bits)
    flip = builder.and_(builder.ashr(bits, _const(_VI8, [31] * 8)), _const(_VI8, [0x7FFFFFFF] * 8))
    high = builder.xor(bits, flip)
    low = builder.xor(index, _const(_VI8, [-1] * 8))
    out = []
    for half in (range(4), range(4, 8)):
        h = builder.shl(builder.sext(_permute(builder, high, list(half)), _VK), _const(_VK, [32] * 4))
        out.append(builder.or_(h, builder.zext(_permute(builder, low, list(half)), _VK)))
    return out


def _from_keys(builder, a, b):
    """8 scores and indexes back from two vectors of keys (the inverse of :func:`_to_keys`)."""
    key = builder.shuffle_vector(a, b, _const(ir.VectorType(_I32, 8), range(8)))
    high = builder.trunc(builder.ashr(key, _const(ir.VectorType(_I64, 8), [32] * 8)), _VI8)
    flip = builder.and_(builder.ashr(high, _const(_VI8, [31] * 8)), _const(_VI8, [0x7FFFFFFF] * 8))
    scores = builder.bitcast(builder.xor(high, flip), _V8)
    index = builder.xor(builder.trunc(key, _VI8), _const(_VI8, [-1] * 8))
    return scores, index


def _exchange(builder, keys, v, w, best_first):
    """Vectors ``v`` and ``w``, lane by lane: the larger key to ``v`` (or to ``w``)."""
    swap = builder.icmp_signed(">", keys[w], keys[v])
    if not best_first:
        swap = builder.not_(swap)
    keys[v], keys[w] = builder.select(swap, keys[w], keys[v]), builder.select(swap, keys[v], keys[w])


def _in_vector(builder, keys, v, sizes, best_first):
    """The stages of the network inside vector ``v``: for each (size, d), lane ``t`` meets lane
    ``t ^ d``; the pair puts the larger key first where ``best_first(t, size)``."""
    for size in sizes:
        d = size // 2
        while d:
            other = _permute(builder, keys[v], [t ^ d for t in range(_L)])
            other_larger = builder.icmp_signed(">", other, keys[v])
            # a lane takes the larger key when it is the pair's first and the pair puts the
            # larger first (or neither); otherwise the smaller. Equal keys are the same padding.
            smaller = [((t & d) == 0) != best_first(t, size) for t in range(_L)]
            take = builder.xor(other_larger, _const(_VB4, [int(x) for x in smaller]))
            keys[v] = builder.select(take, other, keys[v])
            d //= 2


def _merge(builder, keys, lo, n, best_first):
    """Bitonic merge of elements ``lo .. lo + n`` (a bitonic sequence) into order, depth first
    (so that a block of a few vectors stays in registers through its stages)."""
    if n == _L:
        _in_vector(builder, keys, lo // _L, [_L], lambda t, size: best_first)
        return
    h = n // 2
    for v in range(lo // _L, (lo + h) // _L):
        _exchange(builder, keys, v, v + h // _L, best_first)
    _merge(builder, keys, lo, h, best_first)
    _merge(builder, keys, lo + h, h, best_first)


def _sort(builder, keys, lo, n, best_first):
    """Bitonic sort of elements ``lo .. lo + n``: larger keys first, or last."""
    if n == _L:
        _in_vector(builder, keys, lo // _L, [2, _L],
                   lambda t, size: (t & size) == 0 if size < _L else best_first)
        return
    _sort(builder, keys, lo, n // 2, True)
    _sort(builder, keys, lo + n // 2, n // 2, False)
    _merge(builder, keys, lo, n, best_first)


def _load(context, builder, signature, args, off, n):
    """Pointers to ``n`` scores and indexes from ``off``, 8 at a time, and their keys."""
    scores = context.make_array(signature.args[0])(context, builder, args[0]).data
    index = context.make_array(signature.args[1])(context, builder, args[1]).data
    at = [builder.add(off, ir.Constant(_I64, q)) for q in range(0, n, 8)]
    sp = [builder.bitcast(builder.gep(scores, [a]), _V8.as_pointer()) for a in at]
    ip = [builder.bitcast(builder.gep(index, [a]), _VI8.as_pointer()) for a in at]
    keys = []
    for s, i in zip(sp, ip, strict=True):
        keys += _to_keys(builder, builder.load(s, align=4), builder.load(i, align=4))
    return sp, ip, keys


def _store(builder, sp, ip, keys):
    for q, (s, i) in enumerate(zip(sp, ip, strict=True)):
        scores, index = _from_keys(builder, keys[2 * q], keys[2 * q + 1])
        builder.store(scores, s, align=4)
        builder.store(index, i, align=4)


def _make_sort(n):
    @intrinsic
    def sort(typingctx, scores, index, off):
        """Sort ``scores[off:off + n]`` (float32) and ``index[...]`` (int32) in place, best first."""
        sig = types.void(scores, index, off)

        def codegen(context, builder, signature, args):
            sp, ip, keys = _load(context, builder, signature, args, args[2], n)
            _sort(builder, keys, 0, n, True)
            _store(builder, sp, ip, keys)
            return context.get_dummy_value()

        return sig, codegen

    return sort


def _make_merge(n):
    @intrinsic
    def merge(typingctx, scores, index):
        """The best 128 of ``scores[:128]`` and ``scores[128:128 + n]`` (each sorted best first,
        with ``index`` alongside) into ``scores[:128]``, ``index[:128]``, best first."""
        sig = types.void(scores, index)

        def codegen(context, builder, signature, args):
            sp, ip, keys = _load(context, builder, signature, args, ir.Constant(_I64, 0), NET + n)
            big = NET // _L
            # element e of the first list meets element 127 - e of the second (the worst where the
            # second is shorter): the larger of each pair are the best 128, a bitonic sequence
            for v in range(big - n // _L, big):
                other = _permute(builder, keys[big + (big - 1 - v)], list(range(_L - 1, -1, -1)))
                larger = builder.icmp_signed(">", other, keys[v])
                keys[v] = builder.select(larger, other, keys[v])
            keys = keys[:big]
            _merge(builder, keys, 0, NET, True)
            _store(builder, sp[:NET // 8], ip[:NET // 8], keys)
            return context.get_dummy_value()

        return sig, codegen

    return merge


_net32, _net64, _net128 = (_make_sort(n) for n in (32, 64, 128))
_mrg32, _mrg64, _mrg128 = (_make_merge(n) for n in (32, 64, 128))


# one compiled copy of each network (each is a few thousand instructions), called, not inlined
@njit(cache=True, boundscheck=False, nogil=True)
def _sort32(cand, idx, off):
    _net32(cand, idx, off)


@njit(cache=True, boundscheck=False, nogil=True)
def _sort64(cand, idx, off):
    _net64(cand, idx, off)


@njit(cache=True, boundscheck=False, nogil=True)
def _sort128(cand, idx, off):
    _net128(cand, idx, off)


@njit(cache=True, boundscheck=False, nogil=True)
def _merge32(cand, idx):
    _mrg32(cand, idx)


@njit(cache=True, boundscheck=False, nogil=True)
def _merge64(cand, idx):
    _mrg64(cand, idx)


@njit(cache=True, boundscheck=False, nogil=True)
def _merge128(cand, idx):
    _mrg128(cand, idx)


@njit(inline="always", boundscheck=False)
def _pad(cand, idx, c, n):
    for q in range(c, n):
        cand[q] = -np.inf
        idx[q] = _PAD_INDEX


@njit(cache=True, boundscheck=False, nogil=True)
def order(cand, idx, c, k):
    """Order the ``c`` candidates (scores ``cand``, float32, and item indexes ``idx``, int32,
    each with room for ``max(c + 1, 256)``) so that ``cand[:min(c, k)]`` and ``idx[...]`` are the
    best ``k``, best first. ``c <= 256`` and, past 128 candidates, ``k <= 128``: the callers
    guarantee it (nothing is written otherwise)."""
    if c <= 32:
        _pad(cand, idx, c, 32)
        _sort32(cand, idx, 0)
    elif c <= 64:
        _pad(cand, idx, c, 64)
        _sort64(cand, idx, 0)
    elif c <= NET:
        _pad(cand, idx, c, NET)
        _sort128(cand, idx, 0)
    elif c <= 2 * NET and k <= NET:
        _sort128(cand, idx, 0)
        rest = c - NET
        if rest <= 32:
            _pad(cand, idx, c, NET + 32)
            _sort32(cand, idx, NET)
            _merge32(cand, idx)
        elif rest <= 64:
            _pad(cand, idx, c, NET + 64)
            _sort64(cand, idx, NET)
            _merge64(cand, idx)
        else:
            _pad(cand, idx, c, 2 * NET)
            _sort128(cand, idx, NET)
            _merge128(cand, idx)
