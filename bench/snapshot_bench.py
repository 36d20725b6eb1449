"""Snapshot peak memory against the input size, CSV and Parquet: ``make bench-snapshot``.

Generates one canonical ratings CSV of about ``--mb`` MB (default 200) and the same rows as one
Parquet file (pandas' ``to_parquet`` defaults: snappy, row groups of 1,048,576 rows), then runs,
each in a fresh process under ``/usr/bin/time -v``:

- ``python -m tasks.data snapshot`` on each file alone, as the DAG runs it (local paths: no S3
  copy in memory);
- the baselines: ``pandas.read_csv`` / ``pandas.read_parquet`` of the same file with typed columns
  (what holding the table at all costs), and an interpreter that only imports pandas and pyarrow.

Prints peak RSS for each, the snapshot's ratio to the file size (target <= 3x) and to the baseline.
A Parquet file is about 2x smaller than the CSV of the same rows, so its multiple is the harder one;
the snapshot keeps rows on disk until it sorts them a bucket at a time, so its peak is the
interpreter plus a chunk and a bucket, whatever the input's size.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def generate(path: Path, mb: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    rows = int(mb * 1e6 / 27)
    df = pd.DataFrame({
        "user_id": rng.integers(1, 160_000, rows), "item_id": rng.integers(1, 60_000, rows),
        "rating": rng.integers(1, 11, rows) / 2, "timestamp": rng.integers(1_500_000_000, 1_700_000_000, rows),
    })
    df = df.drop_duplicates(["user_id", "item_id", "timestamp"])
    df.to_csv(path, index=False, chunksize=1_000_000)
    return len(df)


def peak_rss_mb(cmd: list[str]) -> float:
    res = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{res.stderr[-3000:]}")
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1)) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--formats", default="csv,parquet", help="which inputs to measure (default csv,parquet)")
    args = ap.parse_args()
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        csv_file = Path(tmp) / "ratings.csv"
        rows = generate(csv_file, args.mb)
        py = sys.executable
        base = peak_rss_mb([py, "-c", "import pandas, pyarrow"])
        typed = "{'user_id': str, 'item_id': str, 'rating': 'float32', 'timestamp': 'int64'}"
        reads = {
            "csv": f"import sys, pandas as pd; pd.read_csv(sys.argv[1], dtype={typed})",
            "parquet": "import sys, pandas as pd; pd.read_parquet(sys.argv[1])",
        }
        print(f"{'process':<52}{'peak RSS MiB':>14}{'x file':>9}")
        print(f"{'python + pandas + pyarrow (imports only)':<52}{base:>14.0f}")
        for fmt in formats:
            raw = Path(tmp) / f"raw-{fmt}"
            raw.mkdir()
            f = raw / f"ratings.{fmt}"
            if fmt == "csv":
                csv_file.rename(f)
                csv_file = f
            else:  # the same rows; ids as strings, as an upstream export of string ids would hold them
                pd.read_csv(csv_file, dtype={"user_id": str, "item_id": str}).to_parquet(f, index=False)
            size = f.stat().st_size / 2**20
            baseline = peak_rss_mb([py, "-c", reads[fmt], str(f)])
            snap = peak_rss_mb([py, "-m", "tasks.data", "snapshot", "--raw", str(raw), "--ds", "2026-12-01",
                                "--out", str(Path(tmp) / f"out-{fmt}"), "--quarantine", str(Path(tmp) / f"q-{fmt}")])
            print(f"input: {f.name}, {size:.1f} MiB, {rows:,} rows")
            print(f"{'  baseline: pandas.read_' + fmt + ', typed columns':<52}{baseline:>14.0f}{baseline / size:>9.2f}")
            print(f"{'  python -m tasks.data snapshot':<52}{snap:>14.0f}{snap / size:>9.2f}")
            print(f"  {fmt}: snapshot / baseline read_{fmt}: {snap / baseline:.2f}x; snapshot above imports: "
                  f"{(snap - base) / size:.2f}x the file "
                  f"(target <= 3x the file: {'met' if snap <= 3 * size else 'NOT met'})")


if __name__ == "__main__":
    main()
