"""The ranking head: which items a user will pick, from the binary "has rated" matrix.

A rating-trained MF predicts *how much* a user would like an item given that
they watch it; ranking a whole catalogue also needs *whether* they would pick
it. Two models of the binary user x item matrix ``X`` of training pairs:

- PureSVD (Cremonesi et al., 2010): a truncated SVD ``X ~ U S V^T``; item
  factors ``V``, user factors ``X V``. One randomised SVD over the sparse
  matrix, cost linear in the ratings. ``popularity_damping`` (beta) divides each
  item's column by ``n_i ** beta`` first, trading precision for coverage.
- EASE^R (Steck, 2019): the item-item ``B`` of a closed-form ridge regression
  of ``X`` on itself with a zero diagonal; scores ``X B``. Projected here on the
  top right singular vectors of ``B`` so it is a dot product too.

:func:`fit_ranking_head` blends the two (weight chosen on validation) when the
catalogue is small enough for the dense ``B``, else returns PureSVD. docs/model.md
("Figures") has the measured comparison with EASE^R, iALS, RP3beta and
item-kNN (``bench/train_bench.py``).
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import torch

log = logging.getLogger(__name__)


def _csr(rows: np.ndarray, cols: np.ndarray, values: torch.Tensor, shape: tuple[int, int],
         ordered: bool = False) -> torch.Tensor:
    """CSR of (rows, cols, values); ``ordered``: already sorted by row then column (no sort)."""
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        if ordered:
            return torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(cols), values, shape,
                                           check_invariants=False)
        order = np.argsort(rows, kind="stable")  # callers pass columns ascending within a row
        return torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(cols[order]),
                                       values[torch.from_numpy(order)], shape, check_invariants=False)


def fit_puresvd(u: np.ndarray, i: np.ndarray, n_users: int, n_items: int, *, factors: int,
                popularity_damping: float = 0.0, oversample: int = 10, power_iterations: int = 4,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """User and item factors of the ranking head from the (user, item) training pairs.

    Randomised SVD with power iterations (Halko, Martinsson and Tropp, 2011)
    over CSR copies of the matrix and its transpose: much faster than
    ``torch.svd_lowrank`` on a COO matrix, same factors (``make bench-train``).
    """
    t0 = time.perf_counter()
    pairs = u.astype(np.int64) * n_items + i
    pairs.sort()
    pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]  # a pair counts once
    rows, cols = pairs // n_items, pairs % n_items
    del pairs
    counts = torch.bincount(torch.from_numpy(cols), minlength=n_items).float().clamp(min=1)
    values = (counts ** (-popularity_damping))[torch.from_numpy(cols)]
    x = _csr(rows, cols, values, (n_users, n_items), ordered=True)  # pairs sorted: by row, then column
    xt = _csr(cols, rows, values, (n_items, n_users))
    del rows, cols, values
    k = min(factors, n_users, n_items)
    q = min(k + oversample, n_users, n_items)
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(x @ torch.randn(n_items, q, generator=gen)).Q  # (U, q)
    for _ in range(power_iterations):
        basis = torch.linalg.qr(x @ torch.linalg.qr(xt @ basis).Q).Q
    small = (xt @ basis).T  # (q, I) = basis^T X
    _, s, vt = torch.linalg.svd(small, full_matrices=False)
    v = vt[:k].T.contiguous()  # (I, k)
    p = x @ v  # (U, k): each user's row folded in
    info = {"factors": k, "singular_values": s[:k].tolist(), "seconds": time.perf_counter() - t0}
    log.info("ranking head: PureSVD k=%d in %.2fs", k, info["seconds"])
    return p, v, info


BLEND_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0)  # PureSVD's share of the blend, in units of each head's score spread


def ease_factors(x, lam: float, rank: int, exact_max_items: int = 1024, oversample: int = 10,
                 power_iterations: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """EASE^R's scores ``X B`` projected on the top-``rank`` right singular vectors ``V`` of
    ``B``: user vectors ``X B V``, item vectors ``V``. ``V`` is exact (eigenvectors of
    ``B^T B``) up to ``exact_max_items`` items, a randomised SVD above."""
    from tasks.train.item_models import ease

    b = ease(x, lam)
    n = len(b)
    rank = min(rank, n)
    if n <= exact_max_items:
        _, vectors = np.linalg.eigh(b.T @ b)  # ascending eigenvalues
        v = vectors[:, ::-1][:, :rank]
    else:
        width = min(rank + oversample, n)
        basis = np.linalg.qr(b.T @ np.random.default_rng(seed).standard_normal((n, width)))[0]
        for _ in range(power_iterations):
            basis = np.linalg.qr(b.T @ np.linalg.qr(b @ basis)[0])[0]
        _, _, wt = np.linalg.svd(b @ basis, full_matrices=False)
        v = basis @ wt[:rank].T  # (I, rank)
    return np.asarray(x @ (b @ v)), np.ascontiguousarray(v)


def _spread(p: np.ndarray, q: np.ndarray, seed: int = 0) -> float:
    """Standard deviation of the scores ``p q^T`` over (a sample of 512 users) x all items."""
    rows = np.random.default_rng(seed).permutation(len(p))[:512]
    return float(np.std(p[rows] @ q.T)) or 1.0


def _blend(ease_pq, svd_pq, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """One dot product per (user, item): ``ease / spread_e + weight * puresvd / spread_s``."""
    (pe, qe), (ps, qs) = ease_pq, svd_pq
    se = _spread(pe, qe)
    if weight == 0:
        return (pe / se).astype(np.float32), qe.astype(np.float32)
    ss = _spread(ps, qs)
    return (np.concatenate([pe / se, ps * (weight / ss)], 1).astype(np.float32),
            np.concatenate([qe, qs], 1).astype(np.float32))


def fit_ranking_head(u: np.ndarray, i: np.ndarray, n_users: int, n_items: int, *, factors: int,
                     ease_rank: int, ease_max_items: int, popularity_damping: float = 0.0, top_k: int = 10,
                     seed: int = 0, choice: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The ranking head: a blend of rank-``ease_rank`` EASE^R and PureSVD, or PureSVD alone.

    EASE^R (Steck 2019) is the strongest of the simple top-N baselines on
    MovieLens but needs the dense item-item matrix; above ``ease_max_items`` items
    (or with ``ease_rank=0``) the head is PureSVD. EASE's ``lambda`` and the
    blend weight are chosen on a validation split of these pairs (NDCG@``top_k``),
    then both parts are refitted on all of them. The head stays one dot product
    per (user, item), ``ease_rank + factors`` wide, so scoring is unchanged.

    ``choice``: an earlier fit's ``info["ease"]`` (its ``lambda`` and ``weight``) to reuse
    instead of validating again: the refit on every pair keeps the configuration the
    holdout estimate measured.
    """
    from tasks.train import item_models as IM

    t0 = time.perf_counter()
    svd_p, svd_q, info = fit_puresvd(u, i, n_users, n_items, factors=factors,
                                     popularity_damping=popularity_damping, seed=seed)
    if not ease_rank or n_items > ease_max_items:
        info["ease"] = {"skipped": f"{n_items} items > ease_max_items {ease_max_items}" if ease_rank
                        else "ease_rank is 0"}
        return svd_p, svd_q, info
    if choice is not None and "weight" in choice:
        info["ease"] = {**choice, "reused": True}
        return _final(u, i, n_users, n_items, choice["lambda"], choice["weight"], ease_rank, (svd_p, svd_q),
                      info, t0, seed)
    valid = IM.Validation(u, i, n_users, n_items, seed)
    if not valid.mask.any():  # no user with 5+ pairs: nothing to choose lambda or the blend on
        info["ease"] = {"skipped": "no user has 5+ pairs to validate EASE^R's lambda and the blend on"}
        return svd_p, svd_q, info

    def ndcg(p, q) -> float:
        pu = p[valid.users]
        return valid.ndcg(IM.top_n_of(lambda s, e: pu[s:e] @ q.T, valid.x_users, top_k), top_k)

    lam, lam_scores = IM.tune_ease(u, i, n_users, n_items, top_k, seed, validation=valid)
    ease_val = ease_factors(valid.x, lam, ease_rank, seed=seed)  # valid.x's Gram is cached: computed once
    vp, vq, _ = fit_puresvd(u[~valid.mask], i[~valid.mask], n_users, n_items, factors=factors,
                            popularity_damping=popularity_damping, seed=seed)
    svd_val = (vp.numpy(), vq.numpy())
    weights: dict[float | str, float] = {w: ndcg(*_blend(ease_val, svd_val, w)) for w in BLEND_WEIGHTS}
    weights["puresvd"] = ndcg(*svd_val)
    best = max(weights, key=lambda w: weights[w])
    info["ease"] = {"lambda": lam, "rank": ease_rank, "val_ndcg_by_lambda": {str(k): round(v, 4)
                                                                              for k, v in lam_scores.items()},
                    "val_ndcg_by_weight": {str(k): round(v, 4) for k, v in weights.items()}, "weight": best}
    log.info("ranking head: validation NDCG@%d %.4f", top_k, weights[best])
    return _final(u, i, n_users, n_items, lam, best, ease_rank, (svd_p, svd_q), info, t0, seed)


def _final(u, i, n_users, n_items, lam: float, weight: float | str, ease_rank: int, svd_pq, info: dict,
           t0: float, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The head fitted on all pairs for the chosen ``lambda`` and blend ``weight``."""
    from tasks.train import item_models as IM

    svd_p, svd_q = svd_pq
    if weight == "puresvd":
        info["seconds"] = time.perf_counter() - t0
        return svd_p, svd_q, info
    p, q = _blend(ease_factors(IM.binary(u, i, n_users, n_items), lam, ease_rank, seed=seed),
                  (svd_p.numpy(), svd_q.numpy()), float(weight))
    info.update(factors=p.shape[1], seconds=time.perf_counter() - t0)
    log.info("ranking head: EASE^R (lambda %g, rank %d) + %g x PureSVD k=%d in %.2fs",
             lam, ease_rank, float(weight), svd_q.shape[1], info["seconds"])
    return torch.from_numpy(p), torch.from_numpy(q), info
