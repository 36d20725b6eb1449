"""``python -m tasks.publish {finalize,retain,versions}``: the publishing container entrypoint.

Finalize:  ``finalize --model URI --ratings URI --model-version V --top-n N --shards N [--table T]``
           every shard and user checked, the fallback list, then the completion marker
Retain:    ``retain V=URI [V=URI ...] [--table T] [--ttl-days D]``
           keep these versions (live, previous) from expiring
Versions:  ``versions --root s3://BUCKET [--table T] [--out URI]``
           the versions page (index.html with plots) and the same data (versions.json) below ``--out``
           (default ``<root>/versions``)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tasks import layout, storage
from tasks.errors import run_cli
from tasks.layout import DEFAULT_TABLE, DEFAULT_TOP_N, DEFAULT_TTL_DAYS


def build_parser() -> argparse.ArgumentParser:
    """The command line (the Airflow side's argvs are checked against it: tests/test_stage_argv.py)."""
    parser = argparse.ArgumentParser(prog="python -m tasks.publish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--table", default=os.environ.get("RECSYS_TABLE", DEFAULT_TABLE),
                        help=f"DynamoDB table (default $RECSYS_TABLE or {DEFAULT_TABLE})")
    common.add_argument("--ttl-days", type=int, default=int(os.environ.get("RECSYS_TTL_DAYS", DEFAULT_TTL_DAYS)))
    sub = parser.add_subparsers(dest="command", required=True)
    fin = sub.add_parser("finalize", parents=[common], help="verify all shards and mark the version complete")
    fin.add_argument("--model", required=True, help="model prefix (s3:// or path)")
    fin.add_argument("--ratings", required=True, help="snapshot prefix or ratings Parquet file")
    fin.add_argument("--model-version", required=True)
    fin.add_argument("--top-n", type=int, default=DEFAULT_TOP_N)
    fin.add_argument("--shards", type=int, default=1, help="how many score shards ran")
    fin.add_argument("--min-ratings", type=int, default=int(os.environ.get("RECSYS_MIN_RATINGS", "1")),
                     help="as the score shards were given")
    ret = sub.add_parser("retain", parents=[common],
                         help="extend the TTL of these versions (live, previous) when close to expiry")
    ret.add_argument("versions", nargs="*", metavar="VERSION=URI")
    ver = sub.add_parser("versions", parents=[common], help="regenerate the versions page and its JSON")
    ver.add_argument("--root", required=True, help="the pipeline's bucket (s3://BUCKET) or a local folder")
    ver.add_argument("--out", default=None, help="where index.html and versions.json go (default <root>/versions)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    storage.setup_logging()
    from tasks.publish import finalize, retain

    if args.command == "versions":
        from tasks.publish.versions import publish as publish_versions

        result = publish_versions(args.root, args.table or None, args.out)
    elif args.command == "retain":
        try:  # one templated argument may hold several pairs
            versions = layout.parse_retain(" ".join(args.versions))
        except ValueError as err:
            parser.error(str(err))
        result = retain(args.table, versions, args.ttl_days)
    else:
        result = finalize(args.model, args.ratings, args.model_version, args.top_n, args.shards, args.table,
                          args.ttl_days, args.min_ratings)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
