"""The solvers behind training: the Gibbs rating head, the PureSVD ranking head,
and the scikit-surprise SVD baseline adapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.train import surprise_svd
from tasks.train.bayes import compress, fit_bayes, outer_products, sample_side
from tasks.train.ranking import fit_puresvd


def _reference_draw(cols, ratings, mu, other, alpha, mean, prec, z):
    """One row's conditional draw, written out with numpy: x_j = [q_j, 1], target r - mu - b_j."""
    x = np.concatenate([other[cols, :-1], np.ones((len(cols), 1))], 1)
    t = ratings - mu - other[cols, -1]
    a = alpha * x.T @ x + np.diag(prec)
    b = alpha * x.T @ t + prec * mean
    chol = np.linalg.cholesky(a)
    return np.linalg.solve(a, b) + np.linalg.solve(chol.T, z)


def test_gibbs_row_draw_matches_the_gaussian_conditional_written_out():
    rng = np.random.default_rng(0)
    n_rows, n_cols, d = 30, 25, 4
    lengths = rng.integers(0, 12, n_rows)
    lengths[3] = 0  # a row without ratings is drawn from its prior
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    cols = np.concatenate([rng.choice(n_cols, n, replace=False) for n in lengths]).astype(np.int64)
    ratings = rng.uniform(1, 5, len(cols))
    other = rng.standard_normal((n_cols, d))
    mean, prec = rng.standard_normal(d), rng.uniform(0.5, 3, d)
    noise = rng.standard_normal((n_rows, d))
    out = np.empty((n_rows, d))
    sample_side(indptr, cols, ratings, 3.5, other, outer_products(other), 1.7, mean, prec, noise, out)
    for r in range(n_rows):
        lo, hi = indptr[r], indptr[r + 1]
        want = _reference_draw(cols[lo:hi], ratings[lo:hi], 3.5, other, 1.7, mean, prec, noise[r])
        np.testing.assert_allclose(out[r], want, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out[3], mean + noise[3] / np.sqrt(prec))


def test_compress_is_the_best_rank_k_product_of_the_draws_mean():
    """Draws scattered around one rank-3 product, as posterior draws are: rank 3 is
    as close to their mean as the truncated SVD; rank 15 (all of it) is the mean."""
    rng = np.random.default_rng(1)
    p0, q0 = rng.standard_normal((40, 3)), rng.standard_normal((30, 3))
    draws_p = [(p0 + 0.2 * rng.standard_normal((40, 3))).astype(np.float32) for _ in range(5)]
    draws_q = [(q0 + 0.2 * rng.standard_normal((30, 3))).astype(np.float32) for _ in range(5)]
    m = sum(p.astype(float) @ q.T for p, q in zip(draws_p, draws_q, strict=True)) / 5
    u, s, vt = np.linalg.svd(m)
    p, q = compress(draws_p, draws_q, 3)
    assert p.shape == (40, 3) and q.shape == (30, 3)
    best = np.linalg.norm(m - (u[:, :3] * s[:3]) @ vt[:3])
    assert best > 0.01 * s[0]  # the mean is not rank 3 itself
    assert np.linalg.norm(m - p @ q.T) < 1.001 * best
    p, q = compress(draws_p, draws_q, 15)
    np.testing.assert_allclose(p @ q.T, m, atol=1e-5 * s[0])


def test_gibbs_rating_head_recovers_a_planted_matrix_and_is_seeded():
    rng = np.random.default_rng(1)
    n_users, n_items, k = 60, 50, 3
    p, q = rng.normal(size=(n_users, k)), rng.normal(size=(n_items, k))
    bu, bi = rng.normal(size=n_users), rng.normal(size=n_items)
    mask = rng.random((n_users, n_items)) < 0.5
    u, i = np.nonzero(mask)
    clean = 3.0 + bu[u] + bi[i] + (p[u] * q[i]).sum(1)
    r = (clean + 0.3 * rng.standard_normal(len(u))).astype(np.float32)
    held = rng.random(len(r)) < 0.1
    kwargs = dict(factors=k, sweeps=60, burn_in=10, seed=0, report_every=10, rating_range=(-20, 20),
                  val=(u[held], i[held], r[held]))
    params, history = fit_bayes(u[~held], i[~held], r[~held], n_users, n_items, **kwargs)
    pred = params["mu"][0] + params["bu"][u[held]] + params["bi"][i[held]] + \
        (params["p"][u[held]] * params["q"][i[held]]).sum(1)
    # noise 0.3 on data spread ~2: held-out predictions are closer to the clean values than
    # the noise, and the sampler's noise estimate finds 0.3
    assert np.sqrt(np.mean((pred - clean[held]) ** 2)) < 0.25 < 0.2 * r.std()
    assert history[-1]["val_rmse"] < 0.4 and 0.25 < history[-1]["noise_std"] < 0.35
    assert [h["sweep"] for h in history] == [10, 20, 30, 40, 50, 60]
    again, _ = fit_bayes(u[~held], i[~held], r[~held], n_users, n_items, **kwargs)
    for name in params:
        np.testing.assert_array_equal(params[name], again[name])


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
    model, seconds, _ = surprise_svd(u, i, r, 32, 41, (1.0, 5.0), seed=7)  # user 31, items 40 never rated
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


def test_ease_tuning_by_one_eigendecomposition_scores_as_an_inverse_per_lambda():
    from tasks.train import item_models as IM

    rng = np.random.default_rng(4)
    n_users, n_items = 120, 60
    taste = rng.integers(0, 3, n_users)
    u, i = [], []
    for user in range(n_users):
        pool = np.concatenate([np.arange(20) + 20 * taste[user], rng.integers(0, n_items, 5)])
        picks = np.unique(rng.choice(pool, 12))
        u += [user] * len(picks)
        i += picks.tolist()
    u, i = np.array(u), np.array(i)
    lambdas = (1.0, 10.0, 100.0, 1000.0)
    fast, fast_scores = IM.tune_ease(u, i, n_users, n_items, lambdas=lambdas)
    slow, slow_scores = IM.tune(IM.ease, lambdas, u, i, n_users, n_items)
    assert fast == slow
    assert fast_scores == pytest.approx(slow_scores, abs=1e-12)
    assert len(set(slow_scores.values())) > 1  # lambda matters here: the comparison is not vacuous
