"""The solvers behind training: ALS normal equations, the PureSVD ranking head,
and the scikit-surprise SVD baseline adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.train import surprise_svd
from tasks.train.als import Buckets, fit_explicit
from tasks.train.ranking import fit_puresvd


def test_bucketed_normal_equations_match_a_per_row_loop():
    rng = np.random.default_rng(0)
    n_rows, n_cols, d = 40, 30, 5
    lengths = rng.integers(0, 20, n_rows)  # includes empty rows and every bucket width up to 32
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = np.concatenate([rng.choice(n_cols, n, replace=False) for n in lengths])
    x = torch.randn(n_cols, d)
    w = torch.rand(len(indices))
    t = torch.randn(len(indices))
    a, b = Buckets(indptr, indices).normal_equations(x, w, t)
    for r in range(n_rows):
        cols = indices[indptr[r]:indptr[r + 1]]
        xs, ws, ts = x[cols], w[indptr[r]:indptr[r + 1]], t[indptr[r]:indptr[r + 1]]
        assert torch.allclose(a[r], (xs * ws[:, None]).T @ xs, atol=1e-5)
        assert torch.allclose(b[r], ((ws * ts)[:, None] * xs).sum(0), atol=1e-5)


def test_explicit_als_recovers_a_planted_low_rank_matrix():
    rng = np.random.default_rng(1)
    n_users, n_items, k = 60, 50, 3
    p, q = rng.normal(size=(n_users, k)), rng.normal(size=(n_items, k))
    mask = rng.random((n_users, n_items)) < 0.5
    u, i = np.nonzero(mask)
    r = (3.0 + (p[u] * q[i]).sum(1)).astype(np.float32)
    held = rng.random(len(r)) < 0.1
    params, history = fit_explicit(u[~held], i[~held], r[~held], n_users, n_items, factors=k, reg=0.001,
                                   reg_bias=0.001, iterations=30, seed=0,
                                   val=(u[held], i[held], r[held]), patience=3, rating_range=(-20, 20))
    ut, it = torch.from_numpy(u[held]), torch.from_numpy(i[held])
    pred = params["mu"] + params["bu"][ut] + params["bi"][it] + (params["p"][ut] * params["q"][it]).sum(1)
    assert float(torch.sqrt(torch.mean((pred - torch.from_numpy(r[held])) ** 2))) < 0.05 * r.std()
    assert history[-1]["train_rmse"] < history[0]["train_rmse"]


def test_puresvd_ranking_head_learns_who_rates_what():
    """Two communities rate disjoint halves of the catalogue, the second half
    being more popular overall: the head recommends each user their own half."""
    rng = np.random.default_rng(2)
    n_users, n_items = 80, 40
    group = np.arange(n_users) % 2
    u, i = [], []
    for user in range(n_users):
        pool = np.arange(20) + 20 * group[user]
        picks = rng.choice(pool, 12 if group[user] else 6, replace=False)
        u += [user] * len(picks)
        i += picks.tolist()
    p, q, info = fit_puresvd(np.array(u), np.array(i), n_users, n_items, factors=4, seed=0)
    scores = p @ q.T
    scores[torch.tensor(u), torch.tensor(i)] = -torch.inf
    top = torch.topk(scores, 5).indices.numpy()
    assert ((top >= 20) == group[:, None].astype(bool)).all()
    assert info["factors"] == 4 and len(info["singular_values"]) == 4
    p2, q2, _ = fit_puresvd(np.array(u), np.array(i), n_users, n_items, factors=4, seed=0)
    assert torch.equal(p, p2) and torch.equal(q, q2)  # deterministic for a seed


def test_surprise_svd_adapter_predicts_like_surprise():
    pytest.importorskip("surprise")
    import pandas as pd
    from surprise import SVD, Dataset, Reader

    rng = np.random.default_rng(3)
    u = rng.integers(0, 30, 600)
    i = rng.integers(0, 40, 600)
    r = rng.integers(1, 6, 600).astype(np.float32)
    model, seconds = surprise_svd(u, i, r, 32, 41, (1.0, 5.0), seed=7)  # user 31, items 40 never rated
    algo = SVD(random_state=7)
    algo.fit(Dataset.load_from_df(pd.DataFrame({"u": u, "i": i, "r": r}),
                                  Reader(rating_scale=(1, 5))).build_full_trainset())
    pairs = [(0, 0), (5, 17), (31, 3), (2, 40)]
    ours = model(torch.tensor([a for a, _ in pairs]), torch.tensor([b for _, b in pairs])).clamp(1, 5)
    theirs = [algo.predict(a, b).est for a, b in pairs]
    assert np.allclose(ours.detach().numpy(), theirs, atol=1e-4) and seconds > 0


def test_popularity_recs_match_a_brute_force_ranking():
    from tasks.model.metrics import popularity_recs

    rng = np.random.default_rng(4)
    n_users, n_items, k = 30, 25, 10
    train_items = rng.integers(0, n_items, 400)
    train_items[:50] = 3  # a tie-free leader; other counts tie often
    seen = [rng.choice(n_items, rng.integers(0, n_items + 1), replace=False) for _ in range(n_users)]
    seen[0] = np.arange(n_items)  # has seen everything
    seen[1] = np.array([3, 3, 3])  # repeats count once
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in seen])])
    got = popularity_recs(train_items, n_items, indptr, np.concatenate(seen).astype(np.int64), k)
    counts = np.bincount(train_items, minlength=n_items)
    for user in range(n_users):
        ranked = [item for item in sorted(range(n_items), key=lambda x: (-counts[x], x)) if item not in seen[user]]
        expected = (ranked + [-1] * k)[:k]
        assert got[user].tolist() == expected, user
