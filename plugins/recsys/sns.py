"""The amazon provider's ``SnsNotifier`` for the alert topic. Imported only when an alert is sent:
the provider imports boto3, which a DAG file's parse must not load."""

from __future__ import annotations

from airflow.providers.amazon.aws.notifications.sns import SnsNotifier


class TopicSnsNotifier(SnsNotifier):
    """``SnsNotifier`` whose target may be a topic *name*: the ARN is resolved when the alert is
    sent (``CreateTopic`` is idempotent), so DAG files need no account id."""

    def notify(self, context):
        if not self.target_arn.startswith("arn:"):
            self.target_arn = self.hook.get_conn().create_topic(Name=self.target_arn)["TopicArn"]
        super().notify(context)
