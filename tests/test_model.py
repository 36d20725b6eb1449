"""The MF model's batch API with known answers, and its artifact format."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch

from tasks.model import MF, Recommender, load, save, scoring
from tests.test_scoring import _assert_exact_topk, _seen_csr, own_scores


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


@pytest.mark.parametrize("implementation", scoring.IMPLEMENTATIONS)
@pytest.mark.parametrize("rank_k", [0, 4])
def test_recommend_is_the_exact_top_n_of_the_model_scores(rank_k, implementation, monkeypatch):
    """recommend (either implementation, as RECSYS_SCORER picks it) against a brute force over
    item_scores; unknown users get the non-personal row."""
    if implementation == "fused" and scoring.choose("auto") != "fused":
        pytest.skip("the fused kernel is built and tested for x86-64 only")
    monkeypatch.setenv(scoring.ENV, implementation)
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
    offset = 0.0 if rank_k else (np.append(rec._bu.numpy(), 0.0) + rec._mu).astype(np.float32)[:, None]
    for exclude, n in itertools.product((True, False), (1, 10, 100, 150)):
        runs = "fused" if implementation == "fused" and n <= 128 else "reference"  # the reference past 128
        masked = own_scores(runs, rec.scoring_vectors(idx), rec._items.t, 700)
        np.testing.assert_allclose(masked[:60], rec.item_scores(torch.arange(60)).numpy(), rtol=1e-5, atol=1e-5)
        if exclude:
            for u in range(60):
                masked[u, seen[u]] = -np.inf
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
    # a long object column (a snapshot's string ids): each distinct value looked up once, same answer
    column = np.array(["33", 10, "x", None, "2"] * 20, dtype=object)
    assert numeric(column).tolist() == [2, 0, -1, -1, 1] * 20


def test_recommend_in_parallel_chunks_matches_one_chunk():
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
