"""Alternating least squares for the rating head, vectorised.

With one side fixed, every row of the other side is a small ridge regression
with a closed-form solution. Each half-step builds all the per-row normal
equations at once and solves them in one batched Cholesky, so there is no
per-user Python loop and the result is deterministic for a seed on CPU.

:func:`fit_explicit` fits ``mu + b_u + b_i + <p_u, q_i>`` on the observed
ratings, L2 with frequency scaling (ALS-WR, Zhou et al. 2008: the penalty
grows with the number of ratings of the row), biases with their own penalty.

The normal equations of row ``u`` are ``sum_{j in N(u)} w_j x_j x_j^T`` over
the row's observed columns. Rows are grouped in buckets of similar length
(powers of two), padded to the bucket width and reduced with a batched matmul
(:class:`Buckets`), in chunks of bounded memory.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

# Elements of one padded gather (rows x width x dim); bounds the peak memory of a half-step.
CHUNK_ELEMENTS = 1 << 24
TRAIN_RMSE_SAMPLE = 1 << 20


@dataclass
class Bucket:
    rows: torch.Tensor  # (n,) row indexes
    pos: torch.Tensor  # (n, width) positions into the CSR arrays; the pad points at a dummy slot


class Buckets:
    """Rows of a CSR matrix grouped by length, for batched normal equations."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray):
        self.n_rows = len(indptr) - 1
        self.nnz = len(indices)
        self.indices = torch.from_numpy(np.append(indices, 0).astype(np.int64))  # slot nnz = pad
        lengths = np.diff(indptr)
        self.lengths = torch.from_numpy(lengths.astype(np.float32))
        self.buckets: list[Bucket] = []
        nonzero = lengths > 0
        width_of = np.zeros_like(lengths)
        width_of[nonzero] = 2 ** np.ceil(np.log2(lengths[nonzero])).astype(np.int64)
        for width in np.unique(width_of[nonzero]):
            rows = np.flatnonzero(width_of == width)
            offs = np.arange(width)[None, :]
            pos = indptr[rows][:, None] + offs
            pos = np.where(offs < lengths[rows][:, None], pos, self.nnz)
            self.buckets.append(Bucket(torch.from_numpy(rows), torch.from_numpy(pos.astype(np.int64))))

    def normal_equations(self, x: torch.Tensor, weight: torch.Tensor | None,
                         target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``A[r] = sum_j w_j x_{c_j} x_{c_j}^T`` and ``b[r] = sum_j w_j t_j x_{c_j}`` for every row.

        ``x`` is (n_cols, d); ``weight`` and ``target`` are per stored entry
        (length nnz, ``None`` means all ones). Empty rows get zeros.
        """
        d = x.shape[1]
        a = torch.zeros(self.n_rows, d, d)
        b = torch.zeros(self.n_rows, d)
        ones = torch.ones(self.nnz + 1)
        w = ones if weight is None else torch.cat([weight, torch.zeros(1)])
        w[-1] = 0.0  # the pad slot contributes nothing
        t = ones if target is None else torch.cat([target, torch.zeros(1)])
        wt = w * t
        for bucket in self.buckets:
            width = bucket.pos.shape[1]
            step = max(1, CHUNK_ELEMENTS // (width * d))
            for s in range(0, len(bucket.rows), step):
                pos = bucket.pos[s:s + step]
                xs = x[self.indices[pos]]  # (n, width, d)
                rows = bucket.rows[s:s + step]
                a[rows] = torch.bmm((xs * w[pos].unsqueeze(2)).transpose(1, 2), xs)
                b[rows] = torch.bmm(wt[pos].unsqueeze(1), xs).squeeze(1)
        return a, b


def solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched symmetric positive-definite solve (Cholesky), chunked."""
    out = torch.empty_like(b)
    step = 65536
    for s in range(0, len(a), step):
        chol = torch.linalg.cholesky(a[s:s + step])
        out[s:s + step] = torch.cholesky_solve(b[s:s + step].unsqueeze(2), chol).squeeze(2)
    return out


@dataclass
class Side:
    """One side of the matrix (users or items): its CSR view and fitted parameters."""

    buckets: Buckets
    col: torch.Tensor  # per stored entry: the other side's index
    entry: torch.Tensor  # per stored entry: position in the original rating arrays


def _sides(u: np.ndarray, i: np.ndarray, n_users: int, n_items: int) -> tuple[Side, Side]:
    out = []
    for rows, cols, n in ((u, i, n_users), (i, u, n_items)):
        order = np.lexsort((cols, rows))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
        buckets = Buckets(indptr, cols[order])
        out.append(Side(buckets, torch.from_numpy(cols[order].astype(np.int64)), torch.from_numpy(order)))
    return out[0], out[1]


def fit_explicit(u: np.ndarray, i: np.ndarray, r: np.ndarray, n_users: int, n_items: int, *,
                 factors: int, reg: float, reg_bias: float, iterations: int, seed: int,
                 val: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, patience: int = 1,
                 min_improvement: float = 5e-4,
                 rating_range: tuple[float, float] = (0.5, 5.0), init_std: float = 0.1,
                 ) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Biased MF by ALS on the observed ratings; early-stopped on validation RMSE.

    Row ``u`` solves ``min sum_j (r_uj - mu - b_j - b_u - p_u.q_j)^2 + reg*n_u*|p_u|^2
    + reg_bias*b_u^2``: ``[p_u, b_u]`` together against ``[q_j, 1]``.
    Stops after ``patience`` iterations that improve validation RMSE by less than
    ``min_improvement`` and keeps the best iterate.
    Returns the parameters (``mu``, ``p``, ``q``, ``bu``, ``bi``) and a history per iteration.
    """
    gen = torch.Generator().manual_seed(seed)
    users, items = _sides(u, i, n_users, n_items)
    rt = torch.from_numpy(r.astype(np.float32))
    mu = float(rt.mean())
    p = torch.randn(n_users, factors, generator=gen) * init_std
    q = torch.randn(n_items, factors, generator=gen) * init_std
    bu, bi = torch.zeros(n_users), torch.zeros(n_items)
    # training RMSE for the log and the report, on a fixed sample: a full pass would
    # cost as much as a half-step at 25M ratings
    sample = torch.from_numpy(np.sort(np.random.default_rng(seed).permutation(len(r))[:TRAIN_RMSE_SAMPLE]))
    ut, it, rs = (torch.from_numpy(u.astype(np.int64))[sample], torch.from_numpy(i.astype(np.int64))[sample],
                  rt[sample])
    history: list[dict] = []
    best, best_params, bad = math.inf, None, 0
    eye = torch.eye(factors + 1)
    for iteration in range(1, iterations + 1):
        t0 = time.perf_counter()
        for side, own, other, own_b, other_b in ((users, p, q, bu, bi), (items, q, p, bi, bu)):
            x = torch.cat([other, torch.ones(len(other), 1)], 1)  # (n_other, k+1)
            target = (rt - mu)[side.entry] - other_b[side.col]
            a, b = side.buckets.normal_equations(x, None, target)
            diag = torch.cat([torch.full((factors,), reg), torch.tensor([reg_bias])])
            scale = torch.cat([side.buckets.lengths[:, None].expand(-1, factors).clamp(min=1),
                               torch.ones(len(a), 1)], 1)
            a += torch.diag_embed(diag * scale) + 1e-6 * eye
            theta = solve(a, b)
            own.copy_(theta[:, :factors])
            own_b.copy_(theta[:, factors])
        pred = mu + bu[ut] + bi[it] + (p[ut] * q[it]).sum(1)
        train_rmse = float(torch.sqrt(torch.mean((pred - rs) ** 2)))
        entry = {"epoch": iteration, "train_rmse": train_rmse, "seconds": time.perf_counter() - t0}
        if val is not None and len(val[2]):
            vu, vi, vr = (torch.from_numpy(a_) for a_ in val)
            vp = (mu + bu[vu] + bi[vi] + (p[vu] * q[vi]).sum(1)).clamp(*rating_range)
            entry["val_rmse"] = float(torch.sqrt(torch.mean((vp - vr.float()) ** 2)))
        history.append(entry)
        log.info("rating head: iteration %d train_rmse %.4f val_rmse %s (%.2fs)", iteration, train_rmse,
                 f"{entry['val_rmse']:.4f}" if "val_rmse" in entry else "-", entry["seconds"])
        if "val_rmse" in entry:
            improved = entry["val_rmse"] < best - min_improvement
            if entry["val_rmse"] < best:
                best = entry["val_rmse"]
                best_params = (p.clone(), q.clone(), bu.clone(), bi.clone())
            if improved:
                bad = 0
            else:
                bad += 1
                if bad >= patience:
                    log.info("rating head: early stop at iteration %d (best val_rmse %.4f)", iteration, best)
                    break
    if best_params is not None:
        p, q, bu, bi = best_params
    return {"mu": torch.tensor([mu]), "p": p, "q": q, "bu": bu, "bi": bi}, history
