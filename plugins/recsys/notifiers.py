"""Failure alerts (and, optionally, success summaries) through the amazon provider's ``SnsNotifier``.

:class:`FailureAlert` is the DAG's ``on_failure_callback``, a ``BaseNotifier``. It is cheap
to build at parse time (the provider, and boto3 with it, are imported only when an alert is
sent: :mod:`recsys.sns`) and writes one alert per failed run (a second failing task of the same
try of the run finds the first alert's marker in S3 and stays quiet). The message
says what the stage itself said: :mod:`recsys.operators` puts the stage's
``RECSYS-ERROR`` line and its last log lines into the exception.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier  # the Task SDK's since Airflow 3.0

from recsys.layout import RunPlan
from recsys.settings import Settings

log = logging.getLogger(__name__)
ALERT_MARKERS = "runs/alerts"


def sns_notifier(settings: Settings, subject: str, message: str):
    """The provider's ``SnsNotifier`` for the alert topic (:class:`recsys.sns.TopicSnsNotifier`),
    with a plain subject and message."""
    from recsys.sns import TopicSnsNotifier

    return TopicSnsNotifier(aws_conn_id=settings.aws_conn_id, region_name=settings.region,
                            target_arn=settings.alert_topic, subject=subject[:100], message=message)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def run_url(ti: Any, dag_id: str, run_id: str) -> str:
    """The run's page in the UI, from the task log URL Airflow builds (same base URL)."""
    log_url = str(_get(ti, "log_url", "") or "")
    match = re.match(r"(.*?/dags/[^/]+/runs/[^/]+)", log_url)
    if match:
        return match.group(1)
    try:
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback="") or ""
    except Exception:  # noqa: BLE001 - a link is a courtesy
        base = ""
    return f"{base.rstrip('/')}/dags/{dag_id}/runs/{run_id}"


def failure_message(context: dict, versions_page: str | None = None) -> tuple[str, str]:
    """(subject, message) of a failure alert, from the task's context."""
    ti, dag_run = context.get("ti"), context.get("dag_run")
    dag_id = _get(context.get("dag"), "dag_id") or _get(ti, "dag_id", "?")
    task_id = _get(ti, "task_id", "?")
    map_index = _get(ti, "map_index", -1)
    task = f"{task_id}[{map_index}]" if map_index not in (None, -1) else task_id
    run_id = _get(dag_run, "run_id") or context.get("run_id", "?")
    from recsys.compat import LAST_FAILURE
    from recsys.pipeline import run_type_name

    run_type = run_type_name(_get(dag_run, "run_type", "?"))
    plan: RunPlan | dict = {}
    try:
        plan = (ti.xcom_pull(task_ids="plan") if ti is not None and task_id != "plan" else None) or {}
    except Exception:  # noqa: BLE001 - the plan may not exist (plan itself failed)
        plan = {}
    exception = str(context.get("exception") or (LAST_FAILURE[-1] if LAST_FAILURE else None)
                    or context.get("reason") or "unknown error (see the task log)")
    reason, _, rest = exception.partition("\n")
    version = plan.get("model_version", "not planned")
    live = plan.get("live_version") or "none"
    lines = [
        f"Task {task} of {dag_id} failed.",
        f"Reason: {reason}",
        f"Run: {run_id} ({run_type}, logical date {context.get('logical_date') or _get(dag_run, 'logical_date')}), "
        f"try {_get(ti, 'try_number', '?')}.",
        f"Model version of this run: {version}. Live version: {live} (keeps serving: a failed run never "
        "deploys, and retain still keeps the live rows from expiring).",
        f"Run: {run_url(ti, dag_id, run_id)}",
    ]
    if _get(ti, "log_url"):
        lines.append(f"Log: {_get(ti, 'log_url')}")
    if versions_page:
        lines.append(f"Versions page (every version, what served when, why nights failed): {versions_page}")
    if rest.strip():
        lines += ["", rest.strip()]
    return f"[recsys] {dag_id} failed: {task} ({reason[:40]})", "\n".join(lines)


class FailureAlert(BaseNotifier):
    """``on_failure_callback``: one SNS alert per failed run, saying why.

    :param settings: topic, connection and bucket (for the once-per-run marker).
    """

    def __init__(self, settings: Settings | None = None):
        super().__init__()
        self.settings = settings or Settings()

    def marker_key(self, context: dict) -> str:
        dag_run = context.get("dag_run")
        run_id = _get(dag_run, "run_id") or context.get("run_id", "unknown")
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(run_id))
        return f"{ALERT_MARKERS}/{safe}/clear-{_get(dag_run, 'clear_number', 0) or 0}.json"

    def first_for_run(self, context: dict, subject: str) -> bool:
        """Claim this run's alert (S3 marker); True if no other task sent one. If S3 is
        unreachable the alert is sent anyway: a duplicate beats silence."""
        from recsys import pipeline

        try:
            hook = pipeline.s3_hook(self.settings)
            key = self.marker_key(context)
            if hook.check_for_key(key, bucket_name=self.settings.bucket):
                log.info("an alert for this run was already sent (%s): not sending %r", key, subject)
                return False
            hook.load_string(json.dumps({"subject": subject}), key, bucket_name=self.settings.bucket, replace=True)
        except Exception:  # noqa: BLE001
            log.warning("could not check the once-per-run alert marker; sending anyway", exc_info=True)
        return True

    def notify(self, context) -> None:
        from recsys.pipeline import versions_page

        subject, message = failure_message(context, versions_page(self.settings))
        if not self.first_for_run(context, subject):
            return
        sns_notifier(self.settings, subject, message).notify(context)
        log.info("failure alert sent to %s: %s", self.settings.alert_topic, subject)


TIMED_OUT = "timed_out"  # the reason the scheduler gives a run that passed its dagrun_timeout


def stuck_task(context: dict) -> str | None:
    """The task a timed-out run was stuck in, as Airflow hands it to the DAG's failure callback:
    the callback context's task instance (3.3: the unfinished task that started last; by then
    the scheduler has marked every unfinished task skipped). None when the context has none
    or when this Airflow's is not the stuck one (before 3.3: the run's last task by name)."""
    from recsys.compat import DAG_CALLBACK_TI_IS_RELEVANT

    if not DAG_CALLBACK_TI_IS_RELEVANT:  # the run's last task by name: naming it would mislead
        return None
    ti = context.get("ti") or context.get("task_instance")
    task_id = _get(ti, "task_id")
    if not task_id:
        return None
    map_index = _get(ti, "map_index", -1)
    return f"{task_id}[{map_index}]" if map_index not in (None, -1) else str(task_id)


def deadline_message(context: dict, settings: Settings) -> tuple[str, str]:
    """(subject, message) of the alert for a run stopped at its deadline, naming where it was stuck."""
    dag_id = _get(context.get("dag"), "dag_id", "?")
    dag_run = context.get("dag_run")
    run_id = _get(dag_run, "run_id") or context.get("run_id", "?")
    task = stuck_task(context)
    where = (f"It was stuck in task {task} (try {_get(context.get('ti'), 'try_number', '?')})." if task else
             "Airflow did not say which task it was stuck in (before Airflow 3.3 a run's failure callback "
             "gets no task, or not the stuck one): the run's page shows the tasks it marked skipped.")
    lines = [
        f"Run {run_id} of {dag_id} did not finish within its deadline of {settings.run_deadline_minutes} minutes "
        "(RECSYS_RUN_DEADLINE_MINUTES, the DAG's dagrun_timeout): Airflow stopped it and marked its unfinished "
        "tasks skipped.",
        where,
        "Nothing of this run was deployed unless its record_live task had finished; the live version keeps "
        "serving. Find why the task hung (its log, the ECS task or container), then clear the run or trigger a "
        "new one.",
        f"Run: {run_url(context.get('ti'), dag_id, run_id)}",
    ]
    return f"[recsys] {dag_id} missed its deadline: stuck in {task or 'an unknown task'}", "\n".join(lines)


class DeadlineAlert(FailureAlert):
    """The DAG's own ``on_failure_callback`` (run by the dag processor, not a worker): one alert
    when the run passes ``dagrun_timeout``, naming the task it was stuck in. Any other failed
    run is left to the tasks' :class:`FailureAlert` (it already said why). Once per run: the same
    S3 marker as :class:`FailureAlert`, so a re-sent callback stays quiet."""

    def notify(self, context) -> None:
        if context.get("reason") != TIMED_OUT:
            return
        subject, message = deadline_message(context, self.settings)
        if not self.first_for_run(context, subject):
            return
        sns_notifier(self.settings, subject, message).notify(context)
        log.info("deadline alert sent to %s: %s", self.settings.alert_topic, subject)


def deadline_notifier(settings: Settings | None = None) -> DeadlineAlert:
    return DeadlineAlert(settings)


def failure_notifier(settings: Settings | None = None) -> FailureAlert:
    return FailureAlert(settings)


def notify_success(settings: Settings, summary: dict) -> bool:
    """Publish the run summary when ``RECSYS_NOTIFY_SUCCESS`` is set; success is silent otherwise."""
    if not settings.notify_success:
        return False
    subject = f"[recsys] recommender_pipeline succeeded: {summary.get('model_version')}"
    sns_notifier(settings, subject, json.dumps(summary, indent=2, default=str)).notify({})
    return True
