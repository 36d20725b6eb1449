"""Stage operators: the providers' Bash, Docker and ECS operators, taught the stages' exit
code 3 ("do not retry") and to quote the stage's own reason when it fails.

One module per backend, so a deployment needs (and a DAG parse imports) only the
provider of the backend it uses.
"""

from __future__ import annotations

from collections.abc import Sequence

from recsys.layout import ERROR_PREFIX, EXIT_NO_RETRY

TAIL_LINES = 20


def stage_failure(stage: str, exit_code: int | None, lines: Sequence[str]):
    """The exception a failed stage raises: the stage's own reason first, then its last
    log lines; :class:`AirflowFailException` (no retries) for exit code 3."""
    from airflow.exceptions import AirflowException

    from recsys.compat import AirflowFailException, remember_failure

    lines = [str(line).rstrip() for line in lines if str(line).strip()]
    stated = [line.split(ERROR_PREFIX, 1)[1] for line in lines if ERROR_PREFIX in line]
    reason = stated[-1] if stated else (lines[-1] if lines else "no output")
    retry = exit_code != EXIT_NO_RETRY
    text = (f"stage {stage} failed (exit code {exit_code}{'' if retry else ', not retried: a retry cannot fix it'})"
            f": {reason}\n-- last {len(lines[-TAIL_LINES:])} log lines --\n" + "\n".join(lines[-TAIL_LINES:]))
    return remember_failure(AirflowException(text) if retry else AirflowFailException(text))
