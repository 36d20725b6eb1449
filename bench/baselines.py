"""Baselines only the benchmark runs (``bench/train_bench.py``): item-kNN and RP3beta
(Dacrema et al., "Are we really making much progress?", RecSys 2019), their grids and
tuning on a validation split of the training pairs. The pipeline's own item-item code
(EASE^R, the validation split, top-N) is ``tasks.train.item_models``; nothing in
``tasks/`` imports this file, so the jobs image does not ship it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.train.item_models import (  # noqa: E402
    EASE_LAMBDAS,
    Validation,
    binary,
    ease,
    gram,
    top_n,
    tune_ease,
)

log = logging.getLogger(__name__)

KNN_GRID = tuple((k, shrink) for k in (50, 100, 200, 400) for shrink in (0.0, 10.0, 50.0))
RP3_GRID = tuple((alpha, beta) for alpha in (0.6, 0.8, 1.0) for beta in (0.0, 0.2, 0.4, 0.6))


def item_knn(x: sp.csr_matrix, k: int, shrink: float) -> np.ndarray:
    """Cosine item-item similarity with shrinkage, each item's ``k`` nearest neighbours kept."""
    g = gram(x)
    norms = np.sqrt(np.diag(g))
    sim = g / (np.outer(norms, norms) + shrink + 1e-9)
    np.fill_diagonal(sim, 0.0)
    return _keep_top(sim, k)


def rp3beta(x: sp.csr_matrix, alpha: float, beta: float, k: int = 200) -> np.ndarray:
    """RP3beta (Paudel et al. 2017): item->user->item transition probabilities to the power
    ``alpha``, divided by the target's popularity to the ``beta``, top ``k`` per item."""
    user_deg = np.asarray(x.sum(1)).ravel()
    item_deg = np.asarray(x.sum(0)).ravel()
    p_ui = sp.diags(1.0 / np.maximum(user_deg, 1)) @ x
    p_iu = sp.diags(1.0 / np.maximum(item_deg, 1)) @ x.T
    w = (p_iu @ p_ui).toarray() ** alpha
    w /= np.maximum(item_deg, 1)[None, :] ** beta
    np.fill_diagonal(w, 0.0)
    return _keep_top(w, k)


def _keep_top(w: np.ndarray, k: int) -> np.ndarray:
    """Zero all but each row's ``k`` largest entries (row ``i``: item ``i``'s neighbours)."""
    if k >= w.shape[1]:
        return w
    cut = np.argpartition(-w, k, axis=1)[:, k:]
    np.put_along_axis(w, cut, 0.0, axis=1)
    return w


def tune(fit: Callable[..., np.ndarray], grid, u: np.ndarray, i: np.ndarray, n_users: int, n_items: int,
         k: int = 10, seed: int = 0) -> tuple[tuple, dict]:
    """The grid point with the best validation NDCG@k, on a split of the training pairs
    (scored for at most :data:`VALIDATION_USERS` users), and each point's score."""
    v = Validation(u, i, n_users, n_items, seed)
    scores: dict = {}
    for point in grid:
        args = point if isinstance(point, tuple) else (point,)
        scores[point] = v.ndcg(top_n(v.x_users, fit(v.x, *args), k), k)
    best = max(scores, key=lambda p: scores[p])
    return best, scores


def fit_tuned(name: str, u: np.ndarray, i: np.ndarray, n_users: int, n_items: int, k: int = 10,
              seed: int = 0) -> tuple[np.ndarray, dict]:
    """One baseline, tuned on validation, refitted on all of ``(u, i)``: its W and a note
    (chosen parameters, validation scores, seconds)."""
    choices: dict[str, tuple[Any, Any]] = {"ease": (ease, EASE_LAMBDAS), "item_knn": (item_knn, KNN_GRID),
                                           "rp3beta": (rp3beta, RP3_GRID)}
    fit, grid = choices[name]
    t0 = time.perf_counter()
    best, scores = (tune_ease(u, i, n_users, n_items, k, seed) if name == "ease"
                    else tune(fit, grid, u, i, n_users, n_items, k, seed))
    args = best if isinstance(best, tuple) else (best,)
    w = fit(binary(u, i, n_users, n_items), *args)
    note = {"params": list(args), "val_ndcg": {str(p): round(v, 4) for p, v in scores.items()},
            "seconds": time.perf_counter() - t0}
    log.info("%s baseline: params %s (validation NDCG@%d %.4f) in %.1fs", name, args, k, scores[best],
             note["seconds"])
    return w, note
