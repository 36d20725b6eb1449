"""The managed-platform version table (``deploy/platforms.toml``), for scripts and CI.

    python scripts/platforms.py rows        # one line per version: platform airflow python matrix pins-or-specs
    python scripts/platforms.py oldest      # the row of the oldest Airflow: mwaa-3.0.6
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "deploy" / "platforms.toml"
# a row's `matrix`: how much of the suite scripts/compat_matrix.sh runs on it (light: the default)
SCOPES = ("full", "light")


def load(path: Path = TABLE) -> dict:
    return tomllib.loads(path.read_text())


def versions(platform: str, table: dict | None = None) -> tuple[str, ...]:
    """The Airflow versions ``platform`` (mwaa, composer) offers, oldest first."""
    rows = (table or load())[platform]["versions"]
    return tuple(sorted((r["airflow"] for r in rows), key=lambda v: tuple(int(p) for p in v.split("."))))


def python(platform: str, table: dict | None = None) -> str:
    return (table or load())[platform]["python"]


def airflow_side() -> list[str]:
    """requirements/airflow.txt: what a worker needs beside Airflow, as ranges."""
    lines = (ROOT / "requirements" / "airflow.txt").read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


def rows(table: dict | None = None) -> list[dict]:
    """Every (platform, version) with what to install: a pins file, or the specs to pin."""
    table = table or load()
    out = []
    for platform, spec in table.items():
        for row in spec["versions"]:
            specs = [f"apache-airflow=={row['airflow']}"]
            if row.get("amazon_provider"):
                specs.append(f"apache-airflow-providers-amazon[aiobotocore]=={row['amazon_provider']}")
            if row.get("aiobotocore"):
                specs.append(f"aiobotocore=={row['aiobotocore']}")
            # the rest of the Airflow side as the bundle asks for it (ranges; pip picks what fits this Airflow)
            specs += [r for r in airflow_side() if not any(r.startswith(s.split("[")[0].split("=")[0])
                                                          for s in specs[1:])]
            scope = row.get("matrix", "light")
            if scope not in SCOPES:
                raise ValueError(f"{TABLE.name}: {platform} {row['airflow']}: matrix = {scope!r}, not one of {SCOPES}")
            out.append({"platform": platform, "airflow": row["airflow"], "python": spec["python"],
                        "matrix": scope, "pins": row.get("pins"), "specs": specs})
    return out


def oldest(table: dict | None = None) -> str:
    """The matrix row (``platform-airflow``) of the oldest supported Airflow (the table's first on a tie)."""
    got = min(rows(table), key=lambda r: tuple(int(p) for p in r["airflow"].split(".")))
    return f"{got['platform']}-{got['airflow']}"


if __name__ == "__main__":
    if sys.argv[1:] == ["rows"]:
        for r in rows():
            print(r["platform"], r["airflow"], r["python"], r["matrix"], r["pins"] or " ".join(r["specs"]))
    elif sys.argv[1:] == ["oldest"]:
        print(oldest())
    else:
        sys.exit(__doc__)
