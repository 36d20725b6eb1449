"""Read ratings and item files in the canonical and MovieLens layouts, and validate them.

Every problem is reported as a :class:`DataValidationError` naming the file, the
line (text: the physical line, 1-based, counting the header, blank lines and every line of a
quoted multi-line field) or row (Parquet: 1-based), the column, the value and what was expected.

Types are handled explicitly, never by accident of pandas' conversion: a Parquet column of a
type whose meaning is certain is converted (integer ids to strings; dictionary-encoded columns
decoded; DECIMAL ratings and timestamps to numbers; a TIMESTAMP column to Unix seconds, UTC,
sub-second parts dropped); any other type (boolean, list, struct, binary, date, a fractional
DECIMAL id) is a rejection naming the column, its type, the first row and value. Nulls are
missing values, reported as such.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tasks import storage
from tasks.constants import (
    GENRES,
    ID_PATTERN,
    ITEM_ID,
    MAX_ID_LENGTH,
    MAX_TIMESTAMP,
    MAX_TITLE_LENGTH,
    MIN_TIMESTAMP,
    RATING,
    RATING_COLUMNS,
    TIMESTAMP,
    TITLE,
    USER_ID,
    USER_ID_RULE,
)
from tasks.errors import PermanentError

log = logging.getLogger(__name__)

# Column names of MovieLens 20M/25M/latest ``ratings.csv`` / ``movies.csv``.
MOVIELENS_CSV_RENAME = {"userId": USER_ID, "movieId": ITEM_ID}


@dataclass
class Problem:
    """One validation failure: where it is and what was expected."""

    uri: str
    problem: str
    line: int | None = None
    column: str | None = None
    count: int = 1
    value: object = None  # the offending value (of the first row), quoted cut to 60 characters
    # the line as the readers count it (header + record number) until relocate() made it physical
    physical: bool = False

    def __str__(self) -> str:
        where = self.uri
        if self.line is not None:
            where += f", {'row' if _is_parquet(self.uri) else 'line'} {self.line}"
        if self.column is not None:
            where += f", column '{self.column}'"
        got = ""
        if self.value is not None:
            text = repr(self.value)
            got = f" (got {text[:57] + '...' if len(text) > 60 else text})"
        more = f" ({self.count - 1} more rows like it)" if self.count > 1 else ""
        return f"{where}: {self.problem}{got}{more}"


@dataclass
class DataValidationError(PermanentError):
    problems: list[Problem] = field(default_factory=list)
    note: str = ""  # what happened to the input, appended to the message

    def __str__(self) -> str:
        return ("invalid input:\n  " + "\n  ".join(str(p) for p in self.problems)
                + (f"\n{self.note}" if self.note else ""))


def _is_parquet(uri: str) -> bool:
    return uri.endswith(".parquet")


@dataclass(frozen=True)
class Layout:
    sep: str
    header: bool
    encoding: str = "utf-8"
    names: tuple[str, ...] = RATING_COLUMNS


def ratings_layout(uri: str) -> Layout | None:
    """How to parse a ratings file, decided by its name; ``None`` for Parquet."""
    name = storage.basename(uri)
    if name == "u.data":  # MovieLens 100k: tab separated, no header
        return Layout(sep="\t", header=False)
    if name == "ratings.dat":  # MovieLens 1M/10M: '::' separated, no header
        return Layout(sep="::", header=False)
    if name.endswith((".csv", ".csv.gz")):
        return Layout(sep=",", header=True)
    if name.endswith((".tsv", ".tsv.gz")):
        return Layout(sep="\t", header=True)
    if name.endswith(".parquet"):
        return None
    raise DataValidationError(
        [Problem(uri, "unknown file type: expected .csv, .tsv, .parquet, u.data or ratings.dat")]
    )


def _decode(uri: str, data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataValidationError(
            [Problem(uri, f"not valid {encoding} text (byte 0x{data[err.start]:02x})", line=line)]
        ) from None


GZIP_MAGIC = b"\x1f\x8b"


def _gunzip(uri: str, data: bytes) -> bytes:
    """The file's bytes, decompressed if it is named ``.gz``; a gzip stream under another name
    is rejected by name (it would otherwise read as "not valid utf-8 (byte 0x8b)")."""
    if not uri.endswith(".gz"):
        if data.startswith(GZIP_MAGIC):
            raise DataValidationError([Problem(
                uri, "gzip-compressed data in a file not named .gz: name it "
                     f"{storage.basename(uri)}.gz (or upload it uncompressed)")])
        return data
    import gzip
    import zlib

    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise DataValidationError([Problem(
            uri, f"not a readable gzip file ({type(err).__name__}: {err}); expected a complete gzip stream")]) from None


def _read_text_table(uri: str, data: bytes, layout: Layout) -> tuple[pd.DataFrame, int]:
    """Parse text into string columns; returns the frame and the line number of row 0."""
    data = _gunzip(uri, data)
    text = _decode(uri, data, layout.encoding)
    if layout.sep == "::":  # pandas' C parser takes one-char separators only
        text = text.replace("::", "\t")
        sep = "\t"
    else:
        sep = layout.sep
    try:
        df = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=0 if layout.header else None,
            names=None if layout.header else list(layout.names),
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=True,
        )
    except pd.errors.ParserError as err:
        raise DataValidationError(field_count_problems(uri, layout)
                                  or [Problem(uri, f"malformed text table: {err}")]) from None
    except pd.errors.EmptyDataError:
        raise DataValidationError([Problem(uri, "file is empty")]) from None
    return df, 2 if layout.header else 1


# What each column accepts, for the rejection of a Parquet type (and the docs).
EXPECTED_TYPES = {
    USER_ID: "an integer or string id",
    ITEM_ID: "an integer or string id",
    RATING: "a number (integer, floating point or DECIMAL)",
    TIMESTAMP: "Unix seconds (an integer) or a TIMESTAMP",
}
_TIME_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _arrow_column(uri: str, name: str, arr, first_row: int) -> pd.Series:
    """One Parquet column as the validator reads it: ids as strings, numbers as numbers, nulls as
    missing values (None/NaN/<NA>), or a :class:`DataValidationError` for a type whose meaning
    is not certain."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_dictionary(t):  # an encoding, not a meaning: decode
        arr, t = arr.cast(t.value_type), t.value_type
    stringy = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
    if pa.types.is_null(t):
        return pd.Series([None] * len(arr), dtype=object)
    if name in (USER_ID, ITEM_ID):
        if pa.types.is_decimal(t) and t.scale == 0:
            arr, t = arr.cast(pa.int64()), pa.int64()
        if pa.types.is_integer(t) or stringy:
            # a categorical: one string per distinct id, a code per row (a batch is 500,000 rows)
            if isinstance(arr, pa.ChunkedArray):
                arr = arr.combine_chunks()
            coded = pc.dictionary_encode(arr)
            return pa.DictionaryArray.from_arrays(coded.indices, coded.dictionary.cast(pa.string())).to_pandas()
        if pa.types.is_floating(t):  # 12.0 -> "12"; 12.5 is rejected by the validator, by row
            return arr.to_pandas()
    elif name == RATING:
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            return arr.cast(pa.float64()).to_pandas()
        if stringy:
            return arr.to_pandas()
    elif name == TIMESTAMP:
        if pa.types.is_timestamp(t):  # an instant: its Unix seconds (UTC), sub-second parts dropped
            ticks = arr.cast(pa.int64())
            return pc.floor(pc.divide(ticks.cast(pa.float64()), _TIME_UNITS[t.unit])).to_pandas() \
                if t.unit != "s" else ticks.cast(pa.float64()).to_pandas()
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            return arr.cast(pa.float64()).to_pandas()
        if stringy:
            return arr.to_pandas()
    else:  # a column check_columns rejects by name
        return pd.Series([None] * len(arr), dtype=object)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    at = int(np.flatnonzero(valid)[0]) if valid.any() else 0
    raise DataValidationError([Problem(
        uri, f"Parquet type {t} is not accepted: expected {EXPECTED_TYPES[name]}", line=first_row + at,
        column=name, count=len(arr), value=arr[at].as_py() if len(arr) else None)])


def _pandas_index_columns(table) -> list[str]:
    """The columns pandas stored an unnamed index in (``df[mask].to_parquet()`` keeps the row
    labels as ``__index_level_0__``): row labels, not data, so never a column the validator
    refuses. A *named* index (``df.set_index("user_id")``) is a column like any other."""
    return [n for n in table.column_names if re.fullmatch(r"__index_level_\d+__", n)]


def _from_arrow(uri: str, table, first_row: int) -> pd.DataFrame:
    if index := _pandas_index_columns(table):
        table = table.drop_columns(index)
    table = table.rename_columns([MOVIELENS_CSV_RENAME.get(n, n) for n in table.column_names])
    return pd.DataFrame({n: _arrow_column(uri, n, table.column(n), first_row)
                         for n in table.column_names})


def _unreadable_parquet(uri: str, err: Exception) -> DataValidationError:
    return DataValidationError([Problem(uri, f"not a readable Parquet file ({type(err).__name__}: {err})")])


@contextlib.contextmanager
def _local_file(uri: str) -> Iterator[str]:
    """A local path holding ``uri``: the file itself, or the S3 object streamed to a temporary
    file (on disk, not in memory), so a Parquet reader can seek to one row group at a time."""
    if not storage.is_s3(uri):
        yield uri
        return
    import shutil
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
        stream = storage.open_binary(uri)
        try:
            shutil.copyfileobj(stream, tmp, 1 << 20)
        finally:
            stream.close()
        tmp.flush()
        yield tmp.name


PARQUET_BATCH_ROWS = 1 << 17


def iter_parquet(uri: str, chunk_rows: int) -> Iterator[tuple[pd.DataFrame, int]]:
    """A Parquet file as ``(frame, row number of its first row)`` chunks of at most ``chunk_rows``,
    read one row group (batch) at a time: never the whole file decoded at once."""
    import pyarrow.parquet as pq

    with _local_file(uri) as path:
        try:
            # Measured (docs/reliability.md, "Snapshot memory"): Arrow's decoding buffers grow with
            # the batch and with a reader thread per column; batches of 2^17 rows in this thread
            # keep the read to a few tens of MiB, whatever the row group size.
            pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
            batches = pf.iter_batches(batch_size=min(chunk_rows, PARQUET_BATCH_ROWS), use_threads=False)
        except Exception as err:  # pyarrow raises many types for corrupt files
            raise _unreadable_parquet(uri, err) from None
        row, any_rows = 1, False
        import pyarrow as pa

        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except Exception as err:
                raise _unreadable_parquet(uri, err) from None
            any_rows = True
            yield _from_arrow(uri, pa.Table.from_batches([batch]), row), row
            row += batch.num_rows
        if not any_rows:
            yield _from_arrow(uri, pf.schema_arrow.empty_table(), 1), 1


def read_ratings(uri: str, data: bytes | None = None) -> tuple[pd.DataFrame, int]:
    """Raw ratings with the canonical column names (values still unparsed)."""
    layout = ratings_layout(uri)
    data = storage.read_bytes(uri) if data is None else data
    if layout is None:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(io.BytesIO(data))
        except Exception as err:  # pyarrow raises many types for corrupt files
            raise _unreadable_parquet(uri, err) from None
        return _from_arrow(uri, table, 1), 1
    df, first = _read_text_table(uri, data, layout)
    _check_framing(uri, df, layout)
    df = df.rename(columns=MOVIELENS_CSV_RENAME)
    return df, first


def _check_framing(uri: str, df: pd.DataFrame, layout: Layout) -> None:
    """pandas takes a first column too many (every row one field longer than the header, as with
    a separator at the end of each line) as the index, shifting every value one column: refuse it
    with the real cause."""
    if not isinstance(df.index, pd.RangeIndex):
        raise DataValidationError(field_count_problems(uri, layout) or [Problem(
            uri, "more fields than column names in every row (a separator at the end of each line?)")])


CHUNK_ROWS = 500_000


def iter_ratings(uri: str, chunk_rows: int = CHUNK_ROWS):
    """Raw ratings as ``(frame, line of its first row)`` chunks, canonical column names, values
    unparsed. CSV/TSV (plain or gzip) are streamed from storage in ``chunk_rows`` pieces, so a
    large file is never held whole (as bytes, text or one frame); Parquet is read one batch of
    ``chunk_rows`` (within a row group) at a time; MovieLens ``ratings.dat`` (a two-character
    separator) is read whole. Every failure is a :class:`DataValidationError`; a file with a
    header and no rows yields one empty frame. Line numbers count records (a header, then one per
    row); :func:`relocate` turns those of a rejected file into physical lines."""
    layout = ratings_layout(uri)
    if layout is None:
        yield from iter_parquet(uri, chunk_rows)
        return
    if layout.sep == "::":
        yield read_ratings(uri)
        return
    head = storage.read_head(uri, 2)
    if not uri.endswith(".gz") and head.startswith(GZIP_MAGIC):
        _gunzip(uri, head)  # raises: gzip under another name
    if not head:
        raise DataValidationError([Problem(uri, "file is empty")])
    import gzip
    import zlib

    stream = storage.open_binary(uri)
    try:
        source = gzip.GzipFile(fileobj=stream) if uri.endswith(".gz") else stream
        reader = pd.read_csv(source, sep=layout.sep, header=0 if layout.header else None,
                             names=None if layout.header else list(layout.names), dtype=str,
                             keep_default_na=False, skip_blank_lines=True, chunksize=chunk_rows,
                             encoding=layout.encoding)
        line, any_rows = (2 if layout.header else 1), False
        with reader:
            for chunk in reader:
                any_rows = True
                _check_framing(uri, chunk, layout)
                yield chunk.rename(columns=MOVIELENS_CSV_RENAME), line
                line += len(chunk)
        if not any_rows:  # header only
            yield read_ratings(uri)
    except UnicodeDecodeError:
        # where: decode the file whole (only on this error path) for the line number
        _decode(uri, _gunzip(uri, storage.read_bytes(uri)), layout.encoding)
        raise DataValidationError([Problem(uri, f"not valid {layout.encoding} text")]) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataValidationError([Problem(
            uri, f"not a readable gzip file ({type(err).__name__}: {err}); expected a complete gzip stream")]) from None
    except pd.errors.ParserError as err:
        raise DataValidationError(field_count_problems(uri, layout)
                                  or [Problem(uri, f"malformed text table: {err}")]) from None
    except pd.errors.EmptyDataError:
        raise DataValidationError([Problem(uri, "file is empty")]) from None
    finally:
        stream.close()


def _records(uri: str, layout: Layout) -> Iterator[tuple[int, list[str]]]:
    """Every non-blank record of a text file as ``(physical line where it starts, fields)``, the
    header included, framed as pandas frames it (``"`` quotes, doubled inside a field; a quoted
    field may span lines). Reads the file whole: only on the error path."""
    text = _decode(uri, _gunzip(uri, storage.read_bytes(uri)), layout.encoding)
    sep = layout.sep
    if sep == "::":
        text, sep = text.replace("::", "\t"), "\t"
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    end = 0
    for fields in reader:
        start, end = end + 1, reader.line_num
        if fields and not (len(fields) == 1 and not fields[0].strip()):  # pandas skips blank lines
            yield start, fields


def field_count_problems(uri: str, layout: Layout) -> list[Problem]:
    """The records whose field count differs from the header's (or the layout's), by physical line."""
    expected, bad = len(layout.names), []
    for n, (line, fields) in enumerate(_records(uri, layout)):
        if n == 0 and layout.header:
            expected = len(fields)
            continue
        if len(fields) != expected:
            bad.append((line, fields))
    if not bad:
        return []
    line, fields = bad[0]
    hint = " (a separator at the end of the line?)" if len(fields) == expected + 1 and not fields[-1] else ""
    return [Problem(uri, f"{len(fields)} fields, expected {expected}{hint}", line=line, count=len(bad),
                    value=layout.sep.join(fields), physical=True)]


def relocate(uri: str, problems: list[Problem]) -> list[Problem]:
    """A rejected text file's problems with physical line numbers (blank lines and the extra lines
    of quoted multi-line fields counted), led by any field-count problem: a row with a field too
    few or too many is the real cause of the values it shifted. Parquet: unchanged (rows)."""
    layout = None if _is_parquet(uri) else ratings_layout(uri)
    todo = [p for p in problems if p.uri == uri and p.line is not None and not p.physical]
    if layout is None:
        return problems
    try:
        framing = field_count_problems(uri, layout)
        if todo:
            first, skip = (2, 1) if layout.header else (1, 0)  # the line of record 0; header records
            wanted = {int(p.line or 0) - first for p in todo}
            where: dict[int, int] = {}
            for n, (line, _) in enumerate(_records(uri, layout)):
                if n - skip in wanted:
                    where[n - skip] = line
            for p in todo:
                p.line, p.physical = where.get(int(p.line or 0) - first, p.line), True
    except DataValidationError:  # unreadable as a whole: the problems already say why
        return problems
    if framing and not any(f.problem == framing[0].problem for f in problems):
        return framing + problems
    return problems


def check_columns(uri: str, df: pd.DataFrame, expected: tuple[str, ...], optional=()) -> None:
    got = [str(c) for c in df.columns]
    missing = [c for c in expected if c not in got]
    extra = [c for c in got if c not in expected and c not in optional]
    if missing or extra:
        msg = f"expected columns {','.join(expected)}"
        if missing:
            msg += f"; missing {missing}"
        if extra:
            msg += f"; unexpected {extra}"
        raise DataValidationError([Problem(uri, msg, line=1)])


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


@dataclass
class ValidRatings:
    """One validated chunk, ids as codes into the chunk's distinct (stripped) ids: no string per row."""

    user_codes: np.ndarray  # int32, row -> position in user_ids
    user_ids: np.ndarray  # object, distinct
    item_codes: np.ndarray
    item_ids: np.ndarray
    rating: np.ndarray  # float32
    timestamp: np.ndarray  # int64, Unix seconds

    def __len__(self) -> int:
        return len(self.rating)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({USER_ID: self.user_ids[self.user_codes], ITEM_ID: self.item_ids[self.item_codes],
                             RATING: self.rating, TIMESTAMP: self.timestamp})


def _factorized(values: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """``values`` as (codes, distinct values); -1 for a null. A categorical column (a Parquet
    batch's ids) is already factorized."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy(), pd.Series(values.cat.categories)
    codes, uniques = pd.factorize(values)
    return codes, pd.Series(uniques)


def validate_ratings(uri: str, raw: pd.DataFrame, first_line: int, *, rating_min: float, rating_max: float,
                     max_timestamp: int | None) -> pd.DataFrame:
    """Check and convert one file's raw ratings; raise with every problem class found."""
    return validate_chunk(uri, raw, first_line, rating_min=rating_min, rating_max=rating_max,
                          max_timestamp=max_timestamp).frame()


def validate_chunk(
    uri: str,
    raw: pd.DataFrame,
    first_line: int,
    *,
    rating_min: float,
    rating_max: float,
    max_timestamp: int | None,
) -> ValidRatings:
    """Check and convert one chunk of raw ratings; raise with every problem class found. Ids are
    checked once per distinct value (a chunk of 500,000 rows holds far fewer), each problem
    mapped back to its rows for the first line and the count."""
    check_columns(uri, raw, RATING_COLUMNS)
    problems: list[Problem] = []

    def report(mask, column, problem, values=None):
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            first = _first(mask)
            value = None if values is None else values(first) if callable(values) else values.iloc[first]
            problems.append(Problem(uri, problem, line=first_line + first, column=column, count=int(mask.sum()),
                                    value=value.item() if hasattr(value, "item") else value))

    if len(raw) == 0:
        raise DataValidationError([Problem(uri, "no rating rows")])

    codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for col in (USER_ID, ITEM_ID):
        row_of, uniq = _factorized(raw[col])
        null = row_of < 0

        def rows(mask_u, row_of=row_of, null=null):  # a mask over the distinct values, over the rows
            mask_u = np.asarray(mask_u, dtype=bool)
            return np.zeros(len(row_of), dtype=bool) if not len(mask_u) else ~null & mask_u[row_of]

        def value(i, row_of=row_of, uniq=uniq):
            return uniq.iloc[row_of[i]]

        report(null, col, "missing id (null)")
        if pd.api.types.is_float_dtype(uniq):  # Parquet with float ids, e.g. 12.0
            frac = (uniq % 1 != 0).to_numpy()
            report(rows(frac), col, "expected an integer or string id, got a fractional number", value)
            ids = uniq.where(~frac & uniq.abs().lt(2 ** 53)).astype("Int64").astype(str)
        else:
            ids = uniq.astype(str).str.strip()
        empty_u = ids.isin(["", "nan", "None", "<NA>"]).to_numpy()
        empty = rows(empty_u)
        report(empty, col, "empty id")
        long_u = (ids.str.len() > MAX_ID_LENGTH).to_numpy()
        report(rows(long_u), col, f"id longer than {MAX_ID_LENGTH} characters", value)
        reserved_u = ids.str.startswith("__").to_numpy(dtype=bool)
        report(rows(reserved_u), col, "ids may not start with '__' (reserved)", value)
        # One rule for user and item ids: the serving API's (tasks.constants.USER_ID_PATTERN).
        bad_u = ~empty_u & ~long_u & ~reserved_u & ~ids.str.fullmatch(ID_PATTERN).fillna(False).to_numpy(dtype=bool)
        report(rows(bad_u), col, f"expected {'a user' if col == USER_ID else 'an item'} id the API can serve: "
                                 f"{USER_ID_RULE}", value)
        # " 7" and "7" are one id once stripped
        id_of, distinct = pd.factorize(ids.to_numpy(dtype=object))
        codes[col] = (np.where(null, -1, id_of[row_of] if len(id_of) else -1).astype(np.int32), distinct)

    numeric = pd.api.types.is_numeric_dtype
    rating = pd.to_numeric(raw[RATING], errors="coerce")
    blank = raw[RATING].isna()
    if not numeric(raw[RATING]):  # text: a blank or "nan" field is missing too
        blank |= raw[RATING].astype(str).str.strip().isin(["", "nan", "NaN", "None"])
    report(rating.isna() & ~blank, RATING, "not a number", raw[RATING])
    report(blank, RATING, "missing rating (empty, null or NaN)")
    report(rating.notna() & ((rating < rating_min) | (rating > rating_max)), RATING,
           f"rating outside the declared scale [{rating_min}, {rating_max}]", raw[RATING])
    rating32 = rating.to_numpy(dtype=np.float32, na_value=np.nan)
    del rating, blank

    ts = pd.to_numeric(raw[TIMESTAMP], errors="coerce").astype("float64")
    missing = raw[TIMESTAMP].isna()
    if not numeric(raw[TIMESTAMP]):
        missing |= raw[TIMESTAMP].astype(str).str.strip().eq("")
    report(missing, TIMESTAMP, "missing timestamp (empty or null)")
    report(ts.isna() & ~missing, TIMESTAMP, "expected Unix seconds (an integer)", raw[TIMESTAMP])
    report(ts.notna() & (ts % 1 != 0), TIMESTAMP, "expected Unix seconds (an integer), got a fraction", raw[TIMESTAMP])
    report(ts < MIN_TIMESTAMP, TIMESTAMP, "negative timestamp: expected Unix seconds from 0 (1970-01-01)",
           raw[TIMESTAMP])
    upper = MAX_TIMESTAMP if max_timestamp is None else max_timestamp
    late = (ts > upper).to_numpy().copy()
    for unit, factor in (("milliseconds", 1e3), ("microseconds", 1e6), ("nanoseconds", 1e9)):
        # a plausible instant in that unit (after 1973 in ms): name the unit, not "in the future"
        looks = late & (ts >= 1e8 * factor).to_numpy() & (ts / factor <= upper).to_numpy()
        report(looks, TIMESTAMP, f"looks like Unix {unit}, expected seconds: divide by {factor:,.0f}",
               raw[TIMESTAMP])
        late &= ~looks
    when = "the end of the run date" if max_timestamp is not None else "9999-12-31"
    report(late, TIMESTAMP, f"timestamp after {when} (> {upper} = "
                            f"{dt.datetime.fromtimestamp(upper, dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC)",
           raw[TIMESTAMP])
    # only whole seconds in [MIN_TIMESTAMP, upper] reach the cast (anything else raised above)
    seconds = ts.where(ts.between(MIN_TIMESTAMP, upper) & (ts % 1 == 0), 0).to_numpy(dtype=np.int64)
    del ts

    (user_codes, user_ids), (item_codes, item_ids) = codes[USER_ID], codes[ITEM_ID]
    dup = pd.DataFrame({USER_ID: user_codes, ITEM_ID: item_codes, TIMESTAMP: seconds}).duplicated(keep="first")
    report(dup.to_numpy(), None, "duplicate (user_id, item_id, timestamp) row")

    if problems:
        raise DataValidationError(problems)
    return ValidRatings(user_codes, np.asarray(user_ids, dtype=object), item_codes, np.asarray(item_ids, dtype=object),
                        rating32, seconds)


def read_items(uri: str) -> pd.DataFrame:
    """An item catalogue as ``item_id, title[, genres]`` strings. Every failure to read it is
    a :class:`DataValidationError` naming the file (and line, where there is one)."""
    name = storage.basename(uri)
    data = _gunzip(uri, storage.read_bytes(uri))
    if name.endswith(".gz"):
        name = name[:-3]
    if not data.strip() and not name.endswith(".parquet"):
        raise DataValidationError([Problem(uri, "file is empty: expected an item catalogue")])
    try:
        if name == "u.item":  # MovieLens 100k: pipe separated, latin-1, 24 columns
            df = pd.read_csv(io.StringIO(_decode(uri, data, "latin-1")), sep="|", header=None, dtype=str,
                             keep_default_na=False)
            df = df.iloc[:, :2]
            df.columns = [ITEM_ID, TITLE]
        elif name == "movies.dat":  # MovieLens 1M: '::' separated, latin-1
            df = pd.read_csv(io.StringIO(_decode(uri, data, "latin-1").replace("::", "\t")), sep="\t", header=None,
                             dtype=str, keep_default_na=False, names=[ITEM_ID, TITLE, GENRES], quoting=3)
        elif name.endswith(".parquet"):
            df = _items_from_parquet(uri, data)
        elif name.endswith(".csv"):
            df = pd.read_csv(io.StringIO(_decode(uri, data, "utf-8")), dtype=str, keep_default_na=False)
        else:
            raise DataValidationError(
                [Problem(uri, "unknown item file type: expected .csv, .parquet, u.item or movies.dat "
                              "(optionally .gz)")])
    except pd.errors.ParserError as err:  # ragged rows: pandas names the line
        raise DataValidationError([Problem(uri, f"malformed text table: {err}")]) from None
    except pd.errors.EmptyDataError:
        raise DataValidationError([Problem(uri, "file is empty: expected an item catalogue")]) from None
    df = df.rename(columns={"movieId": ITEM_ID})
    check_columns(uri, df, (ITEM_ID, TITLE), optional=(GENRES,))
    first = 1 if name.endswith(".parquet") or name in ("u.item", "movies.dat") else 2
    problems: list[Problem] = []

    def report(mask, column, problem, values=None):
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            at = _first(mask)
            problems.append(Problem(uri, problem, line=first + at, column=column, count=int(mask.sum()),
                                    value=None if values is None else values.iloc[at]))

    ids = df[ITEM_ID]
    if pd.api.types.is_float_dtype(ids):  # Parquet float ids: 12.0 is the item "12" of the ratings
        frac = ids.notna() & (ids % 1 != 0)
        report(frac, ITEM_ID, "expected an integer or string id, got a fractional number", ids)
        ids = ids.where(~frac & ids.abs().lt(2 ** 53)).astype("Int64").astype(object)
    null = ids.isna().to_numpy()
    report(null, ITEM_ID, "missing id (null)")
    df[ITEM_ID] = ids.where(~null, "").astype(str).str.strip()
    # A missing title shows the item id (as for an item without a catalogue entry).
    titles = df[TITLE].where(df[TITLE].notna(), df[ITEM_ID]).astype(str)
    long = titles.str.len() > MAX_TITLE_LENGTH
    report(long, TITLE, f"title longer than {MAX_TITLE_LENGTH} characters (every recommendation row must fit "
                        "DynamoDB's 400 KB item limit): shorten it upstream",
           titles.str.len().map("{} characters".format))
    df[TITLE] = titles
    dup = (df.duplicated(ITEM_ID) & ~null).to_numpy()
    report(dup, ITEM_ID, "duplicate item_id", df[ITEM_ID])
    if problems:
        raise DataValidationError(problems)
    return df.reset_index(drop=True)


def _items_from_parquet(uri: str, data: bytes) -> pd.DataFrame:
    """A Parquet catalogue with explicit types: ids as for ratings, titles and genres strings
    (numbers are written as text; other types are rejected), nulls kept as missing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as err:  # pyarrow raises many types for corrupt files
        raise _unreadable_parquet(uri, err) from None
    table = table.rename_columns([{"movieId": ITEM_ID}.get(n, n) for n in table.column_names])
    out = {}
    for n in table.column_names:
        arr = table.column(n)
        if n == ITEM_ID:
            out[n] = _arrow_column(uri, ITEM_ID, arr, 1)  # as in the ratings
            continue
        t = arr.type.value_type if pa.types.is_dictionary(arr.type) else arr.type
        if n in (TITLE, GENRES) and not (pa.types.is_string(t) or pa.types.is_large_string(t)
                                         or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)):
            valid = arr.is_valid().to_numpy(zero_copy_only=False)
            at = int(np.flatnonzero(valid)[0]) if valid.any() else 0
            raise DataValidationError([Problem(uri, f"Parquet type {arr.type} is not accepted: expected text",
                                               line=1 + at, column=n, value=arr[at].as_py() if len(arr) else None)])
        out[n] = pd.Series(arr.cast(pa.string()).to_pylist() if n in (TITLE, GENRES) else [None] * len(arr),
                           dtype=object)
    return pd.DataFrame(out)
