"""``python -m tasks.score``: the scoring container entrypoint.

Score one shard:  ``--model URI --ratings URI --model-version V --top-n N [--shard I/N] [--table T | --out URI]``
Finalize:         ``--finalize --model URI --ratings URI --model-version V --top-n N --shards N --table T``
Import path:      score with ``--import-out s3://B/P`` instead of ``--table``, then
                  ``--finalize ... --import-from s3://B/P --table NEW``: DynamoDB creates NEW from the files
Retain:           ``--retain V=URI [V=URI ...] --table T --ttl-days D [--table-per-version]``
                  keep these versions from expiring
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tasks import storage
from tasks.constants import DEFAULT_TABLE, DEFAULT_TOP_N
from tasks.errors import run_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model prefix (s3:// or path)")
    parser.add_argument("--ratings", help="snapshot prefix or ratings Parquet file")
    parser.add_argument("--model-version")
    parser.add_argument("--top-n", type=int, default=DEFAULT_TOP_N)
    parser.add_argument("--shard", default="0/1", help="I/N: score the I-th of N user shards (from 0)")
    dest = parser.add_mutually_exclusive_group()
    dest.add_argument("--table", help=f"DynamoDB table (default $RECSYS_TABLE or {DEFAULT_TABLE})")
    dest.add_argument("--out", help="write Parquet below this prefix instead of DynamoDB")
    dest.add_argument("--import-out", help="write DynamoDB-JSON import files below this S3 prefix instead of "
                                           "DynamoDB (then --finalize --import-from it into a new table)")
    parser.add_argument("--ttl-days", type=int, default=int(os.environ.get("RECSYS_TTL_DAYS", "30")))
    parser.add_argument("--chunk-size", type=int, default=4096, help="users scored and written per group (bounds the results held in memory)")
    parser.add_argument("--min-ratings", type=int, default=int(os.environ.get("RECSYS_MIN_RATINGS", "1")),
                        help="users with fewer ratings get no personal row (serving gives them the fallback list)")
    parser.add_argument("--finalize", action="store_true", help="verify all shards and mark the version complete")
    parser.add_argument("--shards", type=int, default=1, help="with --finalize: how many shards ran")
    parser.add_argument("--import-from", help="with --finalize: create --table (new) by DynamoDB import from "
                                              "this prefix first")
    parser.add_argument("--retain", nargs="*", metavar="VERSION=URI",
                        help="extend the TTL of these versions (live, previous) when close to expiry")
    parser.add_argument("--table-per-version", action="store_true",
                        help="with --retain: version V lives in table T-V (import path); drop old T-v* tables")
    args = parser.parse_args(argv)
    storage.setup_logging()
    from tasks.score import finalize, parse_shard, retain, score_shard

    if args.retain is not None:
        tokens = " ".join(args.retain).split()  # one templated argument may hold several pairs
        pairs = dict(t.split("=", 1) for t in tokens if "=" in t)
        print(json.dumps(retain(args.table or os.environ.get("RECSYS_TABLE", DEFAULT_TABLE), pairs, args.ttl_days,
                                per_version=args.table_per_version)))
        return 0
    missing = [f for f in ("model", "ratings", "model_version") if not getattr(args, f)]
    if missing:
        parser.error("missing " + ", ".join("--" + m.replace("_", "-") for m in missing))

    table_name = args.table or (None if args.out or args.import_out
                                else os.environ.get("RECSYS_TABLE", DEFAULT_TABLE))
    if args.finalize:
        if not table_name:
            parser.error("--finalize needs a table")
        result = finalize(args.model, args.ratings, args.model_version, args.top_n, args.shards, table_name,
                          args.ttl_days, args.min_ratings, args.import_from)
    else:
        try:
            shard = parse_shard(args.shard)
        except ValueError as err:
            parser.error(str(err))
        result = score_shard(args.model, args.ratings, args.model_version, args.top_n, shard, table_name,
                             args.out, args.ttl_days, args.chunk_size, args.min_ratings, args.import_out)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
