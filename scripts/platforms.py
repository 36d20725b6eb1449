"""The managed-platform version table (``deploy/platforms.toml``), for scripts and CI.

    python scripts/platforms.py rows        # one line per version: platform airflow python pins-or-specs
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "deploy" / "platforms.toml"


def load(path: Path = TABLE) -> dict:
    return tomllib.loads(path.read_text())


def versions(platform: str, table: dict | None = None) -> tuple[str, ...]:
    """The Airflow versions ``platform`` (mwaa, composer) offers, oldest first."""
    rows = (table or load())[platform]["versions"]
    return tuple(sorted((r["airflow"] for r in rows), key=lambda v: tuple(int(p) for p in v.split("."))))


def python(platform: str, table: dict | None = None) -> str:
    return (table or load())[platform]["python"]


def rows(table: dict | None = None) -> list[dict]:
    """Every (platform, version) with what to install: a pins file, or the specs to pin."""
    table = table or load()
    out = []
    for platform, spec in table.items():
        for row in spec["versions"]:
            specs = [f"apache-airflow=={row['airflow']}"]
            if row.get("amazon_provider"):
                specs.append(f"apache-airflow-providers-amazon=={row['amazon_provider']}")
            if row.get("aiobotocore"):
                specs.append(f"aiobotocore=={row['aiobotocore']}")
            out.append({"platform": platform, "airflow": row["airflow"], "python": spec["python"],
                        "pins": row.get("pins"), "specs": specs})
    return out


if __name__ == "__main__":
    if sys.argv[1:] != ["rows"]:
        sys.exit(__doc__)
    for r in rows():
        print(r["platform"], r["airflow"], r["python"], r["pins"] or " ".join(r["specs"]))
