"""``RECSYS_DEPLOY=ecs``: the service roll, in the amazon provider's idiom (keyword-only
arguments that ``__init__`` only stores, templated fields, the hook from ``aws_conn_id``,
``deferrable`` defaulting to ``[operators] default_deferrable``). The roll itself is
:mod:`recsys.ecs_rollout`, shared with ``python -m recsys.rollback``.
Imported by the DAG only for ECS deploys: it imports the provider (and boto3) at parse time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.configuration import conf
from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.ecs import EcsHook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

from recsys.compat import fail, remember_failure
from recsys.ecs_rollout import RollFailed, RollSuperseded

__all__ = ["EcsRollServiceOperator", "RollFailed", "RollSuperseded"]

ROLLED_KEYS = ("task_definition", "previous", "image")


class EcsRollServiceOperator(AwsBaseOperator[EcsHook]):
    """Roll an ECS service onto a model version: register a revision of its task definition
    (the new image, ``MODEL_VERSION`` and ``RECSYS_TABLE``), update the service, wait until it is
    stable (in the triggerer when ``deferrable``, else on the worker), then **verify** that the
    service's PRIMARY deployment runs the new revision with ``rolloutState`` COMPLETED (and, behind
    a load balancer, healthy targets), smoke-test it when a URL is given, and put the previous
    revision back where ECS has not. A failure quotes what ECS said (see :mod:`recsys.ecs_rollout`).

    Returns ``{"task_definition", "previous", "image"}``: only for a revision that serves.

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
    :param waiter_delay: seconds between steady-state polls (and between verification polls).
    :param waiter_max_attempts: polls before the roll counts as failed (and is rolled back).
    :param settle_attempts: how often the verification asks again while ECS still reports the
        deployment in progress or its targets not yet healthy.
    :param deferrable: wait in the triggerer (:class:`recsys.triggers.EcsServicesStableTrigger`)
        instead of holding a worker slot (default: ``[operators] default_deferrable``).
    """

    aws_hook_class = EcsHook
    template_fields: Sequence[str] = aws_template_fields(
        "cluster", "service", "container_name", "image", "model_version", "table", "smoke_url")

    def __init__(self, *, cluster: str, service: str, container_name: str, image: str, model_version: str,
                 table: str | None = None, smoke_url: str | None = None, smoke_timeout: float = 60.0,
                 waiter_delay: int = 15, waiter_max_attempts: int = 40, settle_attempts: int = 4,
                 deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
                 **kwargs) -> None:
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
        self.settle_attempts = settle_attempts
        self.deferrable = deferrable

    @cached_property
    def elbv2(self):
        """The ELBv2 client of the same connection (target health of the service's load balancer)."""
        return AwsBaseHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify,
                           config=self.botocore_config, client_type="elbv2").conn

    def execute(self, context) -> dict:
        from recsys import ecs_rollout

        if not self.image:
            raise fail(f"no serving image to roll {self.service} onto (build_image returned none)")
        rolled = ecs_rollout.start(self.hook.conn, self.cluster, self.service, self.container_name, self.image,
                                   self.model_version, self.table or None)
        if self.deferrable:
            from recsys.triggers import EcsServicesStableTrigger

            self.defer(trigger=EcsServicesStableTrigger(
                cluster=self.cluster, service=self.service, return_value=rolled, waiter_delay=self.waiter_delay,
                waiter_max_attempts=self.waiter_max_attempts, aws_conn_id=self.aws_conn_id,
                region_name=self.region_name, verify=self.verify, botocore_config=self.botocore_config),
                method_name="execute_complete", kwargs={"rolled": rolled},
                # as the provider does: a dead triggerer cannot hold the task forever; the extra
                # minute lets the trigger report its own give-up first
                timeout=timedelta(seconds=self.waiter_delay * self.waiter_max_attempts + 60))
        error = ecs_rollout.wait_stable(self.hook.conn, self.cluster, self.service, self.waiter_delay,
                                        self.waiter_max_attempts)
        return self._finish(rolled, error)

    def execute_complete(self, context, event: dict[str, Any] | None = None, rolled: dict | None = None) -> dict:
        """Resumed from the trigger: verify (and smoke-test), or roll back.

        ``rolled`` comes from the deferral itself, so even a malformed event rolls back."""
        rolled = rolled or (event or {}).get("value")
        if not isinstance(rolled, dict) or any(k not in rolled for k in ROLLED_KEYS):
            raise fail(f"{self.task_id}: resumed without the roll it started (event {event!r}); check the service "
                       f"{self.service} by hand: `aws ecs describe-services --cluster {self.cluster} "
                       f"--services {self.service}`")
        error: str | None
        if not isinstance(event, dict) or event.get("status") not in ("success", "error"):
            error = f"the trigger sent no valid event ({event!r})"
        else:
            error = None if event["status"] == "success" else str(event.get("message") or "no message")
        return self._finish(rolled, error)

    def _finish(self, rolled: dict, wait_error: str | None) -> dict:
        from recsys import deploy, ecs_rollout

        smoke = deploy.smoke.smoke_check(self.smoke_url or None, self.model_version, self.smoke_timeout)

        try:
            return ecs_rollout.finish(self.hook.conn, self.cluster, self.service, rolled, wait_error=wait_error,
                                      elbv2=self.elbv2, smoke=smoke, settle_attempts=self.settle_attempts,
                                      delay=self.waiter_delay)
        except RollSuperseded as err:
            raise fail(str(err)) from None  # a retry would fight the newer deploy
        except RollFailed as err:
            raise remember_failure(err) from None
