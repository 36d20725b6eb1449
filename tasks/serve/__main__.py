"""``python -m tasks.serve [--host H] [--port P]``: run the recommendations service."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

# a container's server listens on all interfaces; --host narrows it
ALL_INTERFACES = "0.0.0.0"  # nosec B104


def uvicorn_options() -> dict:
    """How the app is served, here and in the image alike (the bench serves its baseline with the
    same): one worker, uvicorn's pure-Python h11 parser, whose header bound is a setting (httptools,
    which ``http="auto"`` prefers where installed, has none: it took 8 MB of headers)."""
    from tasks.serve.config import MAX_HEADER_BYTES

    return {"http": "h11", "h11_max_incomplete_event_size": MAX_HEADER_BYTES, "loop": "asyncio",
            "log_level": "info"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.serve", description=__doc__)
    parser.add_argument("--host", default=ALL_INTERFACES, help="default: all interfaces, as in a container")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)

    import uvicorn

    from tasks import storage
    from tasks.serve import create_app
    from tasks.serve.config import Settings

    storage.setup_logging()
    try:
        settings = Settings()
    except ValidationError as err:
        missing = ", ".join(str(e["loc"][0]).upper() for e in err.errors())
        print(f"tasks.serve: invalid or missing environment: {missing}\n{err}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(settings), host=args.host, port=args.port, **uvicorn_options())
    return 0


if __name__ == "__main__":
    sys.exit(main())
