"""``python -m tasks.train --ratings URI --out URI``: the training container entrypoint."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from tasks import storage
from tasks.errors import run_cli
from tasks.train import TrainConfig, train


def build_parser() -> argparse.ArgumentParser:
    """The command line (the Airflow side's argvs are checked against it: tests/test_stage_argv.py)."""
    parser = argparse.ArgumentParser(prog="python -m tasks.train", description=__doc__)
    parser.add_argument("--ratings", required=True, help="snapshot prefix or ratings file (s3:// or path)")
    parser.add_argument("--out", required=True, help="model prefix, e.g. s3://bucket/models/v20261123T020000s-4f1c2a")
    parser.add_argument("--champion", default="", help="live model URI to compare on the same holdout")
    parser.add_argument("--ds", default=None, help="run date, recorded in meta.json")
    parser.add_argument("--model-version", default=None, help="recorded in meta.json")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, type=type(getattr(defaults, f.name)), default=getattr(defaults, f.name),
                            help=f"default {getattr(defaults, f.name)}")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of torch and the scoring kernel (0: every core; default $RECSYS_THREADS)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    defaults = TrainConfig()
    storage.setup_logging()
    if args.threads is not None:  # the flag wins; set_threads() reads the one variable
        os.environ["RECSYS_THREADS"] = str(args.threads)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) if getattr(args, f.name) is not None
                         else getattr(defaults, f.name) for f in dataclasses.fields(TrainConfig)})
    metrics = train(args.ratings, args.out, cfg, champion=args.champion or None, ds=args.ds,
                    model_version=args.model_version)
    print(json.dumps({k: metrics[k] for k in ("candidate", "holdout", "fit_seconds")}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
