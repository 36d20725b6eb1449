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
    """Most-popular baseline: the k most-rated items each user has not seen."""
    counts = np.bincount(train_items, minlength=n_items).astype(np.float64)
    order = np.argsort(-counts, kind="stable")
    n_users = len(seen_indptr) - 1
    max_seen = int(np.diff(seen_indptr).max(initial=0))
    cand = order[: k + max_seen]  # enough candidates for the heaviest user
    seen = np.zeros((n_users, len(cand)), dtype=bool)
    pos = np.full(n_items, -1)
    pos[cand] = np.arange(len(cand))
    rows = np.repeat(np.arange(n_users), np.diff(seen_indptr))
    cols = pos[seen_indices]
    ok = cols >= 0
    seen[rows[ok], cols[ok]] = True
    out = np.full((n_users, k), -1, dtype=np.int64)
    ranks = np.cumsum(~seen, 1)
    for j in range(k):  # k is small: one vectorised pass per rank
        col = np.argmax((ranks == j + 1) & ~seen, axis=1)
        valid = ((ranks == j + 1) & ~seen).any(1)
        out[valid, j] = cand[col[valid]]
    return out
