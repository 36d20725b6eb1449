"""The MF model's batch API with known answers, and its artifact format."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tasks.model import MF, Recommender, load, save


def checkerboard(n_users=4, n_items=6) -> Recommender:
    """Users 0,2 like even items, users 1,3 like odd items; item i's strength grows with i."""
    model = MF(n_users, n_items, k=1)
    with torch.no_grad():
        model.user.weight[:] = torch.tensor([[1.0], [-1.0]] * (n_users // 2))
        model.item.weight[:] = torch.tensor([[(1 if i % 2 == 0 else -1) * (1 + i / 10)] for i in range(n_items)])
        model.user_bias.weight.zero_()
        model.item_bias.weight.zero_()
        model.bias.fill_(3.0)
    return Recommender(model, [f"u{u}" for u in range(n_users)], [f"i{i}" for i in range(n_items)])


def test_recommend_known_answer_and_exclude_seen():
    rec = checkerboard()
    items, scores = rec.recommend(["u0", "u1"], 2, exclude_seen=True)
    assert items.tolist() == [["i4", "i2"], ["i5", "i3"]]
    assert scores.shape == (2, 2) and (np.diff(scores, axis=1) <= 0).all()
    rec.set_seen_from_ratings(["u0", "u1"], ["i4", "i5"])
    assert rec.recommend(["u0", "u1"], 2)[0].tolist() == [["i2", "i0"], ["i3", "i1"]]
    assert rec.recommend(["u0"], 1, exclude_seen=False)[0].tolist() == [["i4"]]


def test_recommend_pads_when_user_has_seen_almost_everything():
    rec = checkerboard()
    rec.set_seen_from_ratings(["u0"] * 5, ["i0", "i1", "i2", "i3", "i4"])
    items, scores = rec.recommend(["u0"], 3)
    assert items.tolist() == [["i5", "", ""]] and np.isneginf(scores[0, 1:]).all()


def test_ties_are_broken_by_item_order():
    model = MF(1, 5, k=1)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    rec = Recommender(model, ["u"], ["a", "b", "c", "d", "e"])
    assert rec.recommend(["u"], 3)[0].tolist() == [["a", "b", "c"]]


def test_unknown_ids_fall_back_to_biases():
    rec = checkerboard()
    with torch.no_grad():
        rec.model.item_bias.weight[3] = 0.5
    rec = Recommender(rec.model, rec.user_ids, rec.item_ids)
    pred = rec.predict(["u0", "nobody", "u0"], ["i0", "i3", "unknown"])
    assert pred[1] == pytest.approx(3.5) and pred[2] == pytest.approx(3.0)
    assert rec.recommend(["nobody"], 1)[0].tolist() == [["i3"]]  # highest item bias


def test_bad_arguments_raise_precise_errors():
    rec = checkerboard()
    with pytest.raises(ValueError, match="differ in length"):
        rec.predict(["u0"], ["i0", "i1"])
    with pytest.raises(ValueError, match="n must be positive"):
        rec.recommend(["u0"], 0)


def test_artifact_roundtrip_without_pickle(tmp_path):
    rec = checkerboard()
    save(str(tmp_path), rec.model, {"user_ids": rec.user_ids.tolist(), "item_ids": rec.item_ids.tolist(),
                                    "rating_range": [1, 5]}, np.array([0, 1, 1, 1, 1]), np.array([4]))
    loaded = load(str(tmp_path))
    assert loaded.recommend(["u0"], 1)[0].tolist() == [["i2"]]  # i4 is seen
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(state) == {"user_bias.weight", "item_bias.weight", "user.weight", "item.weight", "bias"}


def test_tutorial_state_dict_loads():
    """The seed tutorial's MF(n_user, n_item, k=10, c_bias=1e-6, c_vector=1e-6) state_dict."""
    tutorial = MF(944, 1683, k=10, c_bias=1e-6, c_vector=1e-6)
    buf = io.BytesIO()
    torch.save(tutorial.state_dict(), buf)
    buf.seek(0)
    model = MF(944, 1683, k=10)
    model.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(model.user.weight, tutorial.user.weight)
    # without a ranking head, recommend ranks by predicted rating, as the tutorial did
    rec = Recommender(model, [str(u) for u in range(944)], [str(i) for i in range(1683)], rating_range=(-99, 99))
    assert rec.ranks_by_rating
    items, scores = rec.recommend(["1"], 5)
    assert np.allclose(scores[0], rec.predict(["1"] * 5, items[0]), atol=1e-5)


def test_ranking_head_orders_recommend_but_not_predict(tmp_path):
    """With a ranking head, recommend ranks by it; predict stays the rating head."""
    rec = checkerboard()
    model = MF(4, 6, k=1, rank_k=1)
    state = {**rec.model.state_dict(),
             # the ranking head prefers low item indexes for every user
             "rank_user.weight": torch.ones(4, 1),
             "rank_item.weight": torch.tensor([[6.0 - i] for i in range(6)])}
    model.load_state_dict(state)
    two = Recommender(model, rec.user_ids, rec.item_ids)
    items, scores = two.recommend(["u0", "u1", "nobody"], 2)
    assert items.tolist() == [["i0", "i1"]] * 3
    assert scores[0].tolist() == [6.0, 5.0]  # relevance, not a rating
    assert np.allclose(two.predict(["u0", "u1"], ["i4", "i5"]), rec.predict(["u0", "u1"], ["i4", "i5"]))
    save(str(tmp_path), model, {"user_ids": rec.user_ids.tolist(), "item_ids": rec.item_ids.tolist()},
         np.zeros(5, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert load(str(tmp_path)).recommend(["u1"], 2)[0].tolist() == [["i0", "i1"]]


def _assert_exact_topk(scores, k, s, i):
    """Brute force: every non-NaN item above -inf, by score descending then index ascending."""
    for r in range(len(scores)):
        eligible = np.flatnonzero(~np.isnan(scores[r]) & (scores[r] > -np.inf))
        ref = eligible[np.lexsort((eligible, -scores[r][eligible]))][:k]
        assert i[r, :len(ref)].tolist() == ref.tolist(), (k, r)
        np.testing.assert_array_equal(s[r, :len(ref)], scores[r][ref])
        assert (i[r, len(ref):] == -1).all() and np.isneginf(s[r, len(ref):]).all()


@pytest.mark.parametrize("kind", ["normal", "few values", "signed zeros", "extremes"])
@pytest.mark.parametrize("c,k", [(1, 1), (7, 10), (32, 5), (33, 100), (64, 64), (65, 10), (100, 100),
                                 (128, 100), (129, 100), (160, 128), (161, 100), (192, 1), (193, 100),
                                 (256, 128), (200, 129), (257, 100), (300, 200)])
def test_sortnet_orders_candidates_like_a_lexsort(c, k, kind):
    """Every path of the ordering (networks of 32, 64 and 128, the merges of 129-256 candidates,
    the bucket fallback) against a lexsort: score descending, then item index ascending,
    -0.0 tied with 0.0 and written as 0.0."""
    from tasks.model.sortnet import ROOM, order

    rng = np.random.default_rng(c * 1000 + k)
    for _ in range(20):
        if kind == "normal":
            scores = rng.standard_normal(c).astype(np.float32)
        elif kind == "few values":
            scores = rng.integers(-2, 2, c).astype(np.float32)
        elif kind == "signed zeros":
            scores = np.where(rng.random(c) < 0.5, -0.0, 0.0).astype(np.float32)
        else:
            scores = rng.choice(np.array([np.inf, 3e38, -3e38, 1e-45, -1e-45, 0.0, -0.0, 1.0], np.float32), c)
        items = rng.choice(1 << 20, c, replace=False).astype(np.int32)
        cand = np.full(max(c + 1, ROOM), np.nan, dtype=np.float32)
        idx = np.full(len(cand), -7, dtype=np.int32)
        cand[:c], idx[:c] = scores, items
        order(cand, idx, c, k, np.empty(c, dtype=np.uint64), np.empty(3 * c + 1, dtype=np.int64))
        m = min(c, k)
        ref = np.lexsort((items, -scores))[:m]
        assert idx[:m].tolist() == items[ref].tolist()
        np.testing.assert_array_equal(cand[:m] + np.float32(0.0), scores[ref] + np.float32(0.0))
        assert not np.signbit(cand[:m][cand[:m] == 0]).any()  # 0.0, not -0.0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("seed", range(5))
def test_topk_matches_brute_force_with_heavy_ties(seed, threads):
    """Exact order: score descending, then item index ascending; -inf rows pad with index -1."""
    from tasks.model.topk import topk

    rng = np.random.default_rng(seed)
    n_items = 40 + seed * 50  # 40 .. 240 items: k below, at and above half the row
    scores = rng.integers(0, 4, (64, n_items)).astype(np.float32)  # few distinct values: ties everywhere
    scores[rng.random(scores.shape) < 0.3] = -np.inf  # masked items
    scores[0] = -np.inf
    scores[1, 5] = np.nan  # never selected
    scores[2, :7] = np.inf  # ranks first, ties by index
    scores[3] = 0.0
    scores[3, ::3] = -0.0  # -0.0 ties with 0.0: order by index alone
    for k in (1, 5, 17, 40, n_items, n_items + 3):
        s, i = topk(scores.copy(), k, threads=threads)
        _assert_exact_topk(scores, k, s, i)


@pytest.mark.parametrize("order", ["random", "ascending", "descending"])
def test_topk_is_exact_on_long_rows_whatever_the_order(order):
    """Rows long enough for the sampled first threshold, many cuts of the candidate list (scores
    rising along the row), a first guess that misses (descending) and near-ties in one bucket."""
    from tasks.model.topk import topk

    rng = np.random.default_rng(3)
    scores = rng.standard_normal((12, 5003)).astype(np.float32)
    scores[1] = np.round(scores[1], 1)  # ~60 distinct values: long runs of equal scores
    scores[2] = 1.0 + np.float32(1e-7) * rng.integers(0, 3, 5003)  # a range a few ulps wide
    scores[3, rng.choice(5003, 40, replace=False)] = 1e30  # a few huge scores far above the rest
    scores[4, 100:] = -np.inf  # fewer eligible items than k
    if order != "random":
        scores.sort(axis=1)
        if order == "descending":
            scores = np.ascontiguousarray(scores[:, ::-1])
    for k in (1, 10, 100, 1000):
        s, i = topk(scores.copy(), k, threads=1)
        _assert_exact_topk(scores, k, s, i)


def test_topk_excludes_exactly_the_seen_items_of_each_row():
    from tasks.model.topk import topk

    rng = np.random.default_rng(7)
    scores = rng.standard_normal((50, 300)).astype(np.float32)
    seen = [np.sort(rng.choice(300, rng.integers(0, 290), replace=False)) for _ in range(20)]
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in seen])]).astype(np.int64)
    indices = np.concatenate(seen).astype(np.int64)
    rows = rng.integers(-1, 20, 50)  # -1: a row with nothing to exclude
    s, i = topk(scores.copy(), 25, rows, indptr, indices, threads=2)
    for r in range(50):
        allowed = np.setdiff1d(np.arange(300), seen[rows[r]]) if rows[r] >= 0 else np.arange(300)
        ref = allowed[np.argsort(-scores[r][allowed], kind="stable")][:25]
        assert i[r, :len(ref)].tolist() == ref.tolist()
        assert (i[r, len(ref):] == -1).all()


def test_topk_rejects_what_it_cannot_score():
    from tasks.model.topk import topk

    with pytest.raises(ValueError, match="float32"):
        topk(np.zeros((2, 3)), 1)
    with pytest.raises(ValueError, match="positive"):
        topk(np.zeros((2, 3), dtype=np.float32), 0)
    with pytest.raises(ValueError, match=r"moments must have shape \(2, 2\)"):
        topk(np.zeros((2, 3), dtype=np.float32), 1, moments=np.zeros((3, 2)))


@pytest.mark.parametrize("moments", ["exact", "far too high", "far too low", "nan"])
def test_topk_is_exact_whatever_moments_it_is_given(moments):
    """Moments only place the first threshold: wrong ones cost time, never the result."""
    from tasks.model.topk import topk

    rng = np.random.default_rng(5)
    scores = rng.standard_normal((40, 4000)).astype(np.float32) * 2 + 1
    given = np.stack([scores.mean(1), scores.std(1)], 1).astype(np.float64)
    given = {"exact": given, "far too high": given + [50.0, 0.0], "far too low": given - [50.0, 0.0],
             "nan": np.full_like(given, np.nan)}[moments]
    for k in (1, 10, 100):
        s, i = topk(scores.copy(), k, threads=1, moments=given)
        _assert_exact_topk(scores, k, s, i)


@pytest.mark.parametrize("rank_k", [0, 3])
def test_score_moments_are_the_exact_mean_and_std_of_each_score_row(rank_k):
    torch.manual_seed(1)
    model = MF(30, 200, k=5, rank_k=rank_k)
    with torch.no_grad():
        model.item_bias.weight.normal_(0, 1)  # the rating head's rows include the item bias
    rec = Recommender(model, np.arange(30).astype(str), np.arange(200).astype(str))
    rows = rec.item_scores(torch.tensor([0, 7, 29, 0])).double()
    with torch.no_grad():  # -1: an unknown user's non-personal row (the average user's, or the item bias)
        rows[3] = (model.rank_user.weight.mean(0) @ model.rank_item.weight.T if rank_k
                   else model.item_bias.weight[:, 0]).double()
    expected = torch.stack([rows.mean(1), rows.std(1, correction=0)], 1).numpy()
    np.testing.assert_allclose(rec.score_moments(np.array([0, 7, 29, -1])), expected, rtol=1e-5, atol=1e-6)


def _seen_csr(rng, n_rows, n_items, most):
    seen = [np.sort(rng.choice(n_items, int(rng.integers(0, most + 1)), replace=False)) for _ in range(n_rows)]
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in seen])]).astype(np.int64)
    return seen, indptr, np.concatenate(seen).astype(np.int64)


@pytest.mark.parametrize("seed", range(8))
def test_fused_topk_matches_brute_force_on_its_own_scores(seed):
    """Scoring and selection in one pass: exact against a lexsort of the very scores it computes
    (``fused_scores``, the same code), with seen items, padding columns and every threshold case."""
    from tasks.model.fused import fused_scores, fused_topk, pad_items

    rng = np.random.default_rng(seed)
    n_rows, n_factors, n_items = int(rng.integers(1, 23)), int(rng.integers(1, 20)), int(rng.integers(1, 300))
    vectors = rng.standard_normal((n_rows, n_factors)).astype(np.float32)
    items = rng.standard_normal((n_factors, n_items)).astype(np.float32)
    if seed % 2:  # small integers: many equal scores
        vectors, items = np.round(vectors), np.round(items)
    items_t = pad_items(items)
    if seed % 4 == 3:  # whole blocks of padding past the items, with scores that would be picked
        items_t = np.ascontiguousarray(np.concatenate([items_t, np.full((n_factors, 64), 9, np.float32)], 1))
    scores = fused_scores(vectors, items_t, n_items)
    np.testing.assert_allclose(scores, vectors @ items, rtol=1e-5, atol=1e-4)
    seen, indptr, indices = _seen_csr(rng, n_rows, n_items, n_items)
    rows = np.where(rng.random(n_rows) < 0.2, -1, np.arange(n_rows))  # -1: nothing excluded
    masked = scores.copy()
    for r in range(n_rows):
        if rows[r] >= 0:
            masked[r, seen[r]] = -np.inf
    for k in (1, 7, 33, 100, n_items + 5):
        for thr in (np.full(n_rows, -np.inf), np.median(scores, axis=1), np.full(n_rows, 1e9),
                    np.full(n_rows, np.nan)):  # NaN: nothing is above it, the row is short
            out_s, out_i = np.full((n_rows, k), 7, np.float32), np.full((n_rows, k), 7, np.int64)
            short = np.zeros(n_rows, dtype=np.bool_)
            n_short = fused_topk(vectors, items_t, n_items, rows, indptr, indices, k, thr.astype(np.float32),
                                 out_s, out_i, short)
            assert n_short == short.sum()
            above = (masked > thr.astype(np.float32)[:, None]).sum(1)
            assert (short == ((above < k) & (thr != -np.inf))).all()  # short: fewer than k above a guess
            done = np.flatnonzero(~short)
            _assert_exact_topk(masked[done], k, out_s[done], out_i[done])


@pytest.mark.parametrize("rank_k", [0, 4])
def test_recommend_is_the_exact_top_n_of_the_model_scores(rank_k):
    """recommend (fused kernel, thresholds from moments, reruns of short rows, threads, chunks)
    against a brute force over item_scores; unknown users get the non-personal row."""
    from tasks.model.fused import fused_scores

    torch.manual_seed(rank_k)
    model = MF(60, 700, k=6, rank_k=rank_k)
    with torch.no_grad():
        model.item_bias.weight.normal_(0, 1)
    rec = Recommender(model, np.arange(60).astype(str), np.arange(700).astype(str))
    rng = np.random.default_rng(rank_k)
    seen, indptr, indices = _seen_csr(rng, 60, 700, 650)
    if rank_k:  # any order within a user: set_seen sorts them for the kernel's bitmap
        indices = np.concatenate([rng.permutation(x) for x in seen]).astype(np.int64)
    rec.set_seen(indptr, indices)
    users = np.array([*np.arange(60).astype(str), "nobody"])
    idx = rec.user_index_of(users)
    exact = fused_scores(rec.scoring_vectors(idx), rec._items_t, 700)
    np.testing.assert_allclose(exact[:60], rec.item_scores(torch.arange(60)).numpy(), rtol=1e-5, atol=1e-5)
    offset = 0.0 if rank_k else (np.append(rec._bu.numpy(), 0.0) + rec._mu).astype(np.float32)[:, None]
    for exclude in (True, False):
        masked = exact.copy()
        if exclude:
            for u in range(60):
                masked[u, seen[u]] = -np.inf
        for n in (1, 10, 100):
            for chunk in (None, 5):
                items, scores = rec.recommend(users, n, exclude_seen=exclude, chunk_size=chunk)
                assert items.shape == scores.shape == (61, n)
                index = np.array([[int(x) if x != "" else -1 for x in row] for row in items])
                picked = np.where(index >= 0, np.take_along_axis(masked, np.maximum(index, 0), 1), -np.inf)
                _assert_exact_topk(masked, n, picked, index)
                np.testing.assert_allclose(scores, picked + offset, rtol=1e-6)  # + user bias and mean: ratings


def test_set_seen_takes_any_order_and_rejects_what_would_corrupt_memory():
    """The kernels index without bounds checks: indexes outside the items are refused up front."""
    rec = checkerboard()
    rec.set_seen(np.array([0, 3, 3, 3, 3]), np.array([4, 0, 2]))  # any order within a user
    assert rec.recommend(["u0"], 3)[0].tolist() == [["i1", "i3", "i5"]]  # the even items are seen
    with pytest.raises(ValueError, match="ends at 3"):
        rec.set_seen(np.array([0, 3, 3, 3, 3]), np.array([4, 0]))
    for bad in (6, -1):
        with pytest.raises(ValueError, match=r"in \[0, 6\)"):
            rec.set_seen(np.array([0, 1, 1, 1, 1]), np.array([bad]))


def test_id_lookup_accepts_ints_strings_and_mixed_input():
    from tasks.model import IdLookup

    numeric = IdLookup(np.array(["10", "2", "33"]))
    assert numeric(np.array([2, 33, 7])).tolist() == [1, 2, -1]  # integer fast path
    assert numeric(["33", "10", "x"]).tolist() == [2, 0, -1]
    assert numeric(np.array([10, "2"], dtype=object)).tolist() == [0, 1]
    leading_zero = IdLookup(np.array(["007", "8"]))  # not canonical ints: compared as strings
    assert leading_zero(np.array([7, 8])).tolist() == [-1, 1]
    assert leading_zero(["007"]).tolist() == [0]


def test_recommend_in_parallel_chunks_matches_one_chunk_and_restores_torch_threads():
    """Chunks are scored on a thread per core; concurrent calls must not disturb each other."""
    from concurrent.futures import ThreadPoolExecutor

    torch.manual_seed(3)
    model = MF(400, 300, k=4, rank_k=4)
    rec = Recommender(model, np.arange(400).astype(str), np.arange(300).astype(str))
    rng = np.random.default_rng(3)
    rec.set_seen_from_ratings(rng.integers(0, 400, 5000).astype(str), rng.integers(0, 300, 5000).astype(str))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        whole = rec.recommend(rec.user_ids, 20, chunk_size=400)
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda _: rec.recommend(rec.user_ids, 20, chunk_size=16), range(2)))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    for items, scores in runs:
        assert (items == whole[0]).all()
        np.testing.assert_array_equal(scores, whole[1])


def test_recommend_index_speaks_indexes_and_refuses_unknown_ones():
    rec = checkerboard()
    top, scores = rec.recommend_index(np.array([0, -1]), 2)
    items, same = rec.recommend(["u0", "nobody"], 2)
    assert rec.item_ids[top].tolist() == items.tolist()
    np.testing.assert_array_equal(scores, same)
    with pytest.raises(ValueError, match=r"user indexes must be in \[-1, 4\)"):
        rec.recommend_index(np.array([4]), 2)


@pytest.mark.skipif("NUMBA_BOUNDSCHECK" in os.environ or "NUMBA_CPU_NAME" in os.environ,
                    reason="already running in one of these modes")
@pytest.mark.parametrize("mode", [{"NUMBA_BOUNDSCHECK": "1"}, {"NUMBA_CPU_NAME": "generic"}],
                         ids=["bounds-checked", "generic-cpu"])
def test_kernels_in_a_checked_or_portable_build(tmp_path, mode):
    """Rerun the kernel tests (1) with numba's bounds checks forced on: the kernels are compiled
    without them, and an out-of-bounds index then raises instead of corrupting memory; (2) for a
    generic x86-64 CPU (SSE2, no AVX2): the portable code paths of the vector IR."""
    env = {**os.environ, **mode, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                           "-k", "topk or fused or recommend or sortnet"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
