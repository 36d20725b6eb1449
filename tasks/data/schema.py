"""Read ratings and item files in the canonical and MovieLens layouts, and validate them.

Every problem is reported as a :class:`DataValidationError` naming the file, the
line (1-based, counting a header line) or row, the column and what was expected.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tasks import storage
from tasks.constants import (
    GENRES,
    ITEM_ID,
    MAX_ID_LENGTH,
    RATING,
    RATING_COLUMNS,
    TIMESTAMP,
    TITLE,
    USER_ID,
    USER_ID_PATTERN,
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

    def __str__(self) -> str:
        where = self.uri
        if self.line is not None:
            where += f", line {self.line}"
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
        raise DataValidationError([Problem(uri, f"malformed text table: {err}")]) from None
    except pd.errors.EmptyDataError:
        raise DataValidationError([Problem(uri, "file is empty")]) from None
    return df, 2 if layout.header else 1


def read_ratings(uri: str, data: bytes | None = None) -> tuple[pd.DataFrame, int]:
    """Raw ratings with the canonical column names (values still unparsed)."""
    layout = ratings_layout(uri)
    data = storage.read_bytes(uri) if data is None else data
    if layout is None:
        try:
            df = pd.read_parquet(io.BytesIO(data))
        except Exception as err:  # pyarrow raises many types for corrupt files
            raise DataValidationError(
                [Problem(uri, f"not a readable Parquet file ({type(err).__name__}: {err})")]
            ) from None
        first = 1
    else:
        df, first = _read_text_table(uri, data, layout)
    df = df.rename(columns=MOVIELENS_CSV_RENAME)
    return df, first


CHUNK_ROWS = 500_000


def iter_ratings(uri: str, chunk_rows: int = CHUNK_ROWS):
    """Raw ratings as ``(frame, line of its first row)`` chunks, canonical column names, values
    unparsed. CSV/TSV (plain or gzip) are streamed from storage in ``chunk_rows`` pieces, so a
    large file is never held whole (as bytes, text or one frame); Parquet and MovieLens
    ``ratings.dat`` (a two-character separator) are read whole. Every failure is a
    :class:`DataValidationError`; a file with a header and no rows yields one empty frame."""
    layout = ratings_layout(uri)
    if layout is None or layout.sep == "::":
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
        raise DataValidationError([Problem(uri, f"malformed text table: {err}")]) from None
    except pd.errors.EmptyDataError:
        raise DataValidationError([Problem(uri, "file is empty")]) from None
    finally:
        stream.close()


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


def validate_ratings(
    uri: str,
    raw: pd.DataFrame,
    first_line: int,
    *,
    rating_min: float,
    rating_max: float,
    max_timestamp: int | None,
) -> pd.DataFrame:
    """Check and convert one file's raw ratings; raise with every problem class found."""
    check_columns(uri, raw, RATING_COLUMNS)
    problems: list[Problem] = []

    def report(mask, column, problem, values=None):
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            first = _first(mask)
            value = None if values is None else values.iloc[first]
            problems.append(Problem(uri, problem, line=first_line + first, column=column, count=int(mask.sum()),
                                    value=value.item() if hasattr(value, "item") else value))

    if len(raw) == 0:
        raise DataValidationError([Problem(uri, "no rating rows")])

    out = pd.DataFrame(index=raw.index)
    for col in (USER_ID, ITEM_ID):
        if pd.api.types.is_float_dtype(raw[col]):  # Parquet with float ids, e.g. 12.0
            frac = raw[col].notna() & (raw[col] % 1 != 0)
            report(frac, col, "expected an integer or string id, got a fractional number")
            ids = raw[col].where(~frac).astype("Int64").astype(str)
        else:
            ids = raw[col].astype(str).str.strip()
        empty = ids.isin(["", "nan", "None", "<NA>"]).to_numpy()
        report(empty, col, "empty id")
        if col == USER_ID:  # the serving API's rule (tasks.constants.USER_ID_PATTERN)
            bad = ~empty & ~ids.str.fullmatch(USER_ID_PATTERN).fillna(False).to_numpy(dtype=bool)
            report(bad, col, f"expected a user id the API can serve: {USER_ID_RULE}", raw[col])
        else:
            report(ids.str.len() > MAX_ID_LENGTH, col, f"id longer than {MAX_ID_LENGTH} characters", raw[col])
            report(ids.str.startswith("__"), col, "ids may not start with '__' (reserved)", raw[col])
        out[col] = ids

    rating = pd.to_numeric(raw[RATING], errors="coerce")
    blank = raw[RATING].astype(str).str.strip().isin(["", "nan", "NaN", "None"])
    report(rating.isna() & ~blank, RATING, "not a number", raw[RATING])
    report(blank, RATING, "missing rating (empty or NaN)")
    report(rating.notna() & ((rating < rating_min) | (rating > rating_max)), RATING,
           f"rating outside the declared scale [{rating_min}, {rating_max}]", raw[RATING])
    out[RATING] = rating.astype("float32")

    ts = pd.to_numeric(raw[TIMESTAMP], errors="coerce")
    report(ts.isna(), TIMESTAMP, "expected Unix seconds (an integer)", raw[TIMESTAMP])
    report(ts.notna() & (ts % 1 != 0), TIMESTAMP, "expected Unix seconds (an integer)", raw[TIMESTAMP])
    if max_timestamp is not None:
        report(ts > max_timestamp, TIMESTAMP,
               f"timestamp after the end of the run date (> {max_timestamp})", raw[TIMESTAMP])
    out[TIMESTAMP] = ts.fillna(0).astype("int64")

    dup = out.duplicated([USER_ID, ITEM_ID, TIMESTAMP], keep="first").to_numpy()
    report(dup, None, "duplicate (user_id, item_id, timestamp) row")

    if problems:
        raise DataValidationError(problems)
    return out.reset_index(drop=True)


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
            try:
                df = pd.read_parquet(io.BytesIO(data)).astype(str)
            except Exception as err:  # pyarrow raises many types for corrupt files
                raise DataValidationError(
                    [Problem(uri, f"not a readable Parquet file ({type(err).__name__}: {err})")]) from None
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
    df[ITEM_ID] = df[ITEM_ID].astype(str).str.strip()
    dup = df.duplicated(ITEM_ID).to_numpy()
    if dup.any():
        raise DataValidationError([Problem(uri, "duplicate item_id", line=2 + _first(dup), column=ITEM_ID,
                                           count=int(dup.sum()))])
    return df.reset_index(drop=True)
