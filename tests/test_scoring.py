"""tasks.model.scoring: the reference against a brute-force sort, the fused accelerator
against the reference bit for bit, and the interface (tests/test_model.py checks recommend)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from tasks.model import scoring
from tasks.model.scoring import Items, Seen, reference, top_n

needs_fused = pytest.mark.skipif(scoring.choose("auto") != "fused",
                                 reason="the fused kernel is built and tested for x86-64 only")


def _assert_exact_topk(scores, k, s, i):
    """Brute force: every non-NaN item above -inf, by score descending then index ascending."""
    for r in range(len(scores)):
        eligible = np.flatnonzero(~np.isnan(scores[r]) & (scores[r] > -np.inf))
        ref = eligible[np.lexsort((eligible, -scores[r][eligible]))][:k]
        assert i[r, :len(ref)].tolist() == ref.tolist(), (k, r)
        np.testing.assert_array_equal(s[r, :len(ref)], scores[r][ref] + np.float32(0.0))
        assert not np.signbit(s[r, :len(ref)][s[r, :len(ref)] == 0]).any()  # 0.0, not -0.0
        assert (i[r, len(ref):] == -1).all() and np.isneginf(s[r, len(ref):]).all()


def _select(scores, k, thresholds=None, rows=None, indptr=None, indices=None):
    """reference._select on a score matrix we hold (a copy: it masks seen items in place)."""
    n_rows = len(scores)
    thresholds = np.full(n_rows, -np.inf, np.float32) if thresholds is None else thresholds.astype(np.float32)
    if rows is None:
        rows, indptr, indices = np.full(n_rows, -1), np.zeros(1, np.int64), np.zeros(0, np.int64)
    out_s, out_i = np.full((n_rows, k), 7, np.float32), np.full((n_rows, k), 7, np.int64)
    short = np.zeros(n_rows, dtype=np.bool_)
    n_short = reference._select(scores.copy(), rows, indptr, indices, k, thresholds, out_s, out_i, short)
    assert n_short == short.sum()
    return out_s, out_i, short


def own_scores(implementation, vectors, items_t, n_items):
    """The float32 scores an implementation ranks: the fused kernel's own arithmetic
    (``fused_scores``), or torch.mm of at least 16 rows, as reference.select multiplies."""
    if implementation == "fused":
        from tasks.model.scoring import fused

        return fused.fused_scores(np.ascontiguousarray(vectors, np.float32), items_t, n_items)
    padded = np.zeros((max(reference.MIN_BLOCK, len(vectors)), items_t.shape[0]), np.float32)
    padded[:len(vectors)] = vectors
    return (torch.from_numpy(padded) @ torch.from_numpy(items_t)[:, :n_items]).numpy()[:len(vectors)]


def _seen_csr(rng, n_rows, n_items, most):
    seen = [np.sort(rng.choice(n_items, int(rng.integers(0, most + 1)), replace=False)) for _ in range(n_rows)]
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in seen])]).astype(np.int64)
    return seen, indptr, np.concatenate(seen).astype(np.int64)


@pytest.mark.parametrize("seed", range(5))
def test_reference_selects_like_a_brute_force_sort_with_heavy_ties(seed):
    """Exact order: score descending, then item index ascending; -inf rows pad with index -1."""
    rng = np.random.default_rng(seed)
    n_items = 40 + seed * 50  # 40 .. 240 items: k below, at and above half the row
    scores = rng.integers(0, 4, (64, n_items)).astype(np.float32)  # few distinct values: ties everywhere
    scores[rng.random(scores.shape) < 0.3] = -np.inf  # never selected
    scores[0] = -np.inf
    scores[1, 5] = np.nan  # never selected
    scores[2, :7] = np.inf  # ranks first, ties by index
    scores[3] = 0.0
    scores[3, ::3] = -0.0  # -0.0 ties with 0.0: order by index alone
    for k in (1, 5, 17, 40, n_items):
        s, i, short = _select(scores, k)
        assert not short.any()  # a -inf threshold is never short
        _assert_exact_topk(scores, k, s, i)


@pytest.mark.parametrize("order", ["random", "ascending", "descending"])
def test_reference_is_exact_on_long_rows_and_flags_what_a_threshold_leaves_short(order):
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((12, 5003)).astype(np.float32)
    scores[1] = np.round(scores[1], 1)  # long runs of equal scores
    scores[2] = 1.0 + np.float32(1e-7) * rng.integers(0, 3, 5003)  # a range a few ulps wide
    scores[3, rng.choice(5003, 40, replace=False)] = 1e30
    scores[4, 100:] = -np.inf  # fewer selectable items than k
    if order != "random":
        scores.sort(axis=1)
        if order == "descending":
            scores = np.ascontiguousarray(scores[:, ::-1])
    median = np.median(scores, axis=1)
    for k in (1, 10, 100, 1000):
        for thr in (None, median, np.full(12, np.nan)):
            guess = np.full(12, -np.inf, np.float32) if thr is None else thr.astype(np.float32)
            s, i, short = _select(scores, k, guess)
            above = (scores > guess[:, None]).sum(1)
            assert (short == ((above < k) & (guess != -np.inf))).all()  # NaN: nothing above it, short
            _assert_exact_topk(scores[~short], k, s[~short], i[~short])


def test_reference_excludes_exactly_the_seen_items_of_each_row():
    rng = np.random.default_rng(7)
    scores = rng.standard_normal((50, 300)).astype(np.float32)
    seen, indptr, indices = _seen_csr(rng, 20, 300, 290)
    rows = rng.integers(-1, 20, 50)  # -1: a row with nothing to exclude
    s, i, _ = _select(scores, 25, None, rows, indptr, indices)
    masked = scores.copy()
    for r in range(50):
        if rows[r] >= 0:
            masked[r, seen[rows[r]]] = -np.inf
    _assert_exact_topk(masked, 25, s, i)


@pytest.mark.parametrize("kind", ["normal", "few values", "signed zeros", "extremes"])
@pytest.mark.parametrize("c,k", [(1, 1), (7, 10), (32, 5), (33, 100), (64, 64), (65, 10), (100, 100),
                                 (128, 100), (129, 100), (160, 128), (161, 100), (192, 1), (193, 100),
                                 (256, 128)])
@needs_fused
def test_sortnet_orders_candidates_like_a_lexsort(c, k, kind):
    """Every path of the fused kernel's ordering (networks of 32, 64 and 128, the merges of
    129-256 candidates) against a lexsort: score descending, then item index ascending,
    -0.0 tied with 0.0 and written as 0.0."""
    from tasks.model.scoring.sortnet import ROOM, order

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
        order(cand, idx, c, k)
        m = min(c, k)
        ref = np.lexsort((items, -scores))[:m]
        assert idx[:m].tolist() == items[ref].tolist()
        np.testing.assert_array_equal(cand[:m] + np.float32(0.0), scores[ref] + np.float32(0.0))
        assert not np.signbit(cand[:m][cand[:m] == 0]).any()  # 0.0, not -0.0


def _kernel_inputs(seed):
    rng = np.random.default_rng(seed)
    n_rows, n_factors, n_items = int(rng.integers(1, 40)), int(rng.integers(1, 20)), int(rng.integers(1, 300))
    vectors = rng.standard_normal((n_rows, n_factors)).astype(np.float32)
    items = rng.standard_normal((n_items, n_factors)).astype(np.float32)
    if seed % 2:  # small integers: many equal scores
        vectors, items = np.round(vectors), np.round(items)
    items_t = Items.from_vectors(items).t
    if seed % 4 == 3:  # whole blocks of padding past the items, with scores that would be picked
        items_t = np.ascontiguousarray(np.concatenate([items_t, np.full((n_factors, 64), 9, np.float32)], 1))
    seen, indptr, indices = _seen_csr(rng, n_rows, n_items, n_items)
    rows = np.where(rng.random(n_rows) < 0.2, -1, np.arange(n_rows))  # -1: nothing excluded
    return rng, vectors, items, items_t, seen, indptr, indices, rows


@needs_fused
@pytest.mark.parametrize("seed", range(8))
def test_fused_kernel_is_bit_identical_to_the_reference(seed):
    """Each selection exact on its own scores for every threshold case (finite, above everything,
    NaN, -inf), seen items, padding columns, ties and k up to 128; where the fused build has FMA
    (one rounding per multiply-add, as MKL's kernels) the two agree bit for bit, scores included."""
    from tasks.model.scoring import fused

    rng, vectors, items, items_t, seen, indptr, indices, rows = _kernel_inputs(seed)
    n_items = len(items)
    scores = {name: own_scores(name, vectors, items_t, n_items) for name in ("fused", "reference")}
    np.testing.assert_allclose(scores["fused"], scores["reference"], rtol=1e-5, atol=1e-4)
    if fused.FMA:
        np.testing.assert_array_equal(scores["fused"].view(np.uint32), scores["reference"].view(np.uint32))
    for k in (1, 7, 33, 100, 128):
        k = min(k, n_items)
        for thr in (np.full(len(vectors), -np.inf), np.median(scores["fused"], axis=1),
                    np.full(len(vectors), 1e9), np.full(len(vectors), np.nan)):
            got = []
            for name, select in (("fused", fused.select), ("reference", reference.select)):
                out_s, out_i = np.full((len(vectors), k), 7, np.float32), np.full((len(vectors), k), 7, np.int64)
                short = np.zeros(len(vectors), dtype=np.bool_)
                n_short = select(vectors, items_t, n_items, rows, indptr, indices, k, thr.astype(np.float32),
                                 out_s, out_i, short)
                assert n_short == short.sum()
                masked = scores[name].copy()
                for r in range(len(vectors)):
                    if rows[r] >= 0:
                        masked[r, seen[r]] = -np.inf
                above = (masked > thr.astype(np.float32)[:, None]).sum(1)
                assert (short == ((above < k) & (thr != -np.inf))).all()  # short: fewer than k above a guess
                _assert_exact_topk(masked[~short], k, out_s[~short], out_i[~short])
                out_s[short], out_i[short] = 0, 0  # short rows are left unwritten: not compared
                got.append((out_s.view(np.uint32).copy(), out_i.copy(), short.copy()))
            if fused.FMA:
                for a, b in zip(*got, strict=True):
                    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("implementation", scoring.IMPLEMENTATIONS)
@pytest.mark.parametrize("seed", range(4))
def test_top_n_is_the_exact_top_n_of_the_scores(implementation, seed):
    """The interface, with thresholds from moments, reruns of short rows, chunks and threads,
    n past the fused kernel's 128 and past the number of items, against a brute-force sort."""
    if implementation == "fused" and scoring.choose("auto") != "fused":
        pytest.skip("the fused kernel is built and tested for x86-64 only")
    rng, vectors, items, items_t, seen, indptr, indices, rows = _kernel_inputs(seed)
    prepared = Items.from_vectors(items)
    for n in (1, 10, 129, len(items) + 3):
        runs = "fused" if implementation == "fused" and min(n, len(items)) <= 128 else "reference"
        masked = own_scores(runs, vectors, prepared.t, len(items))
        for r in range(len(vectors)):
            if rows[r] >= 0:
                masked[r, seen[rows[r]]] = -np.inf
        for chunk, threads in ((None, 1), (3, 2)):
            i, s = top_n(vectors, prepared, n, Seen(rows, indptr, indices), chunk_size=chunk, threads=threads,
                         implementation=implementation)
            assert i.shape == s.shape == (len(vectors), n) and i.dtype == np.int64 and s.dtype == np.float32
            _assert_exact_topk(masked, n, s, i)


def test_choice_of_implementation_and_what_top_n_refuses(monkeypatch):
    monkeypatch.delenv(scoring.ENV, raising=False)
    native = "fused" if platform.machine().lower() in ("x86_64", "amd64") else "reference"
    assert scoring.choose() == native
    monkeypatch.setenv(scoring.ENV, " Reference ")
    assert scoring.choose() == "reference"
    assert scoring.choose("fused") == "fused"  # an explicit argument wins
    monkeypatch.setenv(scoring.ENV, "gpu")
    with pytest.raises(ValueError, match="RECSYS_SCORER='gpu': expected auto, fused or reference"):
        scoring.choose()
    assert scoring._kernel("fused", 129) is reference.select  # past the sorting networks: the reference
    items = Items.from_vectors(np.ones((5, 3), np.float32))
    with pytest.raises(ValueError, match="n must be positive"):
        top_n(np.ones((2, 3), np.float32), items, 0, implementation="reference")
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        top_n(np.ones((2, 4), np.float32), items, 1, implementation="reference")
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        top_n(np.ones((2, 3), np.float32), items, 1, chunk_size=-1, implementation="reference")
    i, s = top_n(np.ones((0, 3), np.float32), items, 4, implementation="reference")
    assert i.shape == s.shape == (0, 4)


@pytest.mark.slow
@pytest.mark.skipif("NUMBA_BOUNDSCHECK" in os.environ or "NUMBA_CPU_NAME" in os.environ,
                    reason="already running in one of these modes")
@pytest.mark.parametrize("mode", [{"NUMBA_BOUNDSCHECK": "1"}, {"NUMBA_CPU_NAME": "generic"}],
                         ids=["bounds-checked", "generic-cpu"])
def test_kernels_in_a_checked_or_portable_build(tmp_path, mode):
    """Rerun this file and recommend's tests from a cold cache (1) with numba's bounds checks
    forced on: the kernels are compiled without them, and an out-of-bounds index then raises
    instead of corrupting memory; (2) for a generic x86-64 CPU (SSE2, no AVX2): the portable
    code paths of the vector IR."""
    env = {**os.environ, **mode, "NUMBA_CACHE_DIR": str(tmp_path)}
    model_tests = os.path.join(os.path.dirname(__file__), "test_model.py")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                           __file__, model_tests, "-k", "not test_model.py or recommend"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
