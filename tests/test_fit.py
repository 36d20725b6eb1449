"""The solvers behind training: the Gibbs rating head, the PureSVD ranking head,
and the scikit-surprise SVD baseline adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.train import surprise_svd
from tasks.train.bayes import compress, fit_bayes, outer_products, sample_side
from tasks.train.ranking import fit_puresvd


def _reference_draw(cols, ratings, mu, other, alpha, mean, prec, z, w):
    """One row's conditional draw, written out with numpy: x_j = [q_j, 1], target r - mu - b_j,
    rating j's noise precision alpha * w_j."""
    x = np.concatenate([other[cols, :-1], np.ones((len(cols), 1))], 1)
    t = ratings - mu - other[cols, -1]
    a = alpha * (x.T * w) @ x + np.diag(prec)
    b = alpha * (x.T * w) @ t + prec * mean
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
    row_tau, col_tau = rng.uniform(0.2, 3, n_rows), rng.uniform(0.2, 3, n_cols)  # per-row and -column noise
    out = np.empty((n_rows, d))
    sample_side(indptr, cols, ratings, 3.5, other, outer_products(other, col_tau), 1.7, row_tau, col_tau, mean,
                prec, noise, out)
    for r in range(n_rows):
        lo, hi = indptr[r], indptr[r + 1]
        want = _reference_draw(cols[lo:hi], ratings[lo:hi], 3.5, other, 1.7 * row_tau[r], mean, prec, noise[r],
                               col_tau[cols[lo:hi]])
        # the kernel sums the precision's outer products in float32 (twice the SIMD lanes)
        np.testing.assert_allclose(out[r], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[3], mean + noise[3] / np.sqrt(prec))


def test_compress_is_the_best_rank_k_product_of_the_draws_mean():
    """Draws scattered around one rank-3 product, as posterior draws are: rank 3 is
    as close to their mean as the truncated SVD; rank 15 (all of it) is the mean."""
    rng = np.random.default_rng(1)
    p0, q0 = rng.standard_normal((40, 3)), rng.standard_normal((30, 3))
    draws_p = [(p0 + 0.2 * rng.standard_normal((40, 3))).astype(np.float32) for _ in range(5)]
    draws_q = [(q0 + 0.2 * rng.standard_normal((30, 3))).astype(np.float32) for _ in range(5)]
    side_by_side = compress(np.hstack(draws_p), np.hstack(draws_q), 3, n_draws=5)
    m = sum(p.astype(float) @ q.T for p, q in zip(draws_p, draws_q, strict=True)) / 5
    u, s, vt = np.linalg.svd(m)
    p, q = compress(draws_p, draws_q, 3)
    assert p.shape == (40, 3) and q.shape == (30, 3)
    best = np.linalg.norm(m - (u[:, :3] * s[:3]) @ vt[:3])
    assert best > 0.01 * s[0]  # the mean is not rank 3 itself
    assert np.linalg.norm(m - p @ q.T) < 1.001 * best
    np.testing.assert_allclose(side_by_side[0] @ side_by_side[1].T, p @ q.T, atol=1e-5 * s[0])  # same product
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


def test_robust_noise_finds_the_noisy_users_and_predicts_the_others_better():
    """A fifth of the users rate at random: with per-user and per-item noise levels
    (noise_prior > 0) the sampler gives those users a low precision (tau), so they pull
    the item factors less, and the other users' held-out ratings are predicted better
    than with one shared noise level. The final tau reaches a warm-started chain."""
    from tasks.train.bayes import Chain

    rng = np.random.default_rng(5)
    n_users, n_items, k = 150, 80, 3
    p, q = rng.normal(size=(n_users, k)), rng.normal(size=(n_items, k))
    u, i = np.nonzero(rng.random((n_users, n_items)) < 0.4)
    clean = 3.0 + (p[u] * q[i]).sum(1)
    noisy = np.arange(n_users) % 5 == 0
    r = np.where(noisy[u], 3.0 + 3.0 * rng.standard_normal(len(u)), clean + 0.3 * rng.standard_normal(len(u)))
    held = (rng.random(len(r)) < 0.1) & ~noisy[u]
    kwargs = dict(factors=k, sweeps=60, burn_in=10, seed=0, rating_range=(-20, 20))
    errors, chains = {}, {}
    for prior in (0.0, 5.0):
        chain: list[Chain] = []
        params, _ = fit_bayes(u[~held], i[~held], r[~held].astype(np.float32), n_users, n_items,
                              noise_prior=prior, chain=chain, **kwargs)
        pred = params["mu"][0] + params["bu"][u[held]] + params["bi"][i[held]] + \
            (params["p"][u[held]] * params["q"][i[held]]).sum(1)
        errors[prior], chains[prior] = np.sqrt(np.mean((pred - clean[held]) ** 2)), chain[0]
    assert errors[5.0] < 0.9 * errors[0.0]
    tau_users = chains[5.0].tau[0]
    assert tau_users[noisy].max() < tau_users[~noisy].min()
    assert (chains[0.0].tau[0] == 1).all()  # noise_prior 0: one shared noise level
    warm: list[Chain] = []
    fit_bayes(u, i, r.astype(np.float32), n_users, n_items, noise_prior=5.0, init=chains[5.0], chain=warm,
              **{**kwargs, "sweeps": 3, "burn_in": 1})
    assert warm[0].tau[0][noisy].max() < warm[0].tau[0][~noisy].min()  # started from the estimate's tau


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


def test_rating_weighted_input_averages_one_and_ranks_pairs_by_rating():
    from tasks.train import item_models as IM

    u, i = np.array([0, 0, 1, 1, 1, 2]), np.array([0, 1, 0, 2, 2, 1])  # user 1 rated item 2 twice
    r = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 4.0])
    assert (IM.rating_weighted(u, i, r, 3, 3, 0.0) != IM.binary(u, i, 3, 3)).nnz == 0
    x = IM.rating_weighted(u, i, r, 3, 3, 0.5).toarray()
    assert x[0, 0] > x[2, 1] > x[1, 0] > x[0, 1] > 0  # 5 > 4 > 3 > 1 stars
    assert x[1, 2] == pytest.approx(x[1, 0])  # a repeated pair: its mean rating (2 and 4: 3 stars)
    assert x[0, 0] - x[0, 1] == pytest.approx(0.5)  # weight x (5 - 1) / (5 - 1)


def test_lowpass_part_is_gf_cf_ideal_low_pass_filter():
    """The head's low-pass part scores as GF-CF's dense formula x_u D^-1/2 V V^T D^1/2, V
    the top right singular vectors of D_u^-1/2 X D_i^-1/2 (Shen et al. 2021)."""
    from tasks.train import item_models as IM
    from tasks.train.ranking import lowpass_factors, lowpass_vectors

    rng = np.random.default_rng(6)
    n_users, n_items = 50, 30
    u, i = rng.integers(0, n_users, 400), (rng.random(400) ** 2 * n_items).astype(np.int64)  # skewed popularity
    x = IM.binary(u, i, n_users, n_items)
    dense = x.toarray()
    du, di = np.maximum(dense.sum(1), 1), np.maximum(dense.sum(0), 1)
    _, s, vt = np.linalg.svd(dense / np.sqrt(du)[:, None] / np.sqrt(di)[None, :])
    assert s[7] > s[8] * 1.0001  # a gap: the top-8 subspace is unique
    expected = dense @ np.diag(di ** -0.5) @ vt[:8].T @ vt[:8] @ np.diag(di ** 0.5)
    vectors, inv_sqrt = lowpass_vectors(x, 12)
    p, q = lowpass_factors(x, vectors, inv_sqrt, 8)
    assert p.shape == (n_users, 8) and q.shape == (n_items, 8)
    assert np.allclose(p @ q.T, expected, atol=1e-8)


def test_ranking_head_refit_reuses_every_validated_choice():
    from tasks.train.ranking import fit_ranking_head

    rng = np.random.default_rng(7)
    n_users, n_items = 150, 80
    taste = rng.integers(0, 4, n_users)
    u, i = [], []
    for user in range(n_users):
        picks = np.unique(np.concatenate([rng.choice(20, 10) + 20 * taste[user], rng.integers(0, n_items, 4)]))
        u += [user] * len(picks)
        i += picks.tolist()
    u, i = np.array(u), np.array(i)
    r = np.where(i // 20 == taste[u], 5.0, 2.0)
    kwargs = {"factors": 4, "ease_rank": 32, "ease_max_items": 1000, "r": r}
    p, q, info = fit_ranking_head(u, i, n_users, n_items, **kwargs)
    choice = info["ease"]
    assert set(choice) >= {"lambda", "binary_lambda", "rating_weight", "weight", "lowpass_factors", "lowpass_weight"}
    assert choice["val_ndcg"] == max(choice["val_ndcg_best_10"].values())
    p2, q2, info2 = fit_ranking_head(u, i, n_users, n_items, choice=choice, **kwargs)
    assert info2["ease"] == {**choice, "reused": True} and info2["factors"] == info["factors"] == p.shape[1]
    assert torch.equal(p, p2) and torch.equal(q, q2)  # same pairs, same choices: the same head
    # no ratings: EASE^R's input stays binary whatever the earlier choice was
    _, _, binary = fit_ranking_head(u, i, n_users, n_items, **{**kwargs, "r": None})
    assert binary["ease"]["rating_weight"] == 0.0


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


def bench_baselines():
    """``bench/baselines.py`` (bench-only baselines, not shipped in the jobs image)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "baselines.py"
    spec = importlib.util.spec_from_file_location("bench_baselines", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    slow, slow_scores = bench_baselines().tune(IM.ease, lambdas, u, i, n_users, n_items)
    assert fast == slow
    assert fast_scores == pytest.approx(slow_scores, abs=1e-12)
    assert len(set(slow_scores.values())) > 1  # lambda matters here: the comparison is not vacuous


def test_tasks_never_import_the_benchmark_and_ship_no_bench_only_baseline():
    """The jobs image copies tasks/ only: a tasks module importing bench/ would fail there,
    and the bench-only baselines (item-kNN, RP3beta, their grids) live in bench/baselines.py."""
    import ast

    root = Path(__file__).resolve().parents[1]
    bench_modules = {p.stem for p in (root / "bench").glob("*.py")} | {"bench"}
    offenders = []
    for path in (root / "tasks").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [(str(path.relative_to(root)), n) for n in names if n.split(".")[0] in bench_modules]
    assert offenders == []
    assert "baselines" in bench_modules  # the check looks for the module that holds the bench-only code
    from tasks.train import item_models as IM

    assert not {"item_knn", "rp3beta", "fit_tuned", "KNN_GRID", "RP3_GRID"} & set(vars(IM))
    bb = bench_baselines()
    assert {"item_knn", "rp3beta", "fit_tuned", "tune"} <= set(vars(bb))
