"""Build the validated, immutable snapshot of one run date.

Input: every ratings file below the raw prefix, except those in a ``ds=YYYY-MM-DD``
partition later than the run date (so a backfill sees what existed then).
Output: ``ratings.parquet``, ``items.parquet`` and ``_manifest.json`` below ``out``.
On invalid input nothing is written to ``out``: the rejected files and a
``_reason.json`` go to ``quarantine`` and :class:`DataValidationError` is raised.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import tempfile

import numpy as np
import pandas as pd

from tasks import storage
from tasks.constants import ITEM_ID, ITEMS_FILE, MANIFEST_FILE, RATING, RATINGS_FILE, TIMESTAMP, TITLE, USER_ID
from tasks.data.schema import DataValidationError, Problem, iter_ratings, read_items, relocate, validate_ratings

log = logging.getLogger(__name__)
_PARTITION = re.compile(r"(?:^|/)ds=(\d{4}-\d{2}-\d{2})(?:/|$)")


def _skipped(uri: str) -> str | None:
    """Why ``uri`` is not data, or None. Conventional markers, never fatal: a "folder" object
    (a key ending in ``/``, what the S3 console's *Create folder* makes), Hadoop's ``_$folder$``
    markers, ``_SUCCESS`` and other ``_``/``.`` files (``.keep``), ``.crc`` checksums."""
    name = storage.basename(uri)
    if uri.endswith("/"):
        return "a folder marker (key ending in '/')"
    if name.endswith("_$folder$"):
        return "a Hadoop folder marker (_$folder$)"
    if name.endswith(".crc"):
        return "a checksum file (.crc)"
    if name.startswith(("_", ".")):
        return "a marker or hidden file (_… or .…)"
    return None


def data_files(files: list[str]) -> list[str]:
    """``files`` without markers, each skipped one logged."""
    chosen = []
    for uri in files:
        why = _skipped(uri)
        if why:
            log.info("skipping %s: %s, not data", uri, why)
        else:
            chosen.append(uri)
    return chosen


def select_files(files: list[str], ds: str) -> list[str]:
    chosen = []
    for uri in data_files(files):
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


class IdCodes:
    """One id column as int32 codes into a growing table of distinct ids, shared by every chunk
    of every file: a chunk's strings are dropped once encoded and only new ids are kept, so a
    large snapshot is held as a few bytes per row (no Python string per row)."""

    def __init__(self) -> None:
        self.ids = pd.Index([], dtype=object)

    def encode(self, values: pd.Series) -> np.ndarray:
        codes, uniques = pd.factorize(values)
        if len(codes) and codes.min() < 0:  # a missing value: code -1 would index the last id
            raise ValueError("IdCodes.encode got a missing id; validate_ratings must reject it first")
        pos = self.ids.get_indexer(uniques)
        new = pos < 0
        if new.any():
            pos[new] = np.arange(len(self.ids), len(self.ids) + int(new.sum()))
            self.ids = self.ids.append(pd.Index(uniques[new], dtype=object))
        return pos.astype(np.int32)[codes]

    def sorted(self, codes: np.ndarray) -> tuple[np.ndarray, pd.Index]:
        """Codes renumbered so that code order is id (string) order, and the sorted ids."""
        order = self.ids.argsort()
        rank = np.empty(len(order), dtype=np.int32)
        rank[order] = np.arange(len(order), dtype=np.int32)
        return rank[codes], self.ids[order]


def _equal_runs(order: np.ndarray, columns: list[np.ndarray]) -> np.ndarray:
    """For rows in ``order``: whether each row (from the second) equals the previous one on
    every column. One gathered column at a time, to bound the peak."""
    same = np.ones(max(len(order) - 1, 0), dtype=bool)
    for col in columns:
        sorted_col = col[order]
        same &= sorted_col[1:] == sorted_col[:-1]
        del sorted_col
    return same


def write_ratings(uri: str, columns: dict[str, np.ndarray], ids: dict[str, pd.Index],
                  row_group: int = 1 << 20) -> None:
    """The snapshot's ratings.parquet with ids as plain strings (not Parquet dictionaries that
    pandas would read back as categoricals), decoded from the codes one row group at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dictionaries = {c: pa.array(v.to_numpy(dtype=object), pa.string()) for c, v in ids.items()}
    n = len(next(iter(columns.values())))
    buf = tempfile.TemporaryFile()  # noqa: SIM115 - closed below; on disk, not beside the table in memory
    schema = pa.schema([(c, pa.string() if c in ids else pa.from_numpy_dtype(v.dtype)) for c, v in columns.items()])
    with pq.ParquetWriter(buf, schema) as writer:
        for start in range(0, max(n, 1), row_group):
            part = {}
            for c, v in columns.items():
                piece = v[start:start + row_group]
                part[c] = (pa.DictionaryArray.from_arrays(pa.array(piece, pa.int32()), dictionaries[c])
                           .dictionary_decode() if c in ids else pa.array(piece))
            writer.write_table(pa.table(part, schema=schema))
    try:
        buf.seek(0)
        storage.write_file(uri, buf)
    finally:
        buf.close()


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
    """Validate every input file, then write the snapshot; returns its manifest.

    Every file is read once, in chunks (:func:`iter_ratings`); each validated chunk is kept as id
    codes and numbers only. Duplicates within a file (across chunks too) are found, and
    re-ratings resolved, with one stable sort of the codes."""
    files = select_files(storage.list_files(raw), ds)
    if not files:
        raise DataValidationError([Problem(raw, f"no ratings files for run date {ds}")])
    max_ts = end_of_day(ds)
    users, items_codes = IdCodes(), IdCodes()
    parts: dict[str, list[np.ndarray]] = {USER_ID: [], ITEM_ID: [], RATING: [], TIMESTAMP: []}
    # per accepted file: its uri, its first row in the concatenation and the line of its first row
    spans: list[tuple[str, int, int]] = []
    problems, rejected, total = [], [], 0
    for uri in files:
        kept: dict[str, list[np.ndarray]] = {c: [] for c in parts}
        try:
            first_line: int | None = None
            for df, first in iter_ratings(uri):
                first_line = first if first_line is None else first_line
                valid = validate_ratings(uri, df, first, rating_min=rating_min, rating_max=rating_max,
                                         max_timestamp=max_ts)
                del df
                kept[USER_ID].append(users.encode(valid[USER_ID]))
                kept[ITEM_ID].append(items_codes.encode(valid[ITEM_ID]))
                kept[RATING].append(valid[RATING].to_numpy(dtype=np.float32))
                kept[TIMESTAMP].append(valid[TIMESTAMP].to_numpy(dtype=np.int64))
                del valid
        except DataValidationError as err:
            problems.extend(relocate(uri, err.problems))
            rejected.append(uri)
            continue
        rows = sum(len(a) for a in kept[RATING])
        for c in parts:
            parts[c].extend(kept.pop(c))
        spans.append((uri, total, first_line or 0))  # 0: no rows, so never a duplicate's line
        total += rows
        log.info("%s: %d valid rows", uri, rows)
    item_files = data_files(storage.list_files(items)) if items else []
    catalogue = []
    for uri in item_files:
        try:
            catalogue.append(read_items(uri))
        except DataValidationError as err:
            problems.extend(err.problems)
            rejected.append(uri)

    def concat(c):
        arrays, parts[c] = parts[c], []
        return np.concatenate(arrays) if arrays else np.empty(0, dtype=np.float32 if c == RATING else np.int64)

    user_codes, user_ids = users.sorted(concat(USER_ID))
    item_codes, item_ids = items_codes.sorted(concat(ITEM_ID))
    ts = concat(TIMESTAMP)
    storage.release_freed_memory()  # the chunks' arrays, freed but kept by the allocator
    # Stable: rows equal on (user, item, timestamp) stay in file order, files in listing order.
    order = np.lexsort((ts, item_codes, user_codes))  # by user, then item, then timestamp
    same_pair = _equal_runs(order, [user_codes, item_codes])
    same_row = same_pair & _equal_runs(order, [ts])
    if same_row.any():  # validate_ratings saw one chunk at a time: duplicates across chunks
        starts = np.array([s[1] for s in spans])
        later = order[1:][same_row]  # the second of each equal pair, in file order
        file_of = np.searchsorted(starts, later, side="right") - 1
        earlier_file = np.searchsorted(starts, order[:-1][same_row], side="right") - 1
        within = file_of == earlier_file  # the same row in two files is a re-export, not an error
        for f in np.unique(file_of[within]):
            uri, start, first_line = spans[f]
            rows = later[within & (file_of == f)]
            problems.extend(relocate(uri, [Problem(uri, "duplicate (user_id, item_id, timestamp) row",
                                                   line=first_line + int(rows.min()) - start, count=len(rows))]))
            rejected.append(uri)
    if problems:
        error = DataValidationError(problems)
        quarantine(rejected, quarantine_uri, error, ds)
        log.error("rejected %d file(s), copied to %s", len(rejected), quarantine_uri)
        raise error

    # Ties across files: the same (user, item, timestamp) in two files. The same rating is a
    # re-export; different ratings are a conflict no timestamp can decide. Rule (docs/reliability.md,
    # "Input rules"): the file listed last wins (keys sort by name, so a later ds= partition,
    # or a later part-NNNN, wins), the same as for re-ratings at equal times; counted and logged.
    conflicts, rating = 0, None
    if same_row.any():
        rating = concat(RATING)
        conflicts = int((rating[order[1:][same_row]] != rating[order[:-1][same_row]]).sum())
    if conflicts:
        log.warning("%d (user_id, item_id, timestamp) row(s) appear in two files with different ratings: "
                    "the rating of the file listed last is kept", conflicts)
    # A user who re-rates an item keeps the latest rating: one row per (user, item).
    before = len(order)
    keep = order[np.append(~same_pair, True)]  # the last row of each (user, item) run
    del order, same_pair, same_row
    columns = {USER_ID: user_codes[keep], ITEM_ID: item_codes[keep]}
    del user_codes, item_codes
    columns[RATING] = (concat(RATING) if rating is None else rating)[keep]
    del rating
    columns[TIMESTAMP] = ts[keep]
    del ts, keep
    storage.release_freed_memory()
    n_rows = len(columns[RATING])
    prev = previous_manifest(out, ds) if max_drop is not None else None
    if prev and max_drop is not None and n_rows < prev["rows"] * (1 - max_drop):
        # No single file is malformed: the reason alone goes to quarantine.
        error = DataValidationError([Problem(
            raw, f"{n_rows} ratings, down {1 - n_rows / prev['rows']:.0%} from {prev['rows']} in the "
                 f"snapshot of {prev['ds']} (more than --max-drop {max_drop:.0%}); an upstream export is probably "
                 f"truncated. Re-run with a larger --max-drop if the drop is real")])
        quarantine([], quarantine_uri, error, ds)
        raise error
    if catalogue:
        cat = pd.concat(catalogue, ignore_index=True).drop_duplicates(ITEM_ID, keep="last")
    else:
        cat = pd.DataFrame({ITEM_ID: pd.Series(dtype=str), TITLE: pd.Series(dtype=str)})
    present = np.bincount(columns[ITEM_ID], minlength=len(item_ids)) > 0
    known = set(cat[ITEM_ID])
    missing = sorted(set(item_ids[present]) - known)
    if missing:  # items without a catalogue entry still get a printable title
        cat = pd.concat([cat, pd.DataFrame({ITEM_ID: missing, TITLE: missing})], ignore_index=True)

    write_ratings(storage.join(out, RATINGS_FILE), columns, {USER_ID: user_ids, ITEM_ID: item_ids})
    storage.write_parquet(storage.join(out, ITEMS_FILE), cat)
    manifest = {
        "ds": ds,
        "sources": files,
        "item_sources": item_files,
        "rows": n_rows,
        "rows_read": before,
        "users": int((np.bincount(columns[USER_ID], minlength=len(user_ids)) > 0).sum()),
        "items": int(present.sum()),
        "catalogue_items": len(cat),
        "tie_conflicts": conflicts,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    # Written last: a snapshot without its manifest is incomplete.
    storage.write_json(storage.join(out, MANIFEST_FILE), manifest)
    return manifest
