"""The run deadline (``RECSYS_RUN_DEADLINE_MINUTES``): the DAG's ``dagrun_timeout`` follows the
setting, and a run the scheduler stopped at it alerts once, naming the task it was stuck in.
The context is the one Airflow itself builds for a DAG failure callback (the dag processor's
``_execute_dag_callbacks``, from the scheduler's callback request for a timed-out run), and the
alert arrives through SNS in SQS at the moto server."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.0.x (make test-compat)
    from airflow.models.dagbag import DagBag

from recsys import notifiers
from recsys.notifiers import DeadlineAlert
from recsys.settings import Settings
from tests.test_deploy_alerts import alert_messages, subscribe

DAG_ID = "recommender_pipeline"
RUN_ID = "scheduled__2026-11-23T02:00:00+00:00"


def load_dag():
    return DagBag(dag_folder="dags").dags[DAG_ID]


def test_no_deadline_by_default_and_dagrun_timeout_follows_the_setting(monkeypatch):
    dag = load_dag()
    assert dag.dagrun_timeout is None
    assert isinstance(dag.on_failure_callback, DeadlineAlert)
    monkeypatch.setenv("RECSYS_RUN_DEADLINE_MINUTES", "360")
    assert load_dag().dagrun_timeout == timedelta(hours=6)
    monkeypatch.setenv("RECSYS_RUN_DEADLINE_MINUTES", "-5")
    with pytest.raises(ValueError, match="RECSYS_RUN_DEADLINE_MINUTES must be 0 or more, got -5"):
        Settings()


def run_dag_callback(dag, reason: str, stuck: tuple[str, int] | None):
    """What the dag processor does with the scheduler's DagCallbackRequest for this run: builds the
    context (from ``last_ti``, the unfinished task that started last, when Airflow sends one) and
    calls the DAG's on_failure_callback."""
    from airflow.callbacks.callback_requests import DagCallbackRequest
    from airflow.dag_processing import processor

    if "context_from_server" not in DagCallbackRequest.model_fields or not hasattr(processor,
                                                                                 "_execute_dag_callbacks"):
        pytest.skip("this Airflow builds DAG callback contexts another way (deadline_message is tested alone)")
    context = None
    if stuck:
        context = {
            "dag_run": {"dag_id": DAG_ID, "run_id": RUN_ID, "logical_date": "2026-11-23T02:00:00Z",
                        "run_after": "2026-11-23T02:00:00Z", "start_date": "2026-11-23T02:00:05Z",
                        "data_interval_start": "2026-11-22T02:00:00Z", "data_interval_end": "2026-11-23T02:00:00Z",
                        "end_date": "2026-11-23T08:00:06Z", "partition_key": None,
                        "run_type": "scheduled", "state": "failed", "clear_number": 0, "conf": {},
                        "consumed_asset_events": []},
            "last_ti": {"id": str(uuid.uuid4()), "task_id": stuck[0], "map_index": stuck[1], "dag_id": DAG_ID,
                        "run_id": RUN_ID, "try_number": 1, "dag_version_id": str(uuid.uuid4())},
        }
    request = DagCallbackRequest.model_validate({
        "filepath": "recommender_pipeline.py", "bundle_name": "dags-folder", "bundle_version": None,
        "dag_id": DAG_ID, "run_id": RUN_ID,
        "is_failure_callback": True, "msg": reason, "context_from_server": context})

    class Bag:
        dags = {DAG_ID: dag}

        def get_dag(self, dag_id):
            return dag

    import structlog

    processor._execute_dag_callbacks(Bag(), request, structlog.get_logger())


def test_a_run_stopped_at_its_deadline_alerts_once_naming_the_stuck_task(aws, boto, monkeypatch):
    from recsys.compat import DAG_CALLBACK_TI_IS_RELEVANT

    if not DAG_CALLBACK_TI_IS_RELEVANT:
        pytest.skip("before Airflow 3.3 the callback's task is not the stuck one")
    monkeypatch.setenv("RECSYS_RUN_DEADLINE_MINUTES", "360")
    sqs, queue = subscribe(boto, aws["alert_topic"])
    dag = load_dag()
    run_dag_callback(dag, "timed_out", ("score", 1))
    run_dag_callback(dag, "timed_out", ("score", 1))  # a re-sent callback: no second alert
    got = alert_messages(sqs, queue)
    assert len(got) == 1, got
    assert got[0]["Subject"] == "[recsys] recommender_pipeline missed its deadline: stuck in score[1]"
    msg = got[0]["Message"]
    assert msg.startswith(f"Run {RUN_ID} of recommender_pipeline did not finish within its deadline of 360 minutes")
    assert "It was stuck in task score[1] (try 1)." in msg
    assert "/dags/recommender_pipeline/runs/scheduled__2026-11-23T02%3A00%3A00%2B00%3A00" in msg  # Airflow's link


def test_other_run_failures_are_left_to_the_task_alert(aws, boto):
    """A failed task already alerted (FailureAlert); the DAG callback says nothing more."""
    pytest.importorskip("airflow.dag_processing.processor")
    sqs, queue = subscribe(boto, aws["alert_topic"])
    run_dag_callback(load_dag(), "task_failure", ("train", -1))
    assert alert_messages(sqs, queue) == []


def test_without_a_task_in_the_context_the_alert_still_goes_and_says_so():
    """Airflow 3.0's DAG callback context may be only dag, run_id and reason."""
    class Dag:
        dag_id = DAG_ID

    subject, message = notifiers.deadline_message({"dag": Dag(), "run_id": RUN_ID, "reason": "timed_out"},
                                                  Settings(run_deadline_minutes=90))
    assert subject == "[recsys] recommender_pipeline missed its deadline: stuck in an unknown task"
    assert "deadline of 90 minutes" in message and "Airflow did not say which task it was stuck in" in message
