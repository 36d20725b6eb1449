"""Failures a retry cannot fix, and how a container entrypoint reports them.

Every stage (``python -m tasks.data|train|score|publish``) runs through :func:`run_cli`:

- a :class:`PermanentError` (bad input, a refused write, an incomplete artifact)
  exits with :data:`EXIT_NO_RETRY` after printing ``RECSYS-ERROR: <message>`` as
  its last line: the Airflow side fails the task at once, without retries, and
  the alert quotes the message;
- anything else is left to crash (exit 1, traceback): a transient fault, retried
  with back-off.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from tasks.layout import ERROR_PREFIX, EXIT_NO_RETRY

log = logging.getLogger("tasks")


class PermanentError(Exception):
    """A failure that the same command would hit again: do not retry it."""


class LiveVersionError(PermanentError):
    """A write under the live (or rollback) version was refused."""


class IncompleteArtifactError(PermanentError):
    """A model artifact without (or not matching) its completion manifest."""


def one_line(message: str) -> str:
    return " | ".join(part.strip() for part in str(message).splitlines() if part.strip())


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run an entrypoint's ``main``; a :class:`PermanentError` becomes exit code 3 and one
    ``RECSYS-ERROR:`` line on stderr (the last line the task prints)."""
    try:
        return main(argv)
    except PermanentError as err:
        log.error("%s", err)
        sys.stdout.flush()
        print(ERROR_PREFIX + one_line(str(err)), file=sys.stderr, flush=True)
        return EXIT_NO_RETRY
