"""Snapshot peak memory against the input size: ``make bench-snapshot``.

Generates one canonical ratings CSV of about ``--mb`` MB (default 200), then runs, each in a fresh
process under ``/usr/bin/time -v``:

- ``python -m tasks.data snapshot`` on it, as the DAG runs it (local paths: no S3 copy in memory);
- the baseline: ``pandas.read_csv`` of the same file with typed columns (what holding the table
  at all costs), and an interpreter that only imports pandas and pyarrow.

Prints peak RSS for each, the snapshot's ratio to the file size (target <= 3x) and to the baseline.
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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        f = raw / "ratings.csv"
        rows = generate(f, args.mb)
        size = f.stat().st_size / 2**20
        print(f"input: {f.name}, {size:.0f} MiB, {rows:,} rows")
        py = sys.executable
        base = peak_rss_mb([py, "-c", "import pandas, pyarrow"])
        typed = peak_rss_mb([py, "-c", "import sys, pandas as pd; pd.read_csv(sys.argv[1], dtype={'user_id': str, "
                                       "'item_id': str, 'rating': 'float32', 'timestamp': 'int64'})", str(f)])
        snap = peak_rss_mb([py, "-m", "tasks.data", "snapshot", "--raw", str(raw), "--ds", "2026-12-01",
                            "--out", str(Path(tmp) / "out"), "--quarantine", str(Path(tmp) / "q")])
        print(f"{'process':<48}{'peak RSS MiB':>14}{'x file':>9}")
        for name, mb in [("python + pandas + pyarrow (imports only)", base),
                         ("baseline: pandas.read_csv, typed columns", typed),
                         ("python -m tasks.data snapshot", snap)]:
            print(f"{name:<48}{mb:>14.0f}{mb / size:>9.2f}")
        print(f"snapshot / baseline read_csv: {snap / typed:.2f}x; snapshot above imports: "
              f"{(snap - base) / size:.2f}x the file "
              f"(target <= 3x the file: {'met' if snap <= 3 * size else 'NOT met'})")


if __name__ == "__main__":
    main()
