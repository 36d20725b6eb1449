"""Failure alerts through the amazon provider's ``SnsNotifier``."""

from __future__ import annotations

from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

from recsys.settings import Settings

FAILURE_SUBJECT = "[recsys] {{ dag.dag_id }} failed: {{ ti.task_id }}"
FAILURE_MESSAGE = """\
Task {{ ti.task_id }} of {{ dag.dag_id }} failed.
Run: {{ run_id }} (logical date {{ logical_date }}), try {{ ti.try_number }}.
Error: {{ exception }}
Log: {{ ti.log_url }}
The live model keeps serving; nothing after this task ran."""


class TopicSnsNotifier(SnsNotifier):
    """``SnsNotifier`` whose target may be a topic *name*: the ARN is resolved when
    the alert is sent (``CreateTopic`` is idempotent and returns the existing ARN),
    so DAG files need no account id."""

    def notify(self, context):
        if not self.target_arn.startswith("arn:"):
            self.target_arn = self.hook.get_conn().create_topic(Name=self.target_arn)["TopicArn"]
        super().notify(context)


def failure_notifier(settings: Settings | None = None) -> TopicSnsNotifier:
    settings = settings or Settings()
    return TopicSnsNotifier(aws_conn_id=settings.aws_conn_id, region_name=settings.region,
                            target_arn=settings.alert_topic, subject=FAILURE_SUBJECT, message=FAILURE_MESSAGE)
