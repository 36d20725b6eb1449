"""Build the validated, immutable snapshot of one run date.

Input: every ratings file below the raw prefix, except those in a ``ds=YYYY-MM-DD``
partition later than the run date (so a backfill sees what existed then).
Output: ``ratings.parquet``, ``items.parquet`` and ``_manifest.json`` below ``out``.
On invalid input nothing is written to ``out``: the rejected files and a
``_reason.json`` go to ``quarantine`` and :class:`DataValidationError` is raised.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re

import numpy as np
import pandas as pd

from tasks import storage
from tasks.constants import ITEM_ID, ITEMS_FILE, MANIFEST_FILE, RATINGS_FILE, TIMESTAMP, TITLE, USER_ID
from tasks.data.schema import DataValidationError, Problem, iter_ratings, read_items, validate_ratings

log = logging.getLogger(__name__)
_PARTITION = re.compile(r"(?:^|/)ds=(\d{4}-\d{2}-\d{2})(?:/|$)")


def _skipped(uri: str) -> bool:
    """Marker and hidden files (``_SUCCESS``, ``.keep``) are not data."""
    return storage.basename(uri).startswith(("_", "."))


def select_files(files: list[str], ds: str) -> list[str]:
    chosen = []
    for uri in files:
        if _skipped(uri):
            continue
        match = _PARTITION.search(uri)
        if match and match.group(1) > ds:
            log.info("skipping %s: partition is later than the run date %s", uri, ds)
            continue
        chosen.append(uri)
    return chosen


def end_of_day(ds: str) -> int:
    day = dt.datetime.strptime(ds, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    return int((day + dt.timedelta(days=1)).timestamp()) - 1


def quarantine(files: list[str], dest: str, error: DataValidationError, ds: str) -> None:
    for uri in files:
        storage.copy(uri, storage.join(dest, storage.basename(uri)))
    storage.write_json(
        storage.join(dest, "_reason.json"),
        {
            "ds": ds,
            "rejected_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "files": files,
            "problems": [str(p) for p in error.problems],
        },
    )


def previous_manifest(out: str, ds: str) -> dict | None:
    """The manifest of the latest snapshot before ``ds`` next to ``out`` (``…/datasets/ds=D``)."""
    parent = out.rstrip("/").rsplit("/", 1)[0]
    best = None
    for uri in storage.list_files(parent):
        match = _PARTITION.search(uri)
        if uri.endswith(MANIFEST_FILE) and match and match.group(1) < ds and (best is None or match.group(1) > best[0]):
            best = (match.group(1), uri)
    return storage.read_json(best[1]) if best else None


def compact(df: pd.DataFrame) -> pd.DataFrame:
    """Ids as categoricals (a code per row, each distinct id once): what lets a large snapshot be
    held in a few times its file size."""
    return df.astype({USER_ID: "category", ITEM_ID: "category"})


def concat_compact(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate compact frames; the id categories are united (sorted, so ordering by an id
    column is ordering by the id string)."""
    from pandas.api.types import union_categoricals

    if len(parts) == 1 and all(parts[0][c].cat.categories.is_monotonic_increasing for c in (USER_ID, ITEM_ID)):
        return parts[0].reset_index(drop=True)
    cols = {c: union_categoricals([p[c] for p in parts], sort_categories=True, ignore_order=True)
            for c in (USER_ID, ITEM_ID)}
    rest = {c: np.concatenate([p[c].to_numpy() for p in parts]) for c in parts[0].columns if c not in cols}
    return pd.DataFrame({c: cols[c] if c in cols else rest[c] for c in parts[0].columns})


def write_ratings(uri: str, ratings: pd.DataFrame) -> None:
    """The snapshot's ratings.parquet with ids as plain strings (not Parquet dictionaries that
    pandas would read back as categoricals), built from the codes without a per-row Python string."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {}
    for c in ratings.columns:
        if isinstance(ratings[c].dtype, pd.CategoricalDtype):
            cat = ratings[c].cat
            arr = pa.DictionaryArray.from_arrays(pa.array(cat.codes.to_numpy(), pa.int32()),
                                                 pa.array(cat.categories.astype(str).to_numpy(dtype=object),
                                                          pa.string()))
            cols[c] = arr.dictionary_decode()
        else:
            cols[c] = pa.array(ratings[c].to_numpy())
    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf)
    storage.write_bytes(uri, buf.getvalue())


def build_snapshot(
    raw: str,
    ds: str,
    out: str,
    quarantine_uri: str,
    items: str | None = None,
    rating_min: float = 0.5,
    rating_max: float = 5.0,
    max_drop: float | None = 0.5,
) -> dict:
    """Validate every input file, then write the snapshot; returns its manifest."""
    files = select_files(storage.list_files(raw), ds)
    if not files:
        raise DataValidationError([Problem(raw, f"no ratings files for run date {ds}")])
    max_ts = end_of_day(ds)
    frames, problems, rejected = [], [], []
    for uri in files:
        try:
            parts, first_line = [], None
            for df, first in iter_ratings(uri):
                first_line = first if first_line is None else first_line
                parts.append(compact(validate_ratings(uri, df, first, rating_min=rating_min,
                                                      rating_max=rating_max, max_timestamp=max_ts)))
            part = concat_compact(parts)
            if len(parts) > 1:  # validate_ratings saw one chunk at a time: duplicates across chunks
                dup = part.duplicated([USER_ID, ITEM_ID, TIMESTAMP], keep="first").to_numpy()
                if dup.any():
                    raise DataValidationError([Problem(uri, "duplicate (user_id, item_id, timestamp) row",
                                                       line=first_line + int(dup.argmax()), count=int(dup.sum()))])
            frames.append(part)
            log.info("%s: %d valid rows", uri, len(part))
        except DataValidationError as err:
            problems.extend(err.problems)
            rejected.append(uri)
    item_files = [u for u in storage.list_files(items) if not _skipped(u)] if items else []
    catalogue = []
    for uri in item_files:
        try:
            catalogue.append(read_items(uri))
        except DataValidationError as err:
            problems.extend(err.problems)
            rejected.append(uri)
    if problems:
        error = DataValidationError(problems)
        quarantine(rejected, quarantine_uri, error, ds)
        log.error("rejected %d file(s), copied to %s", len(rejected), quarantine_uri)
        raise error

    ratings = concat_compact(frames)
    # A user who re-rates an item keeps the latest rating: one row per (user, item).
    before = len(ratings)
    ratings = (ratings.sort_values([USER_ID, ITEM_ID, TIMESTAMP], kind="stable")
               .drop_duplicates([USER_ID, ITEM_ID], keep="last").reset_index(drop=True))
    prev = previous_manifest(out, ds) if max_drop is not None else None
    if prev and len(ratings) < prev["rows"] * (1 - max_drop):
        # No single file is malformed: the reason alone goes to quarantine.
        error = DataValidationError([Problem(
            raw, f"{len(ratings)} ratings, down {1 - len(ratings) / prev['rows']:.0%} from {prev['rows']} in the "
                 f"snapshot of {prev['ds']} (more than --max-drop {max_drop:.0%}); an upstream export is probably "
                 f"truncated. Re-run with a larger --max-drop if the drop is real")])
        quarantine([], quarantine_uri, error, ds)
        raise error
    if catalogue:
        cat = pd.concat(catalogue, ignore_index=True).drop_duplicates(ITEM_ID, keep="last")
    else:
        cat = pd.DataFrame({ITEM_ID: pd.Series(dtype=str), TITLE: pd.Series(dtype=str)})
    known = set(cat[ITEM_ID])
    missing = sorted(set(ratings[ITEM_ID].unique()) - known)
    if missing:  # items without a catalogue entry still get a printable title
        cat = pd.concat([cat, pd.DataFrame({ITEM_ID: missing, TITLE: missing})], ignore_index=True)

    write_ratings(storage.join(out, RATINGS_FILE), ratings)
    storage.write_parquet(storage.join(out, ITEMS_FILE), cat)
    manifest = {
        "ds": ds,
        "sources": files,
        "item_sources": item_files,
        "rows": len(ratings),
        "rows_read": before,
        "users": int(ratings[USER_ID].nunique()),
        "items": int(ratings[ITEM_ID].nunique()),
        "catalogue_items": len(cat),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    # Written last: a snapshot without its manifest is incomplete.
    storage.write_json(storage.join(out, MANIFEST_FILE), manifest)
    return manifest
