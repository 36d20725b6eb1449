"""``python -m tasks.data {bootstrap,snapshot,synthetic}``: the data container entrypoint."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from tasks import storage
from tasks.errors import run_cli

log = logging.getLogger("tasks.data")


def build_parser() -> argparse.ArgumentParser:
    """The command line (the Airflow side's argvs are checked against it: tests/test_stage_argv.py)."""
    parser = argparse.ArgumentParser(prog="python -m tasks.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    boot = sub.add_parser("bootstrap", help="seed raw ratings (MovieLens 100k or synthetic)")
    boot.add_argument("--raw", required=True, help="raw ratings prefix, e.g. s3://bucket/raw/ratings")
    boot.add_argument("--items", required=True, help="item catalogue prefix, e.g. s3://bucket/raw/items")
    boot.add_argument("--movielens", help="folder holding MovieLens 100k (u.data, u.item)")
    boot.add_argument("--no-download", action="store_true", help="never try to download MovieLens")
    boot.add_argument("--seed", type=int, default=0)

    snap = sub.add_parser("snapshot", help="validate raw ratings and write the run's snapshot")
    snap.add_argument("--raw", required=True)
    snap.add_argument("--items", help="item catalogue prefix (optional)")
    snap.add_argument("--ds", required=True, help="run date YYYY-MM-DD")
    snap.add_argument("--out", required=True, help="snapshot prefix, e.g. s3://bucket/datasets/ds=...")
    snap.add_argument("--quarantine", required=True, help="where rejected input is copied")
    snap.add_argument("--rating-min", type=float, default=0.5)
    snap.add_argument("--rating-max", type=float, default=5.0)
    snap.add_argument("--max-drop", type=float, default=0.5,
                      help="reject if the row count fell by more than this fraction against the previous "
                           "snapshot (default 0.5; negative disables)")

    syn = sub.add_parser("synthetic", help="write a synthetic data set")
    syn.add_argument("--preset", default="ml-100k")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--out", required=True, help="ratings file (.csv or .parquet)")
    syn.add_argument("--items-out", help="item catalogue file (.csv or .parquet)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    storage.setup_logging()
    from tasks.data import DataValidationError, build_snapshot, generate_preset
    from tasks.data.bootstrap import bootstrap

    if args.command == "bootstrap":
        result = bootstrap(args.raw, args.items, args.movielens, not args.no_download, args.seed)
    elif args.command == "snapshot":
        try:
            result = build_snapshot(args.raw, args.ds, args.out, args.quarantine, args.items,
                                    args.rating_min, args.rating_max,
                                    None if args.max_drop < 0 else args.max_drop)
        except DataValidationError as err:
            raise DataValidationError(err.problems, note=f"rejected input was copied to {args.quarantine}; "
                                      "the live model keeps serving") from None
    else:
        ratings, items = generate_preset(args.preset, args.seed)
        for uri, df in ((args.out, ratings), (args.items_out, items)):
            if uri and uri.endswith(".parquet"):
                storage.write_parquet(uri, df)
            elif uri:
                storage.write_bytes(uri, df.to_csv(index=False).encode())
        result = {"ratings": args.out, "rows": len(ratings)}
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
