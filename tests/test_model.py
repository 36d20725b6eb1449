"""The MF model's batch API with known answers, and its artifact format."""

from __future__ import annotations

import io

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
    rows[3] = rec._default_scores.double()  # -1: an unknown user's non-personal row
    expected = torch.stack([rows.mean(1), rows.std(1, correction=0)], 1).numpy()
    np.testing.assert_allclose(rec.score_moments(np.array([0, 7, 29, -1])), expected, rtol=1e-5, atol=1e-6)


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
