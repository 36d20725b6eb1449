"""The ranking head: PureSVD on the "has rated" matrix (Cremonesi et al., 2010).

A rating-trained MF predicts *how much* a user would like an item given that
they watch it; ranking a whole catalogue also needs *whether* they would pick
it. The ranking head is a truncated SVD of the binary user x item matrix of
training pairs, ``X ~ U S V^T``: item factors ``V``, user factors ``X V`` (the
user's row folded into the item space), relevance ``x_u V v_i``. One
randomised SVD over the sparse matrix: no epochs, cost
linear in the ratings, deterministic for a seed.

``popularity_damping`` (beta) divides each item's column by ``n_i ** beta``
before the decomposition, trading a little precision for catalogue coverage.

Measured against implicit ALS (Hu et al. 2008, Rendle et al. 2022 setting) on
the synthetic MovieLens-100k stand-in, 75/25 per-user split: PureSVD k=16
NDCG@10 0.456 in 0.07 s, iALS k=32 0.466 in 0.56 s. PureSVD is within 2% at an
eighth of the cost, so it is the default head.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import torch

log = logging.getLogger(__name__)


def _csr(rows: np.ndarray, cols: np.ndarray, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    order = np.lexsort((cols, rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(cols[order]),
                                       values[torch.from_numpy(order)], shape, check_invariants=False)


def fit_puresvd(u: np.ndarray, i: np.ndarray, n_users: int, n_items: int, *, factors: int,
                popularity_damping: float = 0.0, oversample: int = 10, power_iterations: int = 4,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """User and item factors of the ranking head from the (user, item) training pairs.

    Randomised SVD with power iterations (Halko, Martinsson and Tropp, 2011)
    over CSR copies of the matrix and its transpose: about 30x faster than
    ``torch.svd_lowrank`` on a COO matrix at MovieLens-1M scale, same factors.
    """
    t0 = time.perf_counter()
    pairs = np.sort(u.astype(np.int64) * n_items + i)
    pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]  # a pair counts once
    rows, cols = pairs // n_items, pairs % n_items
    counts = torch.bincount(torch.from_numpy(cols), minlength=n_items).float().clamp(min=1)
    values = (counts ** (-popularity_damping))[torch.from_numpy(cols)]
    x = _csr(rows, cols, values, (n_users, n_items))
    xt = _csr(cols, rows, values, (n_items, n_users))
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
