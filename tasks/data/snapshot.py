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
from tasks.constants import ITEM_ID, RATING, TIMESTAMP, TITLE, USER_ID
from tasks.layout import ITEMS_FILE, MANIFEST_FILE, QUARANTINE_REASON, RATINGS_FILE
from tasks.schema import DataValidationError, Problem, iter_ratings, read_items, relocate, validate_chunk

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
        storage.join(dest, QUARANTINE_REASON),
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
        return self.encode_factorized(codes, np.asarray(uniques, dtype=object))

    def encode_factorized(self, codes: np.ndarray, uniques: np.ndarray) -> np.ndarray:
        """Rows given as ``codes`` into the chunk's distinct ``uniques``, as codes into the table."""
        if len(codes) and codes.min() < 0:  # a missing value: code -1 would index the last id
            raise ValueError("IdCodes.encode got a missing id; validate_ratings must reject it first")
        pos = self.ids.get_indexer(uniques)
        new = pos < 0
        if new.any():
            pos[new] = np.arange(len(self.ids), len(self.ids) + int(new.sum()))
            self.ids = self.ids.append(pd.Index(uniques[new], dtype=object))
        return pos.astype(np.int32)[codes]

    def ranks(self) -> tuple[np.ndarray, pd.Index]:
        """For each code its rank in id (string) order, and the sorted ids."""
        order = self.ids.argsort()
        rank = np.empty(len(order), dtype=np.int32)
        rank[order] = np.arange(len(order), dtype=np.int32)
        return rank, self.ids[order]


# A validated row as it waits on disk for the sort: codes, rating, timestamp (and, once
# distributed, its position in the concatenation of the accepted files).
SPILLED = np.dtype([(USER_ID, "<i4"), (ITEM_ID, "<i4"), (RATING, "<f4"), (TIMESTAMP, "<i8")])
BUCKETED = np.dtype(SPILLED.descr + [("row", "<i8")])
BUCKET_ROWS = 1 << 18  # rows sorted in memory at once (a user's rows are never split)


def _read_records(f, dtype: np.dtype, start: int, count: int) -> np.ndarray:
    f.seek(start * dtype.itemsize)
    data = np.empty(count, dtype=dtype)
    f.readinto(data.data.cast("B"))
    return data


def _equal_runs(order: np.ndarray, columns: list[np.ndarray]) -> np.ndarray:
    """For rows in ``order``: whether each row (from the second) equals the previous one on
    every column."""
    same = np.ones(max(len(order) - 1, 0), dtype=bool)
    for col in columns:
        sorted_col = col[order]
        same &= sorted_col[1:] == sorted_col[:-1]
        del sorted_col
    return same


class RatingsWriter:
    """The snapshot's ratings.parquet, written a sorted bucket at a time to a temporary file, with
    ids as plain strings (not Parquet dictionaries that pandas would read back as categoricals)."""

    def __init__(self, ids: dict[str, pd.Index]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.dictionaries = {c: pa.array(v.to_numpy(dtype=object), pa.string()) for c, v in ids.items()}
        self.schema = pa.schema([(USER_ID, pa.string()), (ITEM_ID, pa.string()), (RATING, pa.float32()),
                                 (TIMESTAMP, pa.int64())])
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close(); on disk, not in memory
        self.writer = pq.ParquetWriter(self.file, self.schema)

    def write(self, columns: dict[str, np.ndarray]) -> None:
        import pyarrow as pa

        part = {c: (pa.DictionaryArray.from_arrays(pa.array(v, pa.int32()), self.dictionaries[c]).dictionary_decode()
                    if c in self.dictionaries else pa.array(v)) for c, v in columns.items()}
        self.writer.write_table(pa.table(part, schema=self.schema))

    def upload(self, uri: str) -> None:
        self.writer.close()
        self.file.seek(0)
        storage.write_file(uri, self.file)

    def close(self) -> None:
        self.writer.close()
        self.file.close()


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

    Memory is bounded by a chunk and a bucket, not by the input (an external sort): every file
    is read once, in chunks (:func:`iter_ratings`); each validated chunk is encoded (ids as int32
    codes, :class:`IdCodes`) and appended to a temporary file. Once every file is read, the ids'
    sort order is known: the rows are distributed into buckets of about :data:`BUCKET_ROWS`
    rows by ranges of user id (a user's rows in one bucket), and each bucket is sorted by (user,
    item, timestamp) in memory, which finds duplicates within a file (across chunks too),
    resolves re-ratings and ties, and is written as the next rows of ratings.parquet: buckets
    in user order make the whole file sorted by user, item."""
    files = select_files(storage.list_files(raw), ds)
    if not files:
        raise DataValidationError([Problem(raw, f"no ratings files for run date {ds}")])
    max_ts = end_of_day(ds)
    users, items_codes = IdCodes(), IdCodes()
    # per accepted file: its uri, its first row in the concatenation and the line of its first row
    spans: list[tuple[str, int, int]] = []
    problems, rejected, total = [], [], 0
    with tempfile.TemporaryFile() as spill, tempfile.TemporaryFile() as buckets:
        for uri in files:
            rows, first_line = 0, None
            try:
                for df, first in iter_ratings(uri):
                    first_line = first if first_line is None else first_line
                    valid = validate_chunk(uri, df, first, rating_min=rating_min, rating_max=rating_max,
                                           max_timestamp=max_ts)
                    del df
                    rec = np.empty(len(valid), dtype=SPILLED)
                    rec[USER_ID] = users.encode_factorized(valid.user_codes, valid.user_ids)
                    rec[ITEM_ID] = items_codes.encode_factorized(valid.item_codes, valid.item_ids)
                    rec[RATING], rec[TIMESTAMP] = valid.rating, valid.timestamp
                    del valid
                    spill.write(rec.data.cast("B"))
                    rows += len(rec)
                    del rec
                    storage.release_freed_memory()  # else the allocators keep every chunk's buffers
            except DataValidationError as err:
                problems.extend(relocate(uri, err.problems))
                rejected.append(uri)
                spill.truncate(total * SPILLED.itemsize)  # this file's rows are not part of the snapshot
                spill.seek(0, 2)
                continue
            spans.append((uri, total, first_line or 0))  # 0: no rows, so never a duplicate's line
            total += rows
            log.info("%s: %d valid rows", uri, rows)
        storage.release_freed_memory()  # the chunks' buffers, freed but kept by the allocators
        item_files = data_files(storage.list_files(items)) if items else []
        catalogue = []
        for uri in item_files:
            try:
                catalogue.append(read_items(uri))
            except DataValidationError as err:
                problems.extend(err.problems)
                rejected.append(uri)

        user_rank, user_ids = users.ranks()
        item_rank, item_ids = items_codes.ranks()
        # Buckets: consecutive user ranks holding about BUCKET_ROWS rows; their offsets in `buckets`.
        per_user = np.zeros(len(user_ids), dtype=np.int64)
        for start in range(0, total, BUCKET_ROWS):
            chunk = _read_records(spill, SPILLED, start, min(BUCKET_ROWS, total - start))
            per_user += np.bincount(user_rank[chunk[USER_ID]], minlength=len(user_ids))
        before_user = np.cumsum(per_user) - per_user
        _, bucket_of_rank = np.unique(before_user // BUCKET_ROWS, return_inverse=True)
        bucket_of_rank = bucket_of_rank.astype(np.int32)
        sizes = np.bincount(bucket_of_rank, weights=per_user, minlength=1).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        del per_user, before_user
        cursor = offsets[:-1].copy()
        for start in range(0, total, BUCKET_ROWS):
            chunk = _read_records(spill, SPILLED, start, min(BUCKET_ROWS, total - start))
            rec = np.empty(len(chunk), dtype=BUCKETED)
            rec[USER_ID] = user_rank[chunk[USER_ID]]
            rec[ITEM_ID] = item_rank[chunk[ITEM_ID]]
            rec[RATING], rec[TIMESTAMP] = chunk[RATING], chunk[TIMESTAMP]
            rec["row"] = np.arange(start, start + len(chunk))
            del chunk
            bucket = bucket_of_rank[rec[USER_ID]]
            rec = rec[np.argsort(bucket, kind="stable")]  # file order kept within a bucket
            counts = np.bincount(bucket, minlength=len(sizes))
            del bucket
            at = 0
            for k in map(int, np.flatnonzero(counts)):
                buckets.seek(int(cursor[k]) * BUCKETED.itemsize)
                buckets.write(rec[at:at + counts[k]].data.cast("B"))
                cursor[k] += counts[k]
                at += int(counts[k])
            del rec
        spill.close()

        # Each bucket: one stable sort; rows equal on (user, item, timestamp) stay in file order,
        # files in listing order.
        starts = np.array([s[1] for s in spans], dtype=np.int64)
        dups: dict[int, tuple[int, int]] = {}  # file -> (first duplicate row, count)
        conflicts, n_rows = 0, 0
        users_seen = np.zeros(len(user_ids), dtype=bool)
        present = np.zeros(len(item_ids), dtype=bool)
        writer = RatingsWriter({USER_ID: user_ids, ITEM_ID: item_ids})
        try:
            for b in range(len(sizes)):
                rec = _read_records(buckets, BUCKETED, int(offsets[b]), int(sizes[b]))
                if not len(rec):
                    continue
                u, i, ts = rec[USER_ID].copy(), rec[ITEM_ID].copy(), rec[TIMESTAMP].copy()
                order = np.lexsort((ts, i, u))  # by user, then item, then timestamp
                same_pair = _equal_runs(order, [u, i])
                same_row = same_pair & _equal_runs(order, [ts])
                if same_row.any():  # validate_chunk saw one chunk at a time: duplicates across chunks
                    row = rec["row"]
                    later, earlier = row[order[1:][same_row]], row[order[:-1][same_row]]
                    file_of = np.searchsorted(starts, later, side="right") - 1
                    # the same row in two files is a re-export, not an error
                    within = file_of == np.searchsorted(starts, earlier, side="right") - 1
                    for f in np.unique(file_of[within]):
                        at_rows = later[within & (file_of == f)]
                        first_dup, count = dups.get(int(f), (int(at_rows.min()), 0))
                        dups[int(f)] = (min(first_dup, int(at_rows.min())), count + len(at_rows))
                    # Ties across files: the same (user, item, timestamp) in two files. The same rating
                    # is a re-export; different ratings are a conflict no timestamp can decide. Rule
                    # (docs/reliability.md): the file listed last wins (keys sort by name, so a later
                    # ds= partition, or a later part-NNNN, wins), as for re-ratings at equal times.
                    rating = rec[RATING]
                    conflicts += int((rating[order[1:][same_row]] != rating[order[:-1][same_row]]).sum())
                # A user who re-rates an item keeps the latest rating: one row per (user, item).
                keep = order[np.append(~same_pair, True)]  # the last row of each (user, item) run
                del order, same_pair, same_row
                columns = {USER_ID: u[keep], ITEM_ID: i[keep], RATING: rec[RATING][keep], TIMESTAMP: ts[keep]}
                del rec, u, i, ts, keep
                users_seen[columns[USER_ID]] = True
                present[columns[ITEM_ID]] = True
                n_rows += len(columns[RATING])
                if not problems and not dups:
                    writer.write(columns)
                del columns
                storage.release_freed_memory()
            for f, (dup_row, count) in sorted(dups.items()):
                uri, file_start, first_line = spans[f]
                problems.extend(relocate(uri, [Problem(uri, "duplicate (user_id, item_id, timestamp) row",
                                                       line=first_line + dup_row - file_start, count=count)]))
                rejected.append(uri)
            if problems:
                error = DataValidationError(problems)
                quarantine(rejected, quarantine_uri, error, ds)
                log.error("rejected %d file(s), copied to %s", len(rejected), quarantine_uri)
                raise error
            if conflicts:
                log.warning("%d (user_id, item_id, timestamp) row(s) appear in two files with different "
                            "ratings: the rating of the file listed last is kept", conflicts)
            before = total
            storage.release_freed_memory()
            manifest = _finish(out, ds, raw, quarantine_uri, max_drop, writer, catalogue, item_ids, present,
                               n_rows=n_rows, rows_read=before, users=int(users_seen.sum()),
                               files=files, item_files=item_files, conflicts=conflicts)
        finally:
            writer.close()
    return manifest


def _finish(out: str, ds: str, raw: str, quarantine_uri: str, max_drop: float | None, writer: RatingsWriter,
            catalogue: list[pd.DataFrame], item_ids: pd.Index, present: np.ndarray, *, n_rows: int,
            rows_read: int, users: int, files: list[str], item_files: list[str], conflicts: int) -> dict:
    """The row-count guard, the catalogue and the upload of a snapshot whose rows are written."""
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
    known = set(cat[ITEM_ID])
    missing = sorted(set(item_ids[present]) - known)
    if missing:  # items without a catalogue entry still get a printable title
        cat = pd.concat([cat, pd.DataFrame({ITEM_ID: missing, TITLE: missing})], ignore_index=True)

    writer.upload(storage.join(out, RATINGS_FILE))
    storage.write_parquet(storage.join(out, ITEMS_FILE), cat)
    manifest = {
        "ds": ds,
        "sources": files,
        "item_sources": item_files,
        "rows": n_rows,
        "rows_read": rows_read,
        "users": users,
        "items": int(present.sum()),
        "catalogue_items": len(cat),
        "tie_conflicts": conflicts,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    # Written last: a snapshot without its manifest is incomplete.
    storage.write_json(storage.join(out, MANIFEST_FILE), manifest)
    return manifest
