"""``RECSYS_COMPUTE=ecs``: the stage as a Fargate task, through the amazon provider."""

from __future__ import annotations

from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator

from recsys.layout import EXIT_NO_RETRY
from recsys.operators import TAIL_LINES, stage_failure


def stop_story(task: dict) -> str | None:
    """What ECS says stopped a task that did not finish its work, in words the alert can quote;
    None for an ordinary exit (the exit code and the logs tell that)."""
    code, reason = task.get("stopCode", ""), task.get("stoppedReason", "no reason given")
    containers = task.get("containers", [])
    if code == "TaskFailedToStart":  # no container ever ran: there is no exit code and no log
        return f"the ECS task never started ({code}): {reason}"
    if code == "SpotInterruption":
        return f"Fargate Spot reclaimed the task ({code}: {reason}); a retry runs it again"
    oom = [c for c in containers if str(c.get("reason", "")).startswith("OutOfMemoryError")]
    if oom:
        return (f"container {oom[0].get('name')} was killed for memory ({oom[0]['reason']}, exit code "
                f"{oom[0].get('exitCode', 'none')}): raise RECSYS_ECS_JOBS_MEMORY and run `recsys.infra up`")
    return None


class RecsysEcsRunTaskOperator(EcsRunTaskOperator):
    """``EcsRunTaskOperator`` that fails without retries when the stage container exits
    with code 3, quoting the stage's last CloudWatch log lines; a task that never started, was
    killed for memory or reclaimed by Spot fails with ECS's own reason (the alert quotes it).
    Clearing or marking the task failed stops the ECS task (the provider's ``on_kill``).

    :param overrides: container overrides carrying the stage argv.
    """

    def _check_success_task(self) -> None:
        if self.client and self.arn:
            response = self.client.describe_tasks(cluster=self.cluster, tasks=[self.arn])
            for task in response.get("tasks", []):
                story = stop_story(task)
                if story:
                    from airflow.exceptions import AirflowException

                    from recsys.compat import remember_failure

                    # retried (the task's retries): capacity, a pull, Spot and memory pressure can pass
                    raise remember_failure(AirflowException(f"stage {self.task_id}: {story}"))
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
