"""Small shims for the Airflow 3 versions we support (3.0.6 → 3.3.x)."""

from __future__ import annotations

try:  # airflow.sdk.exceptions has it from 3.2 on; 3.0.6 and 3.1.x only in airflow.exceptions
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
except ImportError:  # pragma: no cover - exercised on the oldest supported Airflow
    from airflow.exceptions import AirflowFailException, AirflowSkipException

__all__ = ["AirflowFailException", "AirflowSkipException"]
