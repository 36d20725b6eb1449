"""Rating and top-N metrics, vectorised over users.

Ranking metrics take a (U, K) matrix of recommended item indexes (``-1`` for
padding) and each user's relevant holdout items as CSR (indptr, indices).
"""

from __future__ import annotations

import numpy as np


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, float) - np.asarray(truth, float)) ** 2)))


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, float) - np.asarray(truth, float))))


def hits_matrix(recs: np.ndarray, rel_indptr: np.ndarray, rel_indices: np.ndarray, n_items: int) -> np.ndarray:
    """Boolean (U, K): whether recs[u, j] is one of user u's relevant items."""
    n_users, k = recs.shape
    hits = np.zeros((n_users, k), dtype=bool)
    lengths = np.diff(rel_indptr)
    rel_keys = np.repeat(np.arange(n_users, dtype=np.int64), lengths) * n_items + rel_indices
    rec_keys = np.arange(n_users, dtype=np.int64)[:, None] * n_items + recs
    valid = recs >= 0
    hits[valid] = np.isin(rec_keys[valid], rel_keys)
    return hits


def ranking_metrics(recs: np.ndarray, rel_indptr: np.ndarray, rel_indices: np.ndarray,
                    n_items: int, k: int = 10) -> dict[str, float]:
    """precision@k, recall@k, ndcg@k, map@k over users with at least one relevant item,
    and catalogue coverage over all recommendation lists."""
    recs = recs[:, :k]
    n_rel = np.diff(rel_indptr)
    has = n_rel > 0
    hits = hits_matrix(recs, rel_indptr, rel_indices, n_items)[has]
    n_rel = n_rel[has]
    if len(n_rel) == 0:
        raise ValueError("no user has a relevant holdout item")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(1)
    ideal = np.cumsum(discounts)[np.minimum(n_rel, k) - 1]
    precision_at = np.cumsum(hits, 1) / np.arange(1, k + 1)
    ap = (precision_at * hits).sum(1) / np.minimum(n_rel, k)
    shown = np.unique(recs[recs >= 0])
    return {
        f"precision@{k}": float(hits.sum(1).mean() / k),
        f"recall@{k}": float((hits.sum(1) / n_rel).mean()),
        f"ndcg@{k}": float((dcg / ideal).mean()),
        f"map@{k}": float(ap.mean()),
        "coverage": float(len(shown) / n_items),
    }


def popularity_recs(train_items: np.ndarray, n_items: int, seen_indptr: np.ndarray,
                    seen_indices: np.ndarray, k: int) -> np.ndarray:
    """Most-popular baseline: the k most-rated items each user has not seen, (U, k).

    Without a (users x items) matrix: with items in popularity order and a
    user's seen ranks sorted, ``s_0 < s_1 < ...``, the j-th unseen position is
    ``j + #{t : s_t - t <= j}`` (``s_t - t`` is non-decreasing), one
    ``searchsorted`` over all users at once. Ties rank by lower item index.
    """
    counts = np.bincount(train_items, minlength=n_items)
    order = np.argsort(-counts, kind="stable")
    rank_of = np.empty(n_items, dtype=np.int64)
    rank_of[order] = np.arange(n_items)
    n_users = len(seen_indptr) - 1
    users = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(seen_indptr))
    pairs = np.sort(users * n_items + rank_of[seen_indices])  # by user, then rank
    pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]  # no repeats
    users, ranks = pairs // n_items, pairs % n_items
    lengths = np.bincount(users, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    t = np.arange(len(ranks)) - np.repeat(starts, lengths)  # index within the user
    span = n_items + k + 1  # keys of one user stay inside [u * span, (u + 1) * span)
    keys = users * span + (ranks - t)
    j = np.arange(k)
    queries = np.arange(n_users, dtype=np.int64)[:, None] * span + j[None, :]
    before = np.searchsorted(keys, queries.ravel(), side="right").reshape(n_users, k)
    shift = before - starts[:, None]  # seen items ranked before the j-th unseen one
    pos = j[None, :] + shift
    return np.where(pos < n_items, order[np.minimum(pos, n_items - 1)], -1)
