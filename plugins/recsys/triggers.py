"""Triggers of the Airflow side, on the amazon provider's waiter-trigger base."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.amazon.aws.hooks.ecs import EcsHook
from airflow.providers.amazon.aws.triggers.base import AwsBaseWaiterTrigger
from airflow.triggers.base import TriggerEvent


class EcsServicesStableTrigger(AwsBaseWaiterTrigger):
    """Waits in the triggerer until an ECS service reaches a steady state (boto's
    ``services_stable`` waiter: one deployment, running count = desired count).

    Emits ``{"status": "success", "value": return_value}`` or, when the waiter fails or
    runs out of attempts, ``{"status": "error", "message": ..., "value": return_value}``.

    :param cluster: the cluster's name or ARN.
    :param service: the service's name or ARN.
    :param return_value: handed back with the event (what the deferring operator needs to
        finish or roll back).
    :param waiter_delay: seconds between polls.
    :param waiter_max_attempts: polls before giving up.
    :param aws_conn_id: the Airflow connection used for AWS credentials.
    :param region_name: the AWS region of the service.
    :param verify: whether to verify SSL certificates.
    :param botocore_config: botocore client configuration (key-values).
    """

    def __init__(self, *, cluster: str, service: str, return_value: Any = None, waiter_delay: int = 15,
                 waiter_max_attempts: int = 40, aws_conn_id: str | None = "aws_default",
                 region_name: str | None = None, verify: bool | str | None = None,
                 botocore_config: dict | None = None) -> None:
        super().__init__(
            serialized_fields={"cluster": cluster, "service": service, "return_value": return_value},
            waiter_name="services_stable",
            waiter_args={"cluster": cluster, "services": [service]},
            failure_message=f"ECS service {service} did not become stable",
            status_message=f"ECS service {service} deployments",
            status_queries=["services[].deployments[].{status: rolloutState, running: runningCount, "
                            "desired: desiredCount}"],
            return_value=return_value,
            waiter_delay=waiter_delay,
            waiter_max_attempts=waiter_max_attempts,
            aws_conn_id=aws_conn_id,
            region_name=region_name,
            verify=verify,
            botocore_config=botocore_config,
        )

    def hook(self) -> EcsHook:
        # defined (not only aws_hook_class) for amazon providers before 9.30, where hook() is abstract
        return EcsHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify,
                       config=self.botocore_config)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Amazon providers before 9.30 let the waiter's failure escape run() (the task then
        # fails in the triggerer and execute_complete, which rolls back, never runs): every
        # failure becomes an error event here, on every provider version.
        try:
            async for event in super().run():
                yield event
        except Exception as err:
            yield TriggerEvent({"status": "error", "message": str(err), self.return_key: self.return_value})
