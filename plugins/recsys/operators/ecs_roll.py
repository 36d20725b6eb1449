"""``RECSYS_DEPLOY=ecs``: the service roll, in the amazon provider's idiom (keyword-only
arguments that ``__init__`` only stores, templated fields, the hook from ``aws_conn_id``).
Imported by the DAG only for ECS deploys: it imports the provider (and boto3) at parse time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.amazon.aws.hooks.ecs import EcsHook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from recsys.compat import fail


class RollFailed(RuntimeError):
    """The new revision did not become stable or serve the version; the previous one is back."""


class EcsRollServiceOperator(AwsBaseOperator[EcsHook]):
    """Roll an ECS service onto a model version: register a revision of its task definition
    (the new image, ``MODEL_VERSION`` and ``RECSYS_TABLE``), update the service, wait until it is
    stable (in the triggerer when ``deferrable``, else on the worker), smoke-test it when a URL
    is given, and put the previous revision back if any of that fails.

    Returns ``{"task_definition", "previous", "image"}``.

    :param cluster: the ECS cluster's name or ARN. (templated)
    :param service: the ECS service's name. (templated)
    :param container_name: the container of the task definition that serves. (templated)
    :param image: the serving image reference to run. (templated)
    :param model_version: the version to serve (``MODEL_VERSION``). (templated)
    :param table: the DynamoDB table its rows are in (``RECSYS_TABLE``), or None to keep the
        task definition's. (templated)
    :param smoke_url: base URL whose ``/readyz`` must report ``model_version`` once the service is
        stable, or None to skip the smoke test. (templated)
    :param smoke_timeout: seconds the smoke test keeps trying.
    :param waiter_delay: seconds between steady-state polls.
    :param waiter_max_attempts: polls before the roll counts as failed (and is rolled back).
    :param deferrable: wait in the triggerer (:class:`recsys.triggers.EcsServicesStableTrigger`)
        instead of holding a worker slot.
    """

    aws_hook_class = EcsHook
    template_fields: Sequence[str] = aws_template_fields(
        "cluster", "service", "container_name", "image", "model_version", "table", "smoke_url")

    def __init__(self, *, cluster: str, service: str, container_name: str, image: str, model_version: str,
                 table: str | None = None, smoke_url: str | None = None, smoke_timeout: float = 60.0,
                 waiter_delay: int = 15,
                 waiter_max_attempts: int = 40, deferrable: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cluster = cluster
        self.service = service
        self.container_name = container_name
        self.image = image
        self.model_version = model_version
        self.table = table
        self.smoke_url = smoke_url
        self.smoke_timeout = smoke_timeout
        self.waiter_delay = waiter_delay
        self.waiter_max_attempts = waiter_max_attempts
        self.deferrable = deferrable

    def execute(self, context) -> dict:
        from recsys import deploy

        if not self.image:
            raise fail(f"no serving image to roll {self.service} onto (build_image returned none)")
        new_arn, previous = deploy.register_revision(self.hook.conn, self.cluster, self.service,
                                                     self.container_name, self.image, self.model_version,
                                                     self.table or None)
        rolled = {"task_definition": new_arn, "previous": previous, "image": self.image}
        if self.deferrable:
            from recsys.triggers import EcsServicesStableTrigger

            self.defer(trigger=EcsServicesStableTrigger(
                cluster=self.cluster, service=self.service, return_value=rolled, waiter_delay=self.waiter_delay,
                waiter_max_attempts=self.waiter_max_attempts, aws_conn_id=self.aws_conn_id,
                region_name=self.region_name, verify=self.verify, botocore_config=self.botocore_config),
                method_name="execute_complete")
        try:
            self.hook.conn.get_waiter("services_stable").wait(
                cluster=self.cluster, services=[self.service],
                WaiterConfig={"Delay": self.waiter_delay, "MaxAttempts": self.waiter_max_attempts})
        except Exception as err:  # a retry may succeed (capacity, a slow pull): not fail()
            self._roll_back(rolled)
            raise RollFailed(f"ECS service {self.service} did not become stable on {new_arn}: {err}; "
                             f"rolled back to {previous}") from None
        return self._finish(rolled)

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> dict:
        """Resumed from the trigger: finish (smoke test) or roll back."""
        event = event or {}
        rolled = event.get("value") or {}
        if event.get("status") != "success":
            self._roll_back(rolled)
            raise RollFailed(f"ECS service {self.service} did not become stable on {rolled.get('task_definition')}: "
                             f"{event.get('message', 'no event')}; rolled back to {rolled.get('previous')}")
        return self._finish(rolled)

    def _finish(self, rolled: dict) -> dict:
        from recsys import deploy

        if self.smoke_url:
            try:
                deploy.smoke_test(self.smoke_url, self.model_version, timeout=self.smoke_timeout)
            except Exception as err:
                self._roll_back(rolled)
                raise RollFailed(f"{self.smoke_url} did not serve {self.model_version}: {err}; "
                                 f"rolled back to {rolled['previous']}") from None
        self.log.info("%s serves %s (%s)", self.service, self.model_version, rolled["task_definition"])
        return rolled

    def _roll_back(self, rolled: dict) -> None:
        from recsys import deploy

        if rolled.get("previous"):
            deploy.restore_revision(self.hook.conn, self.cluster, self.service, rolled["previous"],
                                    rolled.get("task_definition", "the new revision"))
