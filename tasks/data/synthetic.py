"""Synthetic ratings with MovieLens' shape and a planted biased low-rank structure.

Deterministic for a seed and fully vectorised. The latent model is
``z = b_u + b_i + <p_u, q_i> + noise`` with ``z`` mapped onto the MovieLens rating
histogram by quantiles, so a well-trained biased MF has real structure to find
and a known noise level it cannot beat.

*Which* items a user rates is not random either (as in MovieLens, people rate
what they chose to watch): users belong to taste groups, a user's factors are
their group's taste plus individual noise, and each group draws items by
``popularity * exp(selection * <taste_g, q_i>)``. So the rated/not-rated
pattern carries signal a ranking model can learn, popular items are still
rated most, and chosen items are rated a little higher than random ones.

Calibration: ``noise`` and ``selection`` are set so that the *reference
baselines* (scikit-surprise's ``SVD()`` and the most-popular list) land near
their published MovieLens-100k figures; see ``bench/train_bench.py``. The
generator was never tuned against this project's own model.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.constants import GENRES, ITEM_ID, RATING, TIMESTAMP, TITLE, USER_ID

# Share of 1..5 stars in MovieLens 100k.
MOVIELENS_HISTOGRAM = np.array([0.0611, 0.1137, 0.2715, 0.3417, 0.2120])


@dataclass(frozen=True)
class Preset:
    users: int
    items: int
    ratings: int


PRESETS = {
    "ml-100k": Preset(943, 1682, 100_000),
    "ml-1m": Preset(6040, 3706, 1_000_209),
    "ml-25m": Preset(162_541, 59_047, 25_000_095),
}


def _user_counts(rng, n_users: int, n_ratings: int, n_items: int, minimum: int) -> np.ndarray:
    minimum = min(minimum, n_ratings // n_users, n_items)
    weights = rng.lognormal(0.0, 1.1, n_users)
    counts = minimum + rng.multinomial(n_ratings - minimum * n_users, weights / weights.sum())
    cap = max(minimum, int(0.6 * n_items))
    # Move the overflow of capped users to the others, preserving the total exactly.
    overflow = int(np.clip(counts - cap, 0, None).sum())
    counts = np.minimum(counts, cap)
    while overflow:
        room = cap - counts
        take = rng.multinomial(overflow, room / room.sum())
        take = np.minimum(take, room)
        counts += take
        overflow -= int(take.sum())
    return counts


def _sample_pairs(rng, counts: np.ndarray, weights: np.ndarray, group: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs, ``counts[u]`` per user, items drawn by the
    user's group row of ``weights`` (groups x items)."""
    n_groups, n_items = weights.shape
    users = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    cdf = np.cumsum(weights, axis=1)
    cdf = (cdf / cdf[:, -1:]).clip(max=1 - 1e-12)
    g = group[users]

    def draw(rows):
        # one group at a time: its CDF stays in cache (a 25M-row search over all
        # groups' CDFs at once is 4x slower)
        out = np.empty(len(rows), dtype=np.int64)
        by_group = np.argsort(g[rows], kind="stable")
        bounds = np.searchsorted(g[rows][by_group], np.arange(n_groups + 1))
        u = rng.random(len(rows))
        for gi in range(n_groups):
            sel = by_group[bounds[gi]:bounds[gi + 1]]
            out[sel] = np.searchsorted(cdf[gi], u[sel])
        return out.clip(0, n_items - 1)

    items = draw(np.arange(len(users))).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    active = np.arange(len(users))  # rows to check: after the first pass, only users with repeats
    for attempt in range(200):
        keys = users[active] * n_items + items[active]
        order = np.argsort(keys, kind="stable")
        dup = np.zeros(len(keys), dtype=bool)
        dup[order[1:]] = keys[order[1:]] == keys[order[:-1]]
        if not dup.any():
            break
        # Resample only the duplicates; after a while fall back to uniform draws
        # so heavy users of a skewed catalogue still converge.
        rows = active[dup]
        items[rows] = (draw(rows) if attempt < 20 else rng.integers(0, n_items, len(rows)))
        bad = np.unique(users[rows])
        lengths = counts[bad]
        active = np.repeat(starts[bad], lengths) + np.arange(lengths.sum()) - np.repeat(
            np.cumsum(lengths) - lengths, lengths)
    else:  # pragma: no cover - needs counts close to the catalogue size
        raise RuntimeError("could not draw distinct pairs; lower the ratings per user")
    return users, items


def generate(
    n_users: int = 943,
    n_items: int = 1682,
    n_ratings: int = 100_000,
    *,
    seed: int = 0,
    factors: int = 8,
    noise: float = 0.77,
    signal: float = 0.8,
    selection: float = 1.5,
    groups: int | None = None,
    min_per_user: int = 20,
    start: str = "2024-01-01",
    end: str = "2025-12-31",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(ratings, items)`` in the canonical schema with integer ids from 1."""
    if n_ratings > n_users * n_items * 0.6:
        raise ValueError(f"{n_ratings} ratings do not fit {n_users} users x {n_items} items at <=60% density")
    rng = np.random.default_rng(seed)

    # Zipf-like popularity over a random permutation of items.
    rank = rng.permutation(n_items)
    popularity = 1.0 / (rank + 10.0) ** 1.1
    popularity /= popularity.sum()
    counts = _user_counts(rng, n_users, n_ratings, n_items, min_per_user)

    # Taste groups: a user's factors are the group's taste plus individual noise.
    n_groups = groups or int(np.clip(n_users // 40, 4, 64))
    # per-dimension scale so that <p_u, q_i> has standard deviation ``signal``
    scale = (signal / np.sqrt(factors)) ** 0.5
    taste = rng.normal(0.0, scale, (n_groups, factors))
    group = rng.integers(0, n_groups, n_users)
    p = (0.8 * taste[group] + rng.normal(0.0, 0.6 * scale, (n_users, factors))).astype(np.float32)
    q = rng.normal(0.0, scale, (n_items, factors)).astype(np.float32)
    affinity = taste @ q.T  # (groups, items)
    affinity = (affinity - affinity.mean()) / (affinity.std() + 1e-12)
    weights = popularity[None, :] * np.exp(selection * affinity)
    users, items = _sample_pairs(rng, counts, weights, group)

    b_user = rng.normal(0.0, 0.35, n_users)
    # Popular items are rated a little higher, as in MovieLens.
    log_pop = np.log(popularity)
    b_item = rng.normal(0.0, 0.45, n_items) + 0.25 * (log_pop - log_pop.mean()) / log_pop.std()
    z = b_user[users] + b_item[items] + np.einsum("nk,nk->n", p[users], q[items]) + rng.normal(0.0, noise, len(users))
    edges = np.quantile(z, np.cumsum(MOVIELENS_HISTOGRAM)[:-1])
    rating = (np.searchsorted(edges, z) + 1).astype(np.float32)

    t0 = dt.datetime.fromisoformat(start).replace(tzinfo=dt.timezone.utc).timestamp()
    t1 = dt.datetime.fromisoformat(end).replace(tzinfo=dt.timezone.utc).timestamp()
    first = rng.uniform(t0, t1 - 30 * 86400, n_users)
    span = rng.exponential(60 * 86400, n_users)
    ts = first[users] + rng.random(len(users)) * span[users]
    ts = np.minimum(ts, t1).astype(np.int64)

    # by user, then time (users are already grouped: one int64 key sorts both)
    order = np.argsort(users * (1 << 32) + (ts - ts.min()), kind="stable")
    ratings = pd.DataFrame({USER_ID: users[order] + 1, ITEM_ID: items[order] + 1, RATING: rating[order],
                            TIMESTAMP: ts[order]})
    genres = np.array(["Action", "Comedy", "Drama", "Romance", "Thriller", "Sci-Fi", "Documentary"])
    catalogue = pd.DataFrame({
        ITEM_ID: np.arange(1, n_items + 1),
        TITLE: [f"Synthetic Movie {i} ({1950 + i % 70})" for i in range(1, n_items + 1)],
        GENRES: genres[rng.integers(0, len(genres), n_items)],
    })
    return ratings, catalogue


def generate_preset(name: str, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    try:
        preset = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
    return generate(preset.users, preset.items, preset.ratings, seed=seed)
