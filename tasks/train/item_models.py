"""EASE^R on the binary "has rated" matrix (Steck 2019), the strongest of the simple
top-N baselines (Dacrema et al., "Are we really making much progress?", RecSys 2019):
the ranking head's item-item part and the gate's EASE^R baseline.

An item-item model scores ``X W``; :func:`top_n` ranks a user's unseen items by it,
in blocks of users so no (users x items) matrix is held whole. ``lambda`` is chosen on
a validation split carved from the training pairs (:class:`Validation`,
:func:`tune_ease`), never on the evaluation holdout. The dense item-item matrix costs
``8 * n_items^2`` bytes (``TrainConfig.ease_max_items`` caps the catalogue size).
The baselines only the benchmark runs (RP3beta, item-kNN, their grids) are in
``bench/baselines.py``: the jobs image does not ship them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from tasks.model import metrics as M

log = logging.getLogger(__name__)

GRAM_BLOCK = 4096  # users per dense block of the Gram product
EASE_LAMBDAS = (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0)


def binary(u: np.ndarray, i: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    x = sp.csr_matrix((np.ones(len(u), dtype=np.float64), (u, i)), shape=(n_users, n_items))
    x.data[:] = 1.0  # a pair counts once
    return x


def rating_weighted(u: np.ndarray, i: np.ndarray, r: np.ndarray, n_users: int, n_items: int,
                    weight: float) -> sp.csr_matrix:
    """The "has rated" matrix with each pair weighted by its rating: ``1 + weight * (r - mean) /
    (max - min)`` (a pair rated twice: its mean rating), so the entries average 1 and ``weight``
    0 is :func:`binary`. A user's well-liked items then count more in EASE^R's regression, both
    as inputs and as targets. ``weight`` < 1 keeps every entry positive."""
    if not weight:
        return binary(u, i, n_users, n_items)
    r = np.asarray(r, dtype=np.float64)
    spread = float(r.max() - r.min()) or 1.0
    w = 1.0 + weight * (r - r.mean()) / spread
    x = sp.csr_matrix((w, (u, i)), shape=(n_users, n_items))
    counts = sp.csr_matrix((np.ones(len(u)), (u, i)), shape=(n_users, n_items))
    x.sum_duplicates()
    counts.sum_duplicates()
    x.data /= counts.data  # same sparsity pattern and order: the mean weight of a repeated pair
    return x


def gram(x: sp.csr_matrix) -> np.ndarray:
    """The dense item-item ``X^T X``, computed once per matrix: tuning calls it for every
    grid point, and at MovieLens-1M shape it costs more than the inverse (kept on ``x``)."""
    cached = getattr(x, "_recsys_gram", None)
    if cached is None:
        cached = np.zeros((x.shape[1], x.shape[1]))
        for s in range(0, x.shape[0], GRAM_BLOCK):  # dense blocks of users: BLAS, bounded memory
            block = x[s:s + GRAM_BLOCK].toarray()
            cached += block.T @ block
        x._recsys_gram = cached
    return cached


def ease(x: sp.csr_matrix, lam: float) -> np.ndarray:
    """EASE^R (Steck 2019): ``B = I - P diag(1/diag P)``, ``P = (X^T X + lam I)^-1``, zero diagonal."""
    g = gram(x).copy()
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = p / -np.diag(p)
    b[np.diag_indices_from(b)] = 0.0
    return b


def top_n(x: sp.csr_matrix, w: np.ndarray, n: int, block: int = 2048) -> np.ndarray:
    """Each user's ``n`` best unseen items by ``x_u W``, best first, (U, n); ties by lower index."""
    return top_n_of(lambda s, e: np.asarray(x[s:e] @ w), x, n, block)


def top_n_of(scores_of: Callable[[int, int], np.ndarray], seen: sp.csr_matrix, n: int,
             block: int = 2048) -> np.ndarray:
    """Each user's ``n`` best items not in ``seen`` by ``scores_of(start, end)`` (the dense
    score rows of users ``start..end-1``), best first, (U, n); ties by lower index."""
    n_users, n_items = seen.shape
    out = np.empty((n_users, n), dtype=np.int64)
    for s in range(0, n_users, block):
        scores = np.array(scores_of(s, min(s + block, n_users)), dtype=np.float64)
        scores[seen[s:s + block].nonzero()] = -np.inf
        part = np.argpartition(-scores, n - 1, axis=1)[:, :n] if n < n_items else \
            np.tile(np.arange(n_items), (len(scores), 1))
        order = np.lexsort((part, -np.take_along_axis(scores, part, 1)), axis=1)
        out[s:s + block] = np.take_along_axis(part, order, 1)[:, :n]
    return out


def holdout_csr(u: np.ndarray, i: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of each user's pairs, for :func:`tasks.model.metrics.ranking_metrics`."""
    indptr = np.concatenate([[0], np.cumsum(np.bincount(u, minlength=n_users))])
    return indptr, i[np.argsort(u, kind="stable")]


def rank_within_user(u: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's position in a seeded random order of its user's pairs, and pairs per user."""
    key = np.random.default_rng(seed).random(len(u))
    order = np.lexsort((key, u))
    counts = np.bincount(u)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(u), dtype=np.int64)
    rank[order] = np.arange(len(u)) - start[u[order]]
    return rank, counts


def validation_split(u: np.ndarray, share: float = 0.1, seed: int = 0) -> np.ndarray:
    """Boolean mask: a random ``share`` of each user's pairs (at least one for users with 5+)."""
    rank, counts = rank_within_user(u, seed)
    take = np.where(counts >= 5, np.maximum(1, np.round(share * counts)), 0)
    return rank < take[u]


VALIDATION_USERS = 2048  # users whose validation NDCG picks the parameters (a seeded sample above this)


def validation_users(u: np.ndarray, val: np.ndarray, n_users: int, seed: int = 0) -> np.ndarray:
    """Sorted users with validation pairs, at most :data:`VALIDATION_USERS` of them (seeded)."""
    users = np.unique(u[val])
    if len(users) > VALIDATION_USERS:
        users = np.sort(np.random.default_rng(seed).choice(users, VALIDATION_USERS, replace=False))
    return users


class Validation:
    """A validation split of training pairs, built once for every choice made on it:
    ``mask`` (the held-out pairs), ``x`` (the binary matrix of the rest), ``users`` (at most
    :data:`VALIDATION_USERS` users with held-out pairs), their rows ``x_users`` and held-out
    items ``rel``. :meth:`ndcg` scores recommendations for ``users``. With ratings ``r`` and a
    ``rating_weight``, ``x`` is :func:`rating_weighted` (same split: it depends on ``u`` and
    ``seed`` only)."""

    def __init__(self, u: np.ndarray, i: np.ndarray, n_users: int, n_items: int, seed: int = 0,
                 r: np.ndarray | None = None, rating_weight: float = 0.0):
        self.mask = validation_split(u, seed=seed)
        self.n_items = n_items
        self.x = (rating_weighted(u[~self.mask], i[~self.mask], r[~self.mask], n_users, n_items, rating_weight)
                  if rating_weight and r is not None else binary(u[~self.mask], i[~self.mask], n_users, n_items))
        self.users = validation_users(u, self.mask, n_users, seed)
        keep = self.mask & np.isin(u, self.users)
        self.rel = holdout_csr(np.searchsorted(self.users, u[keep]), i[keep], len(self.users))
        self.x_users = self.x[self.users]

    def ndcg(self, recs: np.ndarray, k: int) -> float:
        return M.ranking_metrics(recs, *self.rel, self.n_items, k)[f"ndcg@{k}"]


def tune_ease(u: np.ndarray, i: np.ndarray, n_users: int, n_items: int, k: int = 10, seed: int = 0,
              lambdas=EASE_LAMBDAS, validation: Validation | None = None) -> tuple[float, dict]:
    """:func:`tune` for EASE^R, from one eigendecomposition ``G = V L V^T`` instead of an
    inverse per ``lambda``: ``P = V (L + lambda)^-1 V^T``, and over unseen items ``X B``
    ranks as ``-X P diag(P)^-1`` (``B = I - P diag(P)^-1``; the ``I`` only touches seen
    items). Same choice as :func:`tune` with :func:`ease`, about half the time at
    MovieLens-1M shape. ``validation``: the split of ``(u, i)`` already built (same seed)."""
    v = validation or Validation(u, i, n_users, n_items, seed)
    evals, vecs = np.linalg.eigh(gram(v.x))
    xv = np.asarray(v.x_users @ vecs)  # (users, I)
    scores: dict[float, float] = {}
    for lam in lambdas:
        inv = 1.0 / (evals + lam)
        diag = (vecs ** 2) @ inv  # diag(P)
        def scores_of(s: int, e: int, inv=inv, diag=diag) -> np.ndarray:
            return -((xv[s:e] * inv) @ vecs.T) / diag

        recs = top_n_of(scores_of, v.x_users, k)
        scores[lam] = v.ndcg(recs, k)
    return max(scores, key=lambda p: scores[p]), scores


