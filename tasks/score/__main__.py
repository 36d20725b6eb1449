"""``python -m tasks.score``: the scoring container entrypoint.

Score one shard:  ``--model URI --ratings URI --model-version V --top-n N [--shard I/N] [--table T | --out URI]``
(then ``python -m tasks.publish finalize`` marks the version complete).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from tasks import storage
from tasks.errors import run_cli
from tasks.layout import DEFAULT_TABLE, DEFAULT_TOP_N, DEFAULT_TTL_DAYS

log = logging.getLogger("tasks.score")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    storage.setup_logging()
    if args.threads is not None:  # the flag wins; set_threads() reads the one variable
        os.environ["RECSYS_THREADS"] = str(args.threads)
    from tasks.score import parse_shard, score_shard

    table_name = args.table or (None if args.out else os.environ.get("RECSYS_TABLE", DEFAULT_TABLE))
    try:
        shard = parse_shard(args.shard)
    except ValueError as err:
        parser.error(str(err))
    result = score_shard(args.model, args.ratings, args.model_version, args.top_n, shard, table_name,
                         args.out, args.ttl_days, args.chunk_size, args.min_ratings)
    print(json.dumps(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line (the Airflow side's argvs are checked against it: tests/test_stage_argv.py)."""
    parser = argparse.ArgumentParser(prog="python -m tasks.score", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model prefix (s3:// or path)")
    parser.add_argument("--ratings", required=True, help="snapshot prefix or ratings Parquet file")
    parser.add_argument("--model-version", required=True)
    parser.add_argument("--top-n", type=int, default=DEFAULT_TOP_N)
    parser.add_argument("--shard", default="0/1", help="I/N: score the I-th of N user shards (from 0)")
    dest = parser.add_mutually_exclusive_group()
    dest.add_argument("--table", help=f"DynamoDB table (default $RECSYS_TABLE or {DEFAULT_TABLE})")
    dest.add_argument("--out", help="write Parquet below this prefix instead of DynamoDB")
    parser.add_argument("--ttl-days", type=int, default=int(os.environ.get("RECSYS_TTL_DAYS", DEFAULT_TTL_DAYS)))
    parser.add_argument("--chunk-size", type=int, default=4096,
                        help="users scored and written per group (bounds the results held in memory)")
    parser.add_argument("--min-ratings", type=int, default=int(os.environ.get("RECSYS_MIN_RATINGS", "1")),
                        help="users with fewer ratings get no personal row (serving gives them the fallback list)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of torch and the scoring kernel (0: every core; default $RECSYS_THREADS)")
    return parser


if __name__ == "__main__":
    sys.exit(run_cli(main))
