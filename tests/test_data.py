"""Readers, validation (one test per problem class), snapshot and quarantine."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pandas as pd
import pytest

from tasks import storage
from tasks.data import DataValidationError, build_snapshot, generate
from tasks.schema import read_items, read_ratings, validate_ratings

DS = "2026-11-23"
HEADER = "user_id,item_id,rating,timestamp\n"


def check(tmp_path, name: str, body: bytes | str, **kw) -> DataValidationError:
    path = tmp_path / name
    path.write_bytes(body.encode() if isinstance(body, str) else body)
    with pytest.raises(DataValidationError) as err:
        raw, first = read_ratings(str(path))
        validate_ratings(str(path), raw, first, rating_min=kw.get("lo", 0.5), rating_max=kw.get("hi", 5.0),
                         max_timestamp=kw.get("max_ts", 2_000_000_000))
    return err.value


@pytest.mark.parametrize("body, line, column, words", [
    (HEADER + "1,2,4,100\n1,3,abc,101\n", 3, "rating", "not a number"),
    (HEADER + "1,2,4,100\n1,3,,101\n", 3, "rating", "missing rating"),
    (HEADER + "1,2,4,100\n1,3,NaN,101\n", 3, "rating", "missing rating"),
    (HEADER + "1,2,4,100\n1,3,7,101\n", 3, "rating", "outside the declared scale"),
    (HEADER + "1,2,4,100\n1,2,4,100\n", 3, None, "duplicate (user_id, item_id, timestamp)"),
    (HEADER + "1,2,4,100\n,3,4,101\n", 3, "user_id", "empty id"),
    (HEADER + "1,2,4,100\n1," + "x" * 65 + ",4,101\n", 3, "item_id", "longer than 64"),
    (HEADER + "1,2,4,100\n__x,3,4,101\n", 3, "user_id", "reserved"),
    (HEADER + "1,2,4,100\na b,3,4,101\n", 3, "user_id", "a user id the API can serve"),
    (HEADER + "1,2,4,100\na/b,3,4,101\n", 3, "user_id", "no whitespace, control characters or '/'"),
    (HEADER + "1,2,4,100\n1,3,4,yesterday\n", 3, "timestamp", "Unix seconds"),
    (HEADER + "1,2,4,100\n1,3,4,3000000000\n", 3, "timestamp", "after the end of the run date"),
])
def test_each_problem_names_file_line_column(tmp_path, body, line, column, words):
    err = check(tmp_path, "ratings.csv", body)
    problem = err.problems[0]
    assert problem.uri.endswith("ratings.csv")
    assert problem.line == line
    assert problem.column == column
    assert words in problem.problem
    assert f"line {line}" in str(err)


@pytest.mark.parametrize("row, quoted", [
    ("1,3,five,101", "column 'rating': not a number (got 'five')"),
    ("1,3,7,101", "column 'rating': rating outside the declared scale [0.5, 5.0] (got '7')"),
    ("1,3,4,yesterday", "column 'timestamp': expected Unix seconds (an integer) (got 'yesterday')"),
    ("a b,3,4,101", "column 'user_id': expected a user id the API can serve"),
    ("x" * 100 + ",3,4,101", "(got '" + "x" * 56 + "...)"),
])
def test_messages_quote_the_offending_value(tmp_path, row, quoted):
    text = str(check(tmp_path, "r.csv", HEADER + "1,2,4,100\n" + row + "\n"))
    assert "r.csv, line 3, " in text and quoted in text
    if row.startswith("a b"):
        assert "(got 'a b')" in text


def test_missing_and_extra_columns(tmp_path):
    err = check(tmp_path, "r.csv", "user_id,item,rating,timestamp,extra\n1,2,3,4,5\n")
    text = str(err)
    assert "missing ['item_id']" in text and "unexpected ['item', 'extra']" in text


def test_empty_file_and_header_only(tmp_path):
    assert "empty" in str(check(tmp_path, "a.csv", ""))
    assert "no rating rows" in str(check(tmp_path, "b.csv", HEADER))


def test_wrong_encoding_names_the_line(tmp_path):
    err = check(tmp_path, "r.csv", (HEADER + "1,2,4,100\n").encode() + b"1,\xff\xfe,4,101\n")
    assert err.problems[0].line == 3 and "utf-8" in err.problems[0].problem


def test_corrupt_parquet(tmp_path):
    buf = io.BytesIO()
    pd.DataFrame({"user_id": [1], "item_id": [2], "rating": [4.0], "timestamp": [1]}).to_parquet(buf)
    err = check(tmp_path, "r.parquet", buf.getvalue()[:-40])
    assert "not a readable Parquet file" in str(err)


def test_unknown_file_type(tmp_path):
    assert "unknown file type" in str(check(tmp_path, "ratings.xlsx", "x"))


def test_movielens_native_layouts(tmp_path):
    (tmp_path / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    raw, first = read_ratings(str(tmp_path / "u.data"))
    df = validate_ratings("u.data", raw, first, rating_min=1, rating_max=5, max_timestamp=None)
    assert df.to_dict("list") == {"user_id": ["196", "186"], "item_id": ["242", "302"], "rating": [3.0, 3.0],
                                  "timestamp": [881250949, 891717742]}
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n")
    raw, first = read_ratings(str(tmp_path / "ratings.dat"))
    assert raw.iloc[0].tolist() == ["1", "1193", "5", "978300760"]
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n")
    raw, _ = read_ratings(str(tmp_path / "ratings.csv"))
    assert list(raw.columns) == ["user_id", "item_id", "rating", "timestamp"]
    (tmp_path / "u.item").write_bytes("1|Toy Story (1995)|01-Jan-1995||http://x|0|0\n2|Caf\xe9 (1994)|x||y|0|1\n"
                                      .encode("latin-1"))
    items = read_items(str(tmp_path / "u.item"))
    assert items.to_dict("list") == {"item_id": ["1", "2"], "title": ["Toy Story (1995)", "Café (1994)"]}


def test_synthetic_has_movielens_shape_and_is_deterministic():
    a, items = generate(943, 1682, 100_000, seed=7)
    b, _ = generate(943, 1682, 100_000, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 100_000 and a.user_id.nunique() == 943 and len(items) == 1682
    assert not a.duplicated(["user_id", "item_id"]).any()
    assert a.groupby("user_id").size().min() >= 20
    hist = a.rating.value_counts(normalize=True).sort_index().to_numpy()
    np.testing.assert_allclose(hist, [0.061, 0.114, 0.271, 0.342, 0.212], atol=0.01)
    counts = a.item_id.value_counts()
    # popularity skew: the top 1% of items carry ~8% of ratings (MovieLens 100k: about 8%), 17x their share
    assert counts.iloc[:17].sum() > 0.06 * len(a)


def put_csv(uri: str, df: pd.DataFrame) -> None:
    storage.write_bytes(uri, df.to_csv(index=False).encode())


def test_snapshot_on_s3_and_partition_filter(aws):
    ratings, items = generate(50, 80, 1500, seed=1)
    base = f"s3://{aws['bucket']}"
    put_csv(f"{base}/raw/ratings/initial/part.csv", ratings.iloc[:1000])
    put_csv(f"{base}/raw/ratings/ds=2026-11-22/more.csv", ratings.iloc[1000:1200])
    put_csv(f"{base}/raw/ratings/ds=2026-11-24/later.csv", ratings.iloc[1200:])  # after the run date
    storage.write_bytes(f"{base}/raw/ratings/_SUCCESS", b"")
    put_csv(f"{base}/raw/items/items.csv", items)
    out = f"{base}/datasets/ds={DS}"
    manifest = build_snapshot(f"{base}/raw/ratings", DS, out, f"{base}/quarantine/ds={DS}", f"{base}/raw/items")
    assert manifest["rows"] == 1200 and len(manifest["sources"]) == 2
    snap = storage.read_parquet(f"{out}/ratings.parquet")
    assert len(snap) == 1200 and list(snap.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert storage.read_json(f"{out}/_manifest.json")["users"] == snap.user_id.nunique()
    assert storage.list_files(f"{base}/quarantine") == []


def test_bad_input_is_quarantined_and_nothing_is_written(aws):
    base = f"s3://{aws['bucket']}"
    good, _ = generate(30, 40, 600, seed=2)
    put_csv(f"{base}/raw/ratings/good.csv", good)
    storage.write_bytes(f"{base}/raw/ratings/bad.csv", (HEADER + "1,2,4,100\n1,3,nine,101\n").encode())
    out, quarantine = f"{base}/datasets/ds={DS}", f"{base}/quarantine/ds={DS}"
    with pytest.raises(DataValidationError) as err:
        build_snapshot(f"{base}/raw/ratings", DS, out, quarantine)
    assert "bad.csv, line 3, column 'rating': not a number" in str(err.value)
    assert storage.list_files(out) == []
    assert storage.read_bytes(f"{quarantine}/bad.csv").endswith(b"nine,101\n")
    reason = storage.read_json(f"{quarantine}/_reason.json")
    assert reason["files"] == [f"{base}/raw/ratings/bad.csv"] and "not a number" in reason["problems"][0]


def test_snapshot_cli_exit_code_and_message(tmp_path, capsys):
    from tasks.data.__main__ import main
    from tasks.errors import EXIT_NO_RETRY, run_cli

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "r.csv").write_text(HEADER + "1,2,4,100\n1,3,6,101\n")
    code = run_cli(main, ["snapshot", "--raw", str(tmp_path / "raw"), "--ds", DS, "--out", str(tmp_path / "out"),
                          "--quarantine", str(tmp_path / "q")])
    assert code == EXIT_NO_RETRY
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("RECSYS-ERROR: invalid input:") and "r.csv, line 3, column 'rating'" in last
    assert (tmp_path / "q" / "r.csv").exists() and not (tmp_path / "out").exists()


def test_row_count_drop_against_previous_snapshot_is_rejected(aws):
    base = f"s3://{aws['bucket']}"
    ratings, _ = generate(40, 60, 1200, seed=3)
    put_csv(f"{base}/raw/ratings/all.csv", ratings)
    build_snapshot(f"{base}/raw/ratings", "2026-11-22", f"{base}/datasets/ds=2026-11-22", f"{base}/quarantine/x")
    put_csv(f"{base}/raw/ratings/all.csv", ratings.iloc[:500])  # the upstream export got truncated
    out, quarantine = f"{base}/datasets/ds={DS}", f"{base}/quarantine/ds={DS}"
    with pytest.raises(DataValidationError, match=r"500 ratings, down 58% from 1200 in the snapshot of 2026-11-22"):
        build_snapshot(f"{base}/raw/ratings", DS, out, quarantine, max_drop=0.5)
    assert storage.list_files(out) == []
    assert "truncated" in storage.read_json(f"{quarantine}/_reason.json")["problems"][0]
    assert build_snapshot(f"{base}/raw/ratings", DS, out, quarantine, max_drop=0.6)["rows"] == 500


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf)
    return buf.getvalue()


# One bad file beside good data, through the snapshot CLI as the DAG runs it: a clear rejection
# naming the file (and line where there is one), the file quarantined, nothing under datasets/.
BAD_FILES = {
    "ratings: corrupt gzip": ("raw/ratings/bad.csv.gz", lambda: gzip.compress(b"x" * 2000)[:-30],
                              "not a readable gzip file"),
    "ratings: gzip named .csv": ("raw/ratings/bad.csv", lambda: gzip.compress((HEADER + "1,2,4,100\n").encode()),
                                 "gzip-compressed data in a file not named .gz"),
    "items: not UTF-8": ("raw/items/items.csv", lambda: b"item_id,title\n1,Caf\xe9\n", "line 2"),
    "items: empty": ("raw/items/items.csv", lambda: b"", "file is empty"),
    "items: ragged rows": ("raw/items/items.csv", lambda: b"item_id,title\n1,A\n2,B,extra,more\n",
                           "malformed text table"),
    "items: corrupt parquet": ("raw/items/items.parquet",
                               lambda: _parquet_bytes(pd.DataFrame({"item_id": ["1"], "title": ["A"]}))[:-40],
                               "not a readable Parquet file"),
    "items: corrupt gzip": ("raw/items/items.csv.gz", lambda: b"\x1f\x8b\x08garbage", "not a readable gzip file"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_every_unreadable_file_is_a_clear_quarantined_rejection(tmp_path, capsys, case):
    from tasks.data.__main__ import main
    from tasks.errors import EXIT_NO_RETRY, run_cli

    rel, body, words = BAD_FILES[case]
    good, _ = generate(20, 30, 300, seed=3)
    (tmp_path / "raw" / "ratings").mkdir(parents=True)
    (tmp_path / "raw" / "items").mkdir(parents=True)
    good.to_csv(tmp_path / "raw" / "ratings" / "good.csv", index=False)
    (tmp_path / rel).write_bytes(body())
    code = run_cli(main, ["snapshot", "--raw", str(tmp_path / "raw" / "ratings"), "--ds", DS,
                          "--out", str(tmp_path / "datasets"), "--quarantine", str(tmp_path / "q"),
                          "--items", str(tmp_path / "raw" / "items")])
    err = capsys.readouterr().err
    assert code == EXIT_NO_RETRY and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("RECSYS-ERROR: invalid input:") and rel.rsplit("/", 1)[1] in last and words in last
    assert (tmp_path / "q" / rel.rsplit("/", 1)[1]).read_bytes() == (tmp_path / rel).read_bytes()
    assert not (tmp_path / "datasets").exists()


@pytest.mark.parametrize("gz", [False, True])
def test_streamed_chunks_keep_line_numbers_and_find_duplicates_across_chunks(aws, monkeypatch, gz):
    """Large files are read in chunks (here 4 rows): the line of a problem in a later chunk, and a
    duplicate whose twin is in another chunk, are still found; the snapshot equals a one-chunk read."""
    from tasks import schema

    base = f"s3://{aws['bucket']}"
    good, _ = generate(30, 40, 600, seed=2)
    name = "part.csv.gz" if gz else "part.csv"

    def put(body: str):
        data = body.encode()
        storage.write_bytes(f"{base}/raw/ratings/{name}", gzip.compress(data) if gz else data)

    rows = HEADER + "".join(f"1,{i},4,{100 + i}\n" for i in range(10))
    put(rows + "1,99,lots,500\n")  # line 12, in the third chunk
    monkeypatch.setattr(schema, "CHUNK_ROWS", 4)
    monkeypatch.setattr(schema.iter_ratings, "__defaults__", (4,))
    with pytest.raises(DataValidationError, match=r"line 12, column 'rating': not a number \(got 'lots'\)"):
        build_snapshot(f"{base}/raw/ratings", DS, f"{base}/datasets/ds={DS}", f"{base}/quarantine/ds={DS}")
    put(rows + "1,2,4,102\n")  # a twin of line 4 (first chunk) at line 12
    with pytest.raises(DataValidationError, match=r"line 12, column.*|line 12: duplicate") as err:
        build_snapshot(f"{base}/raw/ratings", DS, f"{base}/datasets/ds={DS}", f"{base}/quarantine/ds={DS}")
    assert "duplicate (user_id, item_id, timestamp) row" in str(err.value)
    assert storage.list_files(f"{base}/datasets") == []
    put(good.to_csv(index=False))
    chunked = build_snapshot(f"{base}/raw/ratings", DS, f"{base}/datasets/ds={DS}", f"{base}/quarantine/ds={DS}")
    snap_chunked = storage.read_parquet(f"{base}/datasets/ds={DS}/ratings.parquet")
    monkeypatch.setattr(schema.iter_ratings, "__defaults__", (10**6,))
    whole = build_snapshot(f"{base}/raw/ratings", DS, f"{base}/datasets/ds=2026-11-24", f"{base}/q2")
    snap_whole = storage.read_parquet(f"{base}/datasets/ds=2026-11-24/ratings.parquet")
    assert chunked["rows"] == whole["rows"] == len(snap_whole)
    pd.testing.assert_frame_equal(snap_chunked, snap_whole)
    assert str(snap_whole.user_id.dtype) in ("str", "object", "string") and snap_whole.rating.dtype == "float32"


def test_snapshot_equals_a_pandas_reference_across_files_rerating_and_ties(tmp_path, monkeypatch):
    """The code-based sort and dedup give exactly what pandas' sort + drop_duplicates gave: one row
    per (user, item), the latest timestamp, a tie between files going to the later file; the same
    row in two files is a re-export (kept once), the same row twice in one file (in different
    chunks) is rejected with the later line."""
    from tasks import schema
    from tasks.data import snapshot

    monkeypatch.setattr(schema.iter_ratings, "__defaults__", (7,))  # several chunks per file
    monkeypatch.setattr(snapshot, "BUCKET_ROWS", 8, raising=False)  # and several sort buckets
    rng = np.random.default_rng(5)
    raw = tmp_path / "raw"
    raw.mkdir()
    frames = []
    for f in range(3):
        n = 40
        df = pd.DataFrame({"user_id": rng.choice(["u10", "u9", "7", "u1x", "b"], n),
                           "item_id": rng.choice(["i2", "i10", "3", "x"], n),
                           "rating": rng.integers(1, 11, n) / 2, "timestamp": rng.integers(100, 106, n)})
        df = df.drop_duplicates(["user_id", "item_id", "timestamp"])  # within a file: unique
        frames.append(df)
        df.to_csv(raw / f"part-{f}.csv", index=False)
    manifest = build_snapshot(str(raw), DS, str(tmp_path / "out"), str(tmp_path / "q"))
    got = pd.read_parquet(tmp_path / "out" / "ratings.parquet")
    ref = pd.concat(frames, ignore_index=True).astype({"user_id": str, "item_id": str, "rating": "float32"})
    ref = (ref.sort_values(["user_id", "item_id", "timestamp"], kind="stable")
           .drop_duplicates(["user_id", "item_id"], keep="last").reset_index(drop=True))
    pd.testing.assert_frame_equal(got.astype({"user_id": str, "item_id": str}), ref, check_dtype=False)
    assert manifest["rows"] == len(ref) and manifest["rows_read"] == sum(map(len, frames))
    assert manifest["users"] == ref.user_id.nunique() and manifest["items"] == ref.item_id.nunique()

    # the same row again in the same file, 30 lines later (another chunk): rejected, nothing written
    twin = pd.concat([frames[1], frames[1].iloc[[0]]], ignore_index=True)
    twin.to_csv(raw / "part-1.csv", index=False)
    with pytest.raises(DataValidationError) as err:
        build_snapshot(str(raw), "2026-11-24", str(tmp_path / "out2"), str(tmp_path / "q2"))
    (problem,) = err.value.problems
    assert problem.uri.endswith("part-1.csv") and problem.line == len(twin) + 1
    assert "duplicate (user_id, item_id, timestamp) row" in problem.problem
    assert not (tmp_path / "out2").exists() and (tmp_path / "q2" / "part-1.csv").exists()


# --- round 3 (issue 28): types and nulls, markers, physical lines, ties ------------------------

def _parquet(path, columns: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)


def _snapshot(raw, tmp_path, ds=DS):
    return build_snapshot(str(raw), ds, str(tmp_path / "out"), str(tmp_path / "q"))


def _good_columns(n=3):
    import pyarrow as pa

    return {"user_id": pa.array([f"u{i}" for i in range(n)]), "item_id": pa.array(list(range(10, 10 + n)), pa.int64()),
            "rating": pa.array([4.0] * n), "timestamp": pa.array([100 + i for i in range(n)], pa.int64())}


def test_a_null_item_id_in_parquet_is_rejected_not_stored_under_another_id(tmp_path):
    """It was: NaN passed the empty-id check and its code -1 indexed the last distinct id."""
    import pyarrow as pa

    raw = tmp_path / "raw"
    raw.mkdir()
    cols = _good_columns()
    cols["item_id"] = pa.array([10, None, 12], pa.int64())
    _parquet(raw / "r.parquet", cols)
    with pytest.raises(DataValidationError) as err:
        _snapshot(raw, tmp_path)
    (problem,) = err.value.problems
    assert (problem.line, problem.column, problem.problem) == (2, "item_id", "missing id (null)")
    assert "r.parquet, row 2, column 'item_id': missing id (null)" in str(err.value)
    assert not (tmp_path / "out").exists() and (tmp_path / "q" / "r.parquet").exists()


@pytest.mark.parametrize("value, words", [
    (-1e30, "negative timestamp"),  # was stored as -2**63
    (-1, "negative timestamp"),
    (1e30, "timestamp after the end of the run date"),
    (1_763_900_000_000, "looks like Unix milliseconds, expected seconds: divide by 1,000"),
    (1_763_900_000_000_000, "looks like Unix microseconds"),
    (100.5, "got a fraction"),
])
def test_timestamps_outside_the_documented_range_and_unit_are_named(tmp_path, value, words):
    import pyarrow as pa

    raw = tmp_path / "raw"
    raw.mkdir()
    cols = _good_columns()
    cols["timestamp"] = pa.array([100.0, value, 102.0])
    _parquet(raw / "r.parquet", cols)
    with pytest.raises(DataValidationError) as err:
        _snapshot(raw, tmp_path)
    (problem,) = err.value.problems
    assert problem.line == 2 and problem.column == "timestamp" and words in problem.problem


def _typed(kind):
    """(column, arrow array of 3 rows) for one Parquet type."""
    import datetime as dt
    from decimal import Decimal

    import pyarrow as pa

    return {
        "list user id": ("user_id", pa.array([[7], [8], [9]], pa.list_(pa.int64()))),
        "struct item id": ("item_id", pa.array([{"a": 1}, {"a": 2}, {"a": 3}])),
        "bool rating": ("rating", pa.array([True, False, True])),
        "binary user id": ("user_id", pa.array([b"a", b"b", b"c"])),
        "fractional decimal item id": ("item_id", pa.array([Decimal("1.50"), Decimal("2.00"), Decimal("3.00")],
                                                           pa.decimal128(5, 2))),
        "date timestamp": ("timestamp", pa.array([dt.date(1998, 1, 1)] * 3)),
        "control character in an item id": ("item_id", pa.array(["i1", "i\x072", "i3"])),
        "list rating": ("rating", pa.array([[1.0], [2.0], [3.0]])),
    }[kind]


@pytest.mark.parametrize("kind", ["list user id", "struct item id", "bool rating", "binary user id",
                                  "fractional decimal item id", "date timestamp", "control character in an item id",
                                  "list rating"])
def test_wrongly_typed_parquet_columns_are_quarantined_naming_file_row_column_value(tmp_path, capsys, kind):
    """Each was accepted (a list id stored as "[7]", a boolean rating as 1.0) or a traceback."""
    from tasks.data.__main__ import main
    from tasks.errors import EXIT_NO_RETRY, run_cli

    raw = tmp_path / "raw"
    raw.mkdir()
    column, arr = _typed(kind)
    _parquet(raw / "bad.parquet", {**_good_columns(), column: arr})
    code = run_cli(main, ["snapshot", "--raw", str(raw), "--ds", DS, "--out", str(tmp_path / "out"),
                          "--quarantine", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert code == EXIT_NO_RETRY and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "bad.parquet, row " in last and f"column '{column}'" in last and "(got " in last
    if kind not in ("control character in an item id", "fractional decimal item id"):
        assert "Parquet type" in last and "is not accepted: expected" in last
    assert (tmp_path / "q" / "bad.parquet").exists() and not (tmp_path / "out").exists()


def test_parquet_types_with_a_certain_meaning_are_converted(tmp_path):
    """TIMESTAMP -> Unix seconds (UTC; was rejected as "after the end of the run date" showing a
    1998 date), DECIMAL rating -> number, dictionary-encoded and unsigned ids -> strings."""
    import datetime as dt
    from decimal import Decimal

    import pyarrow as pa

    raw = tmp_path / "raw"
    raw.mkdir()
    when = [dt.datetime(1998, 1, 1, 0, 0, 1, 500_000), dt.datetime(1998, 1, 2), dt.datetime(1998, 1, 3)]
    _parquet(raw / "r.parquet", {
        "user_id": pa.array(["a", "b", "a"]).dictionary_encode(),
        "item_id": pa.array([1, 2, 3], pa.uint32()),
        "rating": pa.array([Decimal("4.5"), Decimal("3.0"), Decimal("1.0")], pa.decimal128(3, 1)),
        "timestamp": pa.array(when, pa.timestamp("ms", tz="UTC")),
    })
    manifest = _snapshot(raw, tmp_path)
    got = pd.read_parquet(tmp_path / "out" / "ratings.parquet").sort_values(["user_id", "item_id"])
    assert manifest["rows"] == 3
    assert got.item_id.tolist() == ["1", "3", "2"] and got.user_id.tolist() == ["a", "a", "b"]
    assert got.rating.tolist() == [4.5, 1.0, 3.0]
    assert got.timestamp.tolist() == [883612801, 883785600, 883699200]


def test_a_csv_rating_that_reads_as_a_boolean_is_not_a_number(tmp_path):
    err = check(tmp_path, "r.csv", HEADER + "1,2,4,100\n1,3,true,101\n")
    assert err.problems[0].problem == "not a number" and err.problems[0].line == 3


@pytest.mark.parametrize("keys", [
    ["raw/ratings/ds=2026-11-20/"],  # the S3 console's "Create folder"
    ["raw/ratings/ds=2026-11-20_$folder$"],  # Hadoop / EMR
    ["raw/ratings/ds=2026-11-20/_SUCCESS", "raw/ratings/ds=2026-11-20/part-0.csv.crc",
     "raw/ratings/ds=2026-11-20/.part-0.csv.crc"],
])
def test_folder_and_success_markers_are_skipped_and_logged_never_fatal(aws, caplog, keys):
    """A 0-byte "folder" object or a _$folder$ marker failed every snapshot with "unknown file type"."""
    import logging

    base = f"s3://{aws['bucket']}"
    ratings, _ = generate(20, 30, 300, seed=3)
    put_csv(f"{base}/raw/ratings/ds=2026-11-20/part-0.csv", ratings)
    s3 = storage.client("s3")
    for key in keys:
        s3.put_object(Bucket=aws["bucket"], Key=key, Body=b"")
    s3.put_object(Bucket=aws["bucket"], Key="raw/items/", Body=b"")
    with caplog.at_level(logging.INFO, logger="tasks.data.snapshot"):
        manifest = build_snapshot(f"{base}/raw/ratings", DS, f"{base}/datasets/ds={DS}", f"{base}/q",
                                  items=f"{base}/raw/items")
    assert manifest["sources"] == [f"{base}/raw/ratings/ds=2026-11-20/part-0.csv"]
    assert manifest["rows_read"] == len(ratings)
    logged = caplog.text
    for key in keys:
        assert f"skipping {base}/{key}" in logged


@pytest.mark.parametrize("body, line, words", [
    # blank lines are lines: the bad row is on line 5
    (HEADER + "1,2,4,100\n\n\n1,3,abc,101\n", 5, "not a number"),
    # a quoted field over three lines (itself refused: control characters) shifts every line after it
    ('user_id,item_id,rating,timestamp\n"a\nb\nc",2,4,100\n1,3,abc,101\n', 5, "not a number"),
    # a trailing separator on every line: was read as a shifted frame, "rating outside the scale"
    ("user_id,item_id,rating,timestamp\n1,2,4,100,\n1,3,4,101,\n", 2, "5 fields, expected 4 (a separator at the end"),
    # a trailing separator on one line
    (HEADER + "1,2,4,100\n\n1,3,4,101,\n", 4, "5 fields, expected 4 (a separator at the end"),
    # a field too few: the real cause, before what it shifted
    (HEADER + "1,2,4,100\n\n1,3,101\n", 4, "3 fields, expected 4"),
])
def test_line_numbers_are_physical_and_the_real_cause_is_named(tmp_path, body, line, words):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "r.csv").write_text(body)
    with pytest.raises(DataValidationError) as err:
        _snapshot(raw, tmp_path)
    (problem,) = [p for p in err.value.problems if words in p.problem]
    assert problem.line == line, str(err.value)
    assert f"r.csv, line {line}" in str(err.value)
    if "fields" in words:  # the real cause comes first
        assert err.value.problems[0] is problem


def test_physical_lines_survive_chunking(tmp_path, monkeypatch):
    from tasks import schema

    monkeypatch.setattr(schema.iter_ratings, "__defaults__", (2,))
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = "".join(f'{i},"{i}",4,{100 + i}\n\n\n' for i in range(5))  # 3 lines per row
    (raw / "r.csv").write_text("user_id,item_id,rating,timestamp\n" + rows + "9,x,9,200\n")
    with pytest.raises(DataValidationError) as err:
        _snapshot(raw, tmp_path)  # the bad row is in the third chunk
    assert "r.csv, line 17, column 'rating': rating outside" in str(err.value)


def test_a_tie_across_files_keeps_the_file_listed_last_and_is_counted(tmp_path, caplog):
    """Same (user, item, timestamp), different ratings, in two files: the file listed last (keys
    sort by name) wins, as documented; the manifest and the log count the conflicts."""
    raw = tmp_path / "raw"
    (raw / "ds=2026-11-20").mkdir(parents=True)
    (raw / "ds=2026-11-21").mkdir(parents=True)
    (raw / "ds=2026-11-21" / "part.csv").write_text(HEADER + "u1,i1,2,100\nu1,i2,3,100\nu2,i1,5,100\n")
    (raw / "ds=2026-11-20" / "part.csv").write_text(HEADER + "u1,i1,4,100\nu1,i2,3,100\nu2,i1,1,100\n")
    manifest = _snapshot(raw, tmp_path)
    got = pd.read_parquet(tmp_path / "out" / "ratings.parquet")
    assert got.rating.tolist() == [2.0, 3.0, 5.0]  # ds=2026-11-21 is listed last
    assert manifest["tie_conflicts"] == 2 and manifest["rows"] == 3
    assert "2 (user_id, item_id, timestamp) row(s) appear in two files with different ratings" in caplog.text


def test_item_catalogue_types_nulls_and_title_limit(tmp_path):
    """Float ids match the ratings' integer ids (12.0 is "12", was "12.0"), a null title shows the
    id (was "None"), a title over the limit is rejected by line (a 450 KB title crashed publish)."""
    import pyarrow as pa

    from tasks.constants import MAX_TITLE_LENGTH

    path = tmp_path / "items.parquet"
    _parquet(path, {"item_id": pa.array([12.0, 13.0]), "title": pa.array(["A", None])})
    df = read_items(str(path))
    assert df.item_id.tolist() == ["12", "13"] and df.title.tolist() == ["A", "13"]
    csv_path = tmp_path / "items.csv"
    csv_path.write_text("item_id,title\n1,ok\n2," + "t" * MAX_TITLE_LENGTH + "\n3," + "t" * (MAX_TITLE_LENGTH + 1)
                        + "\n")
    with pytest.raises(DataValidationError) as err:
        read_items(str(csv_path))
    (problem,) = err.value.problems
    assert problem.line == 4 and problem.column == "title" and f"longer than {MAX_TITLE_LENGTH}" in problem.problem


def test_parquet_on_s3_is_read_by_row_group_through_a_temporary_file(aws, monkeypatch):
    """The streamed Parquet path against S3 (several batches): the same snapshot as a whole read."""
    from tasks import schema

    base = f"s3://{aws['bucket']}"
    ratings, _ = generate(30, 40, 600, seed=4)
    storage.write_parquet(f"{base}/raw/ratings/part.parquet", ratings.astype({"user_id": str, "item_id": str}))
    monkeypatch.setattr(schema.iter_ratings, "__defaults__", (64,))
    chunked = build_snapshot(f"{base}/raw/ratings", DS, f"{base}/datasets/ds={DS}", f"{base}/q")
    monkeypatch.setattr(schema.iter_ratings, "__defaults__", (10**6,))
    whole = build_snapshot(f"{base}/raw/ratings", DS, f"{base}/datasets/ds=2026-11-24", f"{base}/q2")
    assert chunked["rows"] == whole["rows"] == len(ratings.drop_duplicates(["user_id", "item_id"]))
    pd.testing.assert_frame_equal(storage.read_parquet(f"{base}/datasets/ds={DS}/ratings.parquet"),
                                  storage.read_parquet(f"{base}/datasets/ds=2026-11-24/ratings.parquet"))


def test_snapshot_memory_is_bounded_by_a_chunk_and_a_bucket_not_by_the_input(tmp_path, monkeypatch):
    """Parquet read whole (then every row held until one global sort) peaked at 25x the file. The
    rows now wait on disk and are sorted a bucket at a time: with 2^15-row chunks and buckets the
    Python/NumPy heap (tracemalloc: pandas' and NumPy's buffers, not Arrow's pool) peaks at a
    fraction of what holding 1M rows costs (28 bytes a row with the sort order), and the result is
    the same as with one bucket."""
    import tracemalloc

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks import schema
    from tasks.data import snapshot

    rows = 1 << 20
    rng = np.random.default_rng(3)
    user, item = rng.integers(0, 2000, rows), rng.integers(0, 500, rows)
    ts = np.arange(rows, dtype=np.int64) + 1_000_000  # unique: no duplicate rows
    raw = tmp_path / "raw"
    raw.mkdir()
    pq.write_table(pa.table({"user_id": pa.array(user.astype(str)), "item_id": pa.array(item, pa.int64()),
                             "rating": pa.array(rng.integers(1, 11, rows) / 2), "timestamp": pa.array(ts)}),
                   raw / "part.parquet")
    monkeypatch.setattr(schema.iter_ratings, "__defaults__", (1 << 15,))
    monkeypatch.setattr(snapshot, "BUCKET_ROWS", 1 << 15, raising=False)
    tracemalloc.start()
    try:
        small = build_snapshot(str(raw), DS, str(tmp_path / "small"), str(tmp_path / "q"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    held = rows * 28
    print(f"peak traced {peak / 2**20:.1f} MiB; holding every row: {held / 2**20:.1f} MiB")
    assert peak < held / 3
    monkeypatch.setattr(snapshot, "BUCKET_ROWS", 1 << 30, raising=False)
    whole = build_snapshot(str(raw), DS, str(tmp_path / "whole"), str(tmp_path / "q2"))
    same = [k for k in small if k != "created_at"]
    assert {k: small[k] for k in same} == {k: whole[k] for k in same}
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "small" / "ratings.parquet"),
                                  pd.read_parquet(tmp_path / "whole" / "ratings.parquet"))


def test_a_pandas_frame_written_with_its_row_labels_is_accepted(tmp_path):
    """``df[mask].to_parquet()`` stores the row labels as ``__index_level_0__``: they are not data,
    so the snapshot reads the ratings (it refused the file as an unexpected column); a named index
    (``set_index("user_id")``) is read as the column it names."""
    raw = tmp_path / "raw"
    raw.mkdir()
    frame = pd.DataFrame({"user_id": ["u1", "u2", "u3", "u4"], "item_id": [10, 11, 12, 13],
                          "rating": [4.0, 3.0, 5.0, 2.0], "timestamp": [100, 101, 102, 103]}, index=[5, 7, 9, 11])
    frame.iloc[:3].to_parquet(raw / "filtered.parquet")
    frame.iloc[3:].set_index("user_id").to_parquet(raw / "indexed.parquet")
    import pyarrow.parquet as pq

    assert "__index_level_0__" in pq.ParquetFile(raw / "filtered.parquet").schema_arrow.names
    manifest = _snapshot(raw, tmp_path)
    assert manifest["rows"] == 4
    stored = pd.read_parquet(tmp_path / "out" / "ratings.parquet")
    assert sorted(stored.user_id) == ["u1", "u2", "u3", "u4"] and "__index_level_0__" not in stored.columns
