"""ECS task definitions: the jobs revision a run pins, the serving revision a roll registers, and
the blocking roll of ``python -m recsys.rollback`` (:mod:`recsys.ecs_rollout`, shared with the
DAG's operator: register, wait, verify ECS's deployment record, roll back where ECS has not).
"""

from __future__ import annotations

import json
import logging

from recsys.deploy import smoke
from recsys.deploy.image import ImageUnavailable
from recsys.settings import Settings

log = logging.getLogger(__name__)


# Fields of a described task definition that register_task_definition accepts back.
TASKDEF_FIELDS = ("family", "taskRoleArn", "executionRoleArn", "networkMode", "volumes", "placementConstraints",
                  "requiresCompatibilities", "cpu", "memory", "pidMode", "ipcMode", "proxyConfiguration",
                  "inferenceAccelerators", "ephemeralStorage", "runtimePlatform")


def jobs_task_definition(ecs, settings: Settings, image: str) -> str:
    """ARN (``family:revision``) of a jobs task-definition revision running ``image``: the latest
    revision when it already does, else a new revision copying it with only the image changed."""
    family = settings.ecs_job_task_definition
    try:
        current = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
    except ecs.exceptions.ClientException as err:
        raise ImageUnavailable(f"jobs task definition {family} not found ({err}): run `python -m recsys.infra up "
                               "--ecs` (or set RECSYS_ECS_JOB_TASK_DEFINITION)") from None
    if container_image(current, settings.ecs_container) == image:
        return current["taskDefinitionArn"]
    args = revision_args(current, settings.ecs_container, image)
    arn = ecs.register_task_definition(**args)["taskDefinition"]["taskDefinitionArn"]
    log.info("registered jobs task definition %s (image %s)", arn, image)
    return arn


def container_image(taskdef: dict, container: str) -> str:
    """The image of ``container`` in a task definition; ValueError naming the containers it has."""
    for c in taskdef["containerDefinitions"]:
        if c["name"] == container:
            return c["image"]
    names = [c["name"] for c in taskdef["containerDefinitions"]]
    raise ValueError(f"container {container!r} not in task definition {taskdef.get('family')} ({names}); "
                     "set RECSYS_ECS_CONTAINER")


def revision_args(current: dict, container: str, image: str, environment: dict[str, str] | None = None) -> dict:
    """Arguments of register_task_definition: ``current`` with ``container``'s image (and these
    environment variables) changed."""
    container_image(current, container)  # names the containers when it is not there
    args = {k: current[k] for k in TASKDEF_FIELDS if current.get(k)}
    containers = []
    for c in current["containerDefinitions"]:
        c = json.loads(json.dumps(c))  # deep copy
        if c["name"] == container:
            c["image"] = image
            if environment:
                env = [e for e in c.get("environment", []) if e["name"] not in environment]
                c["environment"] = [*env, *({"name": k, "value": v} for k, v in environment.items())]
        containers.append(c)
    args["containerDefinitions"] = containers
    return args


def new_task_definition(current: dict, container: str, image: str, model_version: str,
                        table: str | None = None) -> dict:
    """Arguments of register_task_definition: ``current`` with a new image and MODEL_VERSION
    (and RECSYS_TABLE when given: the table the version's rows are in)."""
    return revision_args(current, container, image,
                         {"MODEL_VERSION": model_version, **({"RECSYS_TABLE": table} if table else {})})


def register_revision(ecs, cluster: str, service: str, container: str, image: str, model_version: str,
                      table: str | None = None) -> tuple[str, str]:
    """Register a revision of the service's task definition with the new image and
    MODEL_VERSION and point the service at it. Returns (new revision, the one it replaced)."""
    described = ecs.describe_services(cluster=cluster, services=[service])["services"][0]
    previous = described["taskDefinition"]
    current = ecs.describe_task_definition(taskDefinition=previous)["taskDefinition"]
    registered = ecs.register_task_definition(**new_task_definition(current, container, image, model_version, table))
    new_arn = registered["taskDefinition"]["taskDefinitionArn"]
    log.info("registered %s (image %s, MODEL_VERSION=%s); rolling %s", new_arn, image, model_version, service)
    ecs.update_service(cluster=cluster, service=service, taskDefinition=new_arn)
    return new_arn, previous


def restore_revision(ecs, cluster: str, service: str, previous: str, failed: str) -> None:
    """Point the service back at ``previous`` (the rollback of :func:`register_revision`)."""
    log.error("deployment of %s failed; rolling %s back to %s", failed, service, previous)
    ecs.update_service(cluster=cluster, service=service, taskDefinition=previous)


def deploy_ecs(ecs, settings: Settings, image: str, model_version: str, *, table: str | None = None,
               wait_delay: int = 15, wait_attempts: int = 40, elbv2=None) -> dict:
    """The blocking roll of ``python -m recsys.rollback``: :func:`recsys.ecs_rollout.roll`, the same
    register, wait, verify and roll back as the DAG's
    :class:`recsys.operators.ecs_roll.EcsRollServiceOperator`."""
    from recsys import ecs_rollout

    return ecs_rollout.roll(ecs, settings.ecs_cluster, settings.ecs_service, settings.ecs_container, image,
                            model_version, table=table, elbv2=elbv2,
                            smoke=smoke.smoke_check(settings.smoke_url or None, model_version),
                            delay=wait_delay, attempts=wait_attempts)
