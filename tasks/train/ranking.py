"""The ranking head: which items a user will pick, from the binary "has rated" matrix.

A rating-trained MF predicts *how much* a user would like an item given that
they watch it; ranking a whole catalogue also needs *whether* they would pick
it. Three models of the user x item matrix ``X`` of training pairs:

- PureSVD (Cremonesi et al., 2010): a truncated SVD ``X ~ U S V^T``; item
  factors ``V``, user factors ``X V``. One randomised SVD over the sparse
  matrix, cost linear in the ratings. ``popularity_damping`` (beta) divides each
  item's column by ``n_i ** beta`` first, trading precision for coverage.
- EASE^R (Steck, 2019): the item-item ``B`` of a closed-form ridge regression
  of ``X`` on itself with a zero diagonal; scores ``X B``. ``X`` is binary or
  weighted by each pair's rating. Projected here on the top right singular
  vectors of ``B`` so it is a dot product too.
- GF-CF's ideal low-pass filter (Shen et al., 2021): the top right singular vectors
  of the degree-normalised ``D_u^-1/2 X D_i^-1/2``, an exact low-rank dot product.

:func:`fit_ranking_head` blends the three (input, ``lambda``, weights and rank chosen on
validation) when the catalogue is small enough for the dense item-item matrices, else
returns PureSVD. docs/model.md ("Figures") has the measured comparison with EASE^R, iALS,
RP3beta and item-kNN (``bench/train_bench.py``).
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import scipy.sparse as sp
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
RATING_WEIGHTS = (0.0, 0.5)  # EASE^R's input: binary (0) or rating-weighted (item_models.rating_weighted)
LOWPASS_FACTORS = (32, 48, 64)  # ranks of GF-CF's low-pass part tried on validation
LOWPASS_WEIGHTS = (0.0, 0.25, 0.5, 1.0)  # its share of the blend, in units of its score spread


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


def lowpass_vectors(x, factors: int) -> tuple[np.ndarray, np.ndarray]:
    """GF-CF's ideal low-pass filter (Shen et al. 2021, "How Powerful is Graph Convolution
    for Recommendation?"): the top-``factors`` right singular vectors ``V`` of the normalised
    ``D_u^-1/2 X D_i^-1/2`` (eigenvectors of its dense item-item Gram matrix, largest first)
    and ``D_i^-1/2`` (``X`` binary). :func:`lowpass_factors` makes the head's part of them."""
    import scipy.linalg

    from tasks.train import item_models as IM

    n = x.shape[1]
    k = min(factors, n)
    user_deg = np.maximum(np.asarray(x.sum(1)).ravel(), 1.0)
    inv_sqrt = 1.0 / np.sqrt(np.maximum(np.asarray(x.sum(0)).ravel(), 1.0))
    g = IM.gram(sp.diags(1.0 / np.sqrt(user_deg)) @ x)
    g *= inv_sqrt[:, None]
    g *= inv_sqrt[None, :]
    _, vectors = scipy.linalg.eigh(g, subset_by_index=[n - k, n - 1])  # ascending
    return np.ascontiguousarray(vectors[:, ::-1]), inv_sqrt


def lowpass_factors(x, vectors: np.ndarray, inv_sqrt: np.ndarray, factors: int) -> tuple[np.ndarray, np.ndarray]:
    """The low-pass scores ``x_u D_i^-1/2 V V^T D_i^1/2`` as user vectors ``x_u D_i^-1/2 V``
    and item vectors ``D_i^1/2 V`` (the first ``factors`` of :func:`lowpass_vectors`' ``V``)."""
    v = vectors[:, :factors]
    return np.asarray(x @ (v * inv_sqrt[:, None])), v / inv_sqrt[:, None]


def _spread(p: np.ndarray, q: np.ndarray, seed: int = 0) -> float:
    """Standard deviation of the scores ``p q^T`` over (a sample of 512 users) x all items."""
    rows = np.random.default_rng(seed).permutation(len(p))[:512]
    return float(np.std(p[rows] @ q.T)) or 1.0


def _blend(parts: list[tuple[np.ndarray, np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray]:
    """One dot product per (user, item): the sum of each part's scores ``p q^T`` times its
    weight, in units of that part's score spread (parts of weight 0 left out)."""
    kept = [(p * (w / _spread(p, q)), q) for p, q, w in parts if w]
    return (np.concatenate([p for p, _ in kept], 1).astype(np.float32),
            np.concatenate([q for _, q in kept], 1).astype(np.float32))


def fit_ranking_head(u: np.ndarray, i: np.ndarray, n_users: int, n_items: int, *, factors: int,
                     ease_rank: int, ease_max_items: int, popularity_damping: float = 0.0, top_k: int = 10,
                     seed: int = 0, choice: dict | None = None, r: np.ndarray | None = None,
                     rating_weights: tuple[float, ...] = RATING_WEIGHTS) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The ranking head: rank-``ease_rank`` EASE^R blended with PureSVD and GF-CF's low-pass
    filter, or PureSVD alone.

    EASE^R (Steck 2019) is the strongest of the simple top-N baselines on
    MovieLens but needs the dense item-item matrix; above ``ease_max_items`` items
    (or with ``ease_rank=0``) the head is PureSVD. With the pairs' ratings ``r``, EASE^R's
    input is binary or rating-weighted (each of ``rating_weights``, see
    :func:`tasks.train.item_models.rating_weighted`), each with its own ``lambda``. The
    low-pass part (:func:`lowpass_vectors`) adds the smooth, normalised co-occurrence
    structure EASE^R's regression does not keep. EASE's input and ``lambda``, the
    PureSVD and low-pass weights (:data:`BLEND_WEIGHTS`, :data:`LOWPASS_WEIGHTS`) and the
    low-pass rank (:data:`LOWPASS_FACTORS`) are chosen on a validation split of these pairs
    (NDCG@``top_k``), then every part is refitted on all of them. The head stays one dot
    product per (user, item), at most ``ease_rank + factors + max(LOWPASS_FACTORS)`` wide,
    so scoring is unchanged.

    ``choice``: an earlier fit's ``info["ease"]`` (``lambda``, ``weight``, ``rating_weight``,
    ``lowpass_weight``, ``lowpass_factors``) to reuse instead of validating again: the refit
    on every pair keeps the configuration the holdout estimate measured.
    """
    from tasks.train import item_models as IM

    t0 = time.perf_counter()
    svd_p, svd_q, info = fit_puresvd(u, i, n_users, n_items, factors=factors,
                                     popularity_damping=popularity_damping, seed=seed)
    if not ease_rank or n_items > ease_max_items:
        info["ease"] = {"skipped": f"{n_items} items > ease_max_items {ease_max_items}" if ease_rank
                        else "ease_rank is 0"}
        return svd_p, svd_q, info
    if r is None:
        rating_weights = (0.0,)
    if choice is not None and "weight" in choice:
        info["ease"] = {**choice, "reused": True}
        return _final(u, i, r, n_users, n_items, choice, ease_rank, (svd_p, svd_q),
                      info, t0, seed)
    valid = IM.Validation(u, i, n_users, n_items, seed)
    if not valid.mask.any():  # no user with 5+ pairs: nothing to choose lambda or the blend on
        info["ease"] = {"skipped": "no user has 5+ pairs to validate EASE^R's lambda and the blend on"}
        return svd_p, svd_q, info

    def ndcg(p, q) -> float:
        pu = p[valid.users]
        return valid.ndcg(IM.top_n_of(lambda s, e: pu[s:e] @ q.T, valid.x_users, top_k), top_k)

    vp, vq, _ = fit_puresvd(u[~valid.mask], i[~valid.mask], n_users, n_items, factors=factors,
                            popularity_damping=popularity_damping, seed=seed)
    svd_val = (vp.numpy(), vq.numpy())
    vectors, inv_sqrt = lowpass_vectors(valid.x, max(LOWPASS_FACTORS))
    lowpass_val = {k: lowpass_factors(valid.x, vectors, inv_sqrt, k) for k in LOWPASS_FACTORS}
    # (rating weight, PureSVD weight, low-pass rank, low-pass weight) -> validation NDCG
    scores: dict[tuple[float, float | str, int, float], float] = {(0.0, "puresvd", 0, 0.0): ndcg(*svd_val)}
    lams: dict[float, float] = {}
    lam_scores: dict[str, dict] = {}
    for rw in rating_weights:  # the same split each time (it depends on u and seed): comparable scores
        v = valid if not rw else IM.Validation(u, i, n_users, n_items, seed, r=r, rating_weight=rw)
        lams[rw], by_lam = IM.tune_ease(u, i, n_users, n_items, top_k, seed, validation=v)
        lam_scores[str(rw)] = {str(k): round(s, 4) for k, s in by_lam.items()}
        ep, eq = ease_factors(v.x, lams[rw], ease_rank, seed=seed)  # v.x's Gram is cached: computed once
        for w in BLEND_WEIGHTS:
            for k in LOWPASS_FACTORS:
                for lw in LOWPASS_WEIGHTS:
                    if lw or k == LOWPASS_FACTORS[0]:  # without the low-pass part its rank does not matter
                        scores[rw, w, k if lw else 0, lw] = ndcg(*_blend([(ep, eq, 1.0), (*svd_val, w),
                                                                          (*lowpass_val[k], lw)]))
    rw, best, k, lw = max(scores, key=lambda key: scores[key])
    lam = lams[rw] if best != "puresvd" else lams[0.0]
    ranked = sorted(scores, key=lambda key: -scores[key])[:10]
    info["ease"] = {"lambda": lam, "rank": ease_rank, "rating_weight": rw, "binary_lambda": lams[0.0],
                    "weight": best, "lowpass_factors": k, "lowpass_weight": lw, "val_ndcg": round(scores[ranked[0]], 4),
                    "val_ndcg_by_lambda": lam_scores,
                    "val_ndcg_best_10": {"rating weight {}, PureSVD {}, low-pass k {} x {}".format(*key):
                                         round(scores[key], 4) for key in ranked},
                    "val_ndcg_without_lowpass": round(max(s for key, s in scores.items() if not key[3]), 4)}
    log.info("ranking head: validation NDCG@%d %.4f", top_k, scores[ranked[0]])
    return _final(u, i, r, n_users, n_items, info["ease"], ease_rank, (svd_p, svd_q), info, t0, seed)


def _final(u, i, r, n_users, n_items, choice: dict, ease_rank: int, svd_pq, info: dict, t0: float,
           seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The head fitted on all pairs for the chosen EASE^R input and ``lambda``, and blend weights."""
    from tasks.train import item_models as IM

    svd_p, svd_q = svd_pq
    weight = choice["weight"]
    if weight == "puresvd":
        info["seconds"] = time.perf_counter() - t0
        return svd_p, svd_q, info
    rating_weight = choice.get("rating_weight", 0.0) if r is not None else 0.0
    lam, k, lw = choice["lambda"], choice.get("lowpass_factors", 0), choice.get("lowpass_weight", 0.0)
    x = IM.binary(u, i, n_users, n_items)
    lowpass = lowpass_factors(x, *lowpass_vectors(x, k), k) if lw else (None, None)
    if rating_weight:
        x = IM.rating_weighted(u, i, r, n_users, n_items, rating_weight)
    p, q = _blend([(*ease_factors(x, lam, ease_rank, seed=seed), 1.0), (svd_p.numpy(), svd_q.numpy(), float(weight)),
                   (*lowpass, lw)])
    info.update(factors=p.shape[1], seconds=time.perf_counter() - t0)
    log.info("ranking head: EASE^R (lambda %g, rank %d, rating weight %g) + %g x PureSVD k=%d + %g x low-pass "
             "k=%d in %.2fs", lam, ease_rank, rating_weight, float(weight), svd_q.shape[1], lw, k, info["seconds"])
    return torch.from_numpy(p), torch.from_numpy(q), info
