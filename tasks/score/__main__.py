"""``python -m tasks.score``: the scoring container entrypoint.

Score one shard:  ``--model URI --ratings URI --model-version V --top-n N [--shard I/N] [--table T | --out URI]``
(then ``python -m tasks.publish finalize`` marks the version complete). ``--finalize`` and
``--retain``, from DAG bundles older than ``tasks.publish``, are handed to ``tasks.publish``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from tasks import storage
from tasks.constants import DEFAULT_TABLE, DEFAULT_TOP_N, DEFAULT_TTL_DAYS
from tasks.errors import PermanentError, run_cli

log = logging.getLogger("tasks.score")


def legacy_publish_argv(argv: list[str]) -> list[str] | None:
    """``python -m tasks.score --finalize …`` or ``--retain …`` as ``python -m tasks.publish``
    arguments, or None for a scoring command line.

    DAG bundles from before ``tasks.publish`` run these; on MWAA or Composer the jobs image
    (ECR's ``latest``) and the DAG bundle are updated separately, so an older DAG can drive a
    newer image for a while and must still publish."""
    if "--finalize" in argv:
        return ["finalize", *(a for a in argv if a != "--finalize")]
    if "--retain" in argv:
        at = argv.index("--retain")
        return ["retain", *argv[:at], *argv[at + 1:]]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    removed = [a for a in ("--import-out", "--import-from", "--table-per-version") if a in argv]
    if removed:
        raise PermanentError(f"python -m tasks.score: {' '.join(removed)} belonged to RECSYS_PUBLISH=import, "
                             "which was removed: upload the current DAG bundle (it publishes by BatchWriteItem)")
    legacy = legacy_publish_argv(argv)
    if legacy is not None:
        from tasks.publish.__main__ import main as publish_main

        storage.setup_logging()
        log.warning("`python -m tasks.score %s` is the command line of a DAG bundle older than this jobs image: "
                    "running `python -m tasks.publish %s` (upload the current DAG bundle)", legacy[0], legacy[0])
        return publish_main(legacy)
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


if __name__ == "__main__":
    sys.exit(run_cli(main))
