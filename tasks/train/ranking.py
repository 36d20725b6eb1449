"""The ranking head: PureSVD on the "has rated" matrix (Cremonesi et al., 2010).

A rating-trained MF predicts *how much* a user would like an item given that
they watch it; ranking a whole catalogue also needs *whether* they would pick
it. The ranking head is a truncated SVD of the binary user x item matrix of
training pairs, ``X ~ U S V^T``: item factors ``V``, user factors ``X V`` (the
user's row folded into the item space), relevance ``x_u V v_i``. One
randomised SVD (``torch.svd_lowrank``) over the sparse matrix: no epochs, cost
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

import numpy as np
import torch

log = logging.getLogger(__name__)


def fit_puresvd(u: np.ndarray, i: np.ndarray, n_users: int, n_items: int, *, factors: int,
                popularity_damping: float = 0.0, oversample: int = 10, power_iterations: int = 4,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """User and item factors of the ranking head from the (user, item) training pairs."""
    t0 = time.perf_counter()
    pairs = np.unique(u.astype(np.int64) * n_items + i)  # a pair counts once
    rows, cols = pairs // n_items, pairs % n_items
    counts = torch.bincount(torch.from_numpy(cols), minlength=n_items).float().clamp(min=1)
    weight = counts ** (-popularity_damping)
    x = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])),
                                weight[torch.from_numpy(cols)], (n_users, n_items),
                                is_coalesced=True, check_invariants=False)
    k = min(factors, n_users, n_items)
    q = min(k + oversample, n_users, n_items)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        _, s, v = torch.svd_lowrank(x, q=q, niter=power_iterations)
    finally:
        torch.random.set_rng_state(state)
    v = v[:, :k].contiguous()
    p = torch.sparse.mm(x, v)  # (U, k): each user's row folded in
    info = {"factors": k, "singular_values": s[:k].tolist(), "seconds": time.perf_counter() - t0}
    log.info("ranking head: PureSVD k=%d in %.2fs", k, info["seconds"])
    return p, v, info
