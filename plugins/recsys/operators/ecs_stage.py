"""``RECSYS_COMPUTE=ecs``: the stage as a Fargate task, through the amazon provider."""

from __future__ import annotations

from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator

from recsys.operators import EXIT_NO_RETRY, TAIL_LINES, stage_failure


class RecsysEcsRunTaskOperator(EcsRunTaskOperator):
    """``EcsRunTaskOperator`` that fails without retries when the stage container exits
    with code 3, quoting the stage's last CloudWatch log lines.

    :param overrides: container overrides carrying the stage argv.
    """

    def _check_success_task(self) -> None:
        if self.client and self.arn:
            response = self.client.describe_tasks(cluster=self.cluster, tasks=[self.arn])
            for task in response.get("tasks", []):
                for container in task.get("containers", []):
                    if container.get("lastStatus") == "STOPPED" and container.get("exitCode") == EXIT_NO_RETRY:
                        lines: list[str] = []
                        fetcher = getattr(self, "task_log_fetcher", None)
                        if fetcher is None and self._aws_logs_enabled():
                            fetcher = self._get_task_log_fetcher()
                        if fetcher is not None:
                            try:
                                lines = list(fetcher.get_last_log_messages(TAIL_LINES))
                            except Exception as err:  # the logs are a courtesy: the exit code decides
                                lines = [f"(CloudWatch logs unavailable: {err})"]
                        raise stage_failure(self.task_id, EXIT_NO_RETRY, lines)
        super()._check_success_task()
