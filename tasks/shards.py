"""What scoring and publishing share: which users a score shard holds, where its manifest goes,
the snapshot's inputs and the rows' expiry. ``tasks.score`` writes a shard's rows and manifest;
``tasks.publish`` checks every shard's manifest and every eligible user's row against the same
rules, so neither stage imports the other.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from tasks import layout, storage
from tasks.constants import ITEM_ID, TITLE, USER_ID
from tasks.layout import ITEMS_FILE, RATINGS_FILE


def eligible_users(user_ids: np.ndarray, min_ratings: int = 1) -> np.ndarray:
    """Sorted distinct users with at least ``min_ratings`` ratings; the others get the fallback list."""
    counts = pd.Series(user_ids).value_counts(sort=False)  # distinct raw ids first: cheap at 25M
    users = counts.index.to_numpy()[counts.to_numpy() >= max(1, min_ratings)]
    users = users.astype(str)
    if len(np.unique(users)) != len(users):  # e.g. 1 and "1" in one object column
        return eligible_users(np.asarray(user_ids).astype(str), min_ratings)
    return np.sort(users)


def shard_users(user_ids: np.ndarray, index: int, count: int, min_ratings: int = 1) -> np.ndarray:
    """Users of one shard: every count-th of the sorted eligible ids (balanced, stable)."""
    return eligible_users(user_ids, min_ratings)[index::count]


def manifest_uri(model_uri: str, index: int, count: int) -> str:
    """Shard ``index`` of ``count``'s manifest below the model (``tasks.layout``)."""
    return storage.join(model_uri, layout.SHARDS_DIR, layout.shard_manifest_name(index, count))


def load_inputs(ratings_uri: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """The snapshot's (user, item) ratings and its item titles (``{}`` without a catalogue)."""
    if ratings_uri.endswith(".parquet"):
        return storage.read_parquet(ratings_uri, [USER_ID, ITEM_ID]), {}
    ratings = storage.read_parquet(storage.join(ratings_uri, RATINGS_FILE), [USER_ID, ITEM_ID])
    titles: dict[str, str] = {}
    items_uri = storage.join(ratings_uri, ITEMS_FILE)
    if storage.exists(items_uri):
        items = storage.read_parquet(items_uri, [ITEM_ID, TITLE])
        titles = dict(zip(items[ITEM_ID].astype(str), items[TITLE].astype(str), strict=True))
    return ratings, titles


def expiry(days: int) -> int:
    """The TTL (epoch seconds) of rows written now that live ``days`` days."""
    return int(time.time() + days * 86400)
