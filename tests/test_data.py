"""Readers, validation (one test per problem class), snapshot and quarantine."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pandas as pd
import pytest

from tasks import storage
from tasks.data import DataValidationError, build_snapshot, generate
from tasks.data.schema import read_items, read_ratings, validate_ratings

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
    from tasks.data import schema

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
    from tasks.data import schema

    monkeypatch.setattr(schema.iter_ratings, "__defaults__", (7,))  # several chunks per file
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
