"""The portable implementation: ``torch.mm`` into a cache-sized buffer, then a plain numba
selection (:mod:`tasks.model.scoring` has the contract). Runs wherever torch and numba do."""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

BUFFER_BYTES = 1 << 20  # scores held at once: about one L2 cache
MIN_BLOCK = 16  # rows multiplied at once, at least (see select)


def select(vectors, items_t, n_items, rows, indptr, indices, k, thresholds, out_scores, out_index, short) -> int:
    """Top-``k`` items of each row by ``vectors[r] . items_t[:, i]``, best first.

    :param vectors: (B, F) float32, C-contiguous.
    :param items_t: (F, I') float32; columns from ``n_items`` on are padding (ignored).
    :param n_items: the number of real items.
    :param rows: (B,) int64: the CSR row of ``indptr``/``indices`` whose items row ``r``
        excludes (``-1``: none).
    :param indptr: CSR row pointers, int64.
    :param indices: CSR item indexes, int64, each below ``n_items``.
    :param k: items per row, positive, at most ``n_items``.
    :param thresholds: (B,) float32: only scores strictly above it are candidates; a row
        with fewer than ``k`` candidates above a finite (or NaN) threshold is left unwritten
        and flagged in ``short``; ``-inf`` takes every selectable item.
    :param out_scores: (B, k) float32, written (padded with ``-inf``).
    :param out_index: (B, k) int64, written (padded with ``-1``).
    :param short: (B,) bool, set for short rows.
    :returns: how many rows are short.
    """
    items = torch.from_numpy(items_t)[:, :n_items]
    # Every multiply has the same number of rows (the last block padded with zeros): BLAS picks
    # its kernel, and so the rounding of a score, by the shape (MKL rounds a 1-7 row product
    # differently), and a user's scores must not depend on who else is in the call
    block = max(MIN_BLOCK, BUFFER_BYTES // (4 * n_items))
    users = torch.zeros((block, vectors.shape[1]), dtype=torch.float32)
    buf = torch.empty((block, n_items), dtype=torch.float32)
    n_short = 0
    with torch.no_grad():
        for s in range(0, len(vectors), block):
            e = min(s + block, len(vectors))
            users[:e - s] = torch.from_numpy(vectors[s:e])
            users[e - s:] = 0.0
            scores = torch.mm(users, items, out=buf).numpy()
            n_short += _select(scores[:e - s], rows[s:e], indptr, indices, k, thresholds[s:e], out_scores[s:e],
                               out_index[s:e], short[s:e])
    return n_short


@njit(cache=True, boundscheck=False, nogil=True)
def _select(scores, rows, indptr, indices, k, thresholds, out_scores, out_index, short):
    """:func:`select` on scores already computed (overwritten: seen items become ``-inf``)."""
    n_rows, n_items = scores.shape
    cand = np.empty(n_items, dtype=np.float32)
    idx = np.empty(n_items, dtype=np.int64)
    n_short = 0
    for r in range(n_rows):
        row = scores[r]
        user = rows[r]
        if user >= 0:
            for p in range(indptr[user], indptr[user + 1]):
                row[indices[p]] = -np.inf
        thr = thresholds[r]
        c = 0
        for i in range(n_items):
            if row[i] > thr:  # never NaN, never -inf
                cand[c] = row[i]
                idx[c] = i
                c += 1
        if c < k and thr != -np.inf:
            short[r] = True
            n_short += 1
            continue
        best = np.argsort(-cand[:c], kind="mergesort")  # stable: equal scores keep index order
        m = min(k, c)
        for q in range(m):
            out_scores[r, q] = cand[best[q]] + np.float32(0.0)  # -0.0 is written as 0.0
            out_index[r, q] = idx[best[q]]
        for q in range(m, k):
            out_scores[r, q] = -np.inf
            out_index[r, q] = -1
    return n_short
