"""Run a ``python -m`` command under ``/usr/bin/time -v``: its JSON result, wall time, peak memory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_timed(args: list[str], env: dict | None = None) -> tuple[dict, float, float]:
    """``python -m *args`` from the repository root: (last stdout line as JSON, wall s, peak RSS GB)."""
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    if proc.returncode:
        raise SystemExit(f"{args[0]} failed:\n{proc.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    wall_s = sum(float(v) * 60 ** n for n, v in enumerate(reversed(wall.split(":"))))
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall_s, rss_kb / 2**20
