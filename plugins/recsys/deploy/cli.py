"""``python -m recsys.deploy push-image | push-jobs-image [--image LOCAL] | image-tag``."""

from __future__ import annotations

import logging
import sys

from recsys.deploy.image import ImageUnavailable, ensure_image, push_jobs_image, serving_image_tag
from recsys.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """``python -m recsys.deploy push-image | push-jobs-image [--image LOCAL] | image-tag``: build and
    push the serving image the DAG will deploy, or the jobs image ECS runs the stages from."""
    import argparse

    import boto3

    parser = argparse.ArgumentParser(prog="python -m recsys.deploy")
    parser.add_argument("command", choices=["push-image", "push-jobs-image", "image-tag"])
    parser.add_argument("--image", help="push-jobs-image: push this local image instead of building one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if args.command == "image-tag":
        print(serving_image_tag(settings))
        return 0
    ecr = boto3.client("ecr", region_name=settings.region)
    try:
        if args.command == "push-jobs-image":
            print("\n".join(push_jobs_image(ecr, settings, args.image)))
            return 0
        print(ensure_image(ecr, settings))
    except (ImageUnavailable, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
