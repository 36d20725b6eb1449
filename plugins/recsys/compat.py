"""Small shims for the Airflow 3 versions we support (3.0.6 → 3.3.x)."""

from __future__ import annotations

try:  # airflow.sdk.exceptions has it from 3.2 on; 3.0.6 and 3.1.x only in airflow.exceptions
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
except ImportError:  # pragma: no cover - exercised on the oldest supported Airflow
    from airflow.exceptions import AirflowFailException, AirflowSkipException  # type: ignore[no-redef]

from airflow import __version__ as AIRFLOW_VERSION

try:  # the Task SDK's (3.x); the old path still works but warns
    from airflow.sdk import BaseOperator
except ImportError:  # pragma: no cover
    from airflow.models import BaseOperator


def _major_minor(version: str) -> tuple[int, int]:
    major, minor, *_ = (int("".join(c for c in part if c.isdigit()) or 0) for part in version.split("."))
    return major, minor


# Airflow 3.0.x's `airflow dags test` refuses a task with outlets whose assets were never
# activated by a dag-processor (AirflowInactiveAssetInInletOrOutletException): lineage
# (Assets as outlets) is declared from 3.1 on.
ASSET_OUTLETS = _major_minor(AIRFLOW_VERSION) >= (3, 1)
# A DAG failure callback's task is the relevant one (for a timed-out run: the unfinished task that
# started last) from apache/airflow#61274; before, it is the run's last task by name. Verified on 3.3.
DAG_CALLBACK_TI_IS_RELEVANT = _major_minor(AIRFLOW_VERSION) >= (3, 3)


def outlets(*assets) -> list:
    """``outlets=`` for a task: the assets where this Airflow handles them (see ASSET_OUTLETS)."""
    return list(assets) if ASSET_OUTLETS else []


# The last failure raised in this process (a task process runs one task, then its callbacks).
LAST_FAILURE: list[str] = []


def remember_failure(exception: BaseException) -> BaseException:
    """Keep the failure's text for the failure callback of this task process.

    Airflow 3.0.x passes no ``exception`` to ``on_failure_callback`` (its context lacks it,
    and the task object there is another copy), so :mod:`recsys.notifiers` falls back to this.
    """
    LAST_FAILURE[:] = [str(exception)]
    return exception


def fail(message: str) -> BaseException:
    """``raise fail(msg)`` in a @task: an AirflowFailException (no retries) the alert can quote."""
    return remember_failure(AirflowFailException(message))


__all__ = ["ASSET_OUTLETS", "BaseOperator", "LAST_FAILURE", "AirflowFailException", "AirflowSkipException", "fail",
           "outlets",
           "remember_failure"]
