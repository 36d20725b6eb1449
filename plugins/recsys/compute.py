"""One container command, three ways to run it (``RECSYS_COMPUTE``).

Every stage is an argv such as ``["python", "-m", "tasks.train", "--ratings", URI, ...]``:

- ``local``  -> ``BashOperator`` running it as a subprocess in the project root;
- ``docker`` -> ``DockerOperator`` running it in ``RECSYS_JOB_IMAGE``;
- ``ecs``    -> ``EcsRunTaskOperator`` running it on Fargate as a container override
  of the jobs task-definition revision the run's ``plan`` task pinned (one image digest for
  every stage of a run: :func:`recsys.deploy.ecs.jobs_task_definition`), logs fetched from CloudWatch.

Arguments may hold Jinja (rendered by each operator's templated field). For a
mapped stage, :func:`mapped_values` turns literal argvs into what the backend's
mapped field expects, and :func:`compute_mapped` expands over them.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from recsys import stages
from recsys.settings import Settings


def to_bash(argv: Sequence[str], settings: Settings) -> str:
    """argv -> a shell line; ``python`` becomes this worker's interpreter."""
    argv = [settings.python if n == 0 and a == "python" else a for n, a in enumerate(argv)]
    return "exec " + shlex.join(argv)


def to_overrides(argv: Sequence[str], settings: Settings) -> dict:
    return {"containerOverrides": [{"name": settings.ecs_container, "command": list(argv)}]}


def field_value(argv: Sequence[str], settings: Settings):
    """argv -> the value of the backend operator's command field."""
    argv = stages.with_settings(argv, settings)
    if settings.compute == "local":
        return to_bash(argv, settings)
    if settings.compute == "ecs":
        return to_overrides(argv, settings)
    return list(argv)


def mapped_values(argvs: Sequence[Sequence[str]], settings: Settings | None = None) -> list:
    """Literal argvs -> the values of the backend's mapped field (run inside a task)."""
    settings = settings or Settings()
    return [field_value(a, settings) for a in argvs]


def _common(settings: Settings, stage: str, plan_task: str = "plan") -> tuple[Any, dict]:
    """Operator class and its fixed arguments for the configured backend."""
    # Imported here: only the configured backend's provider is needed (and parsed).
    if settings.compute == "local":
        from recsys.operators.local_stage import LocalStageOperator

        return LocalStageOperator, {"cwd": settings.project_root, "append_env": True,
                                    "env": {"PYTHONPATH": settings.project_root, "PYTHONUNBUFFERED": "1"}}
    if settings.compute == "docker":
        from recsys.operators.docker_stage import RecsysDockerOperator

        return RecsysDockerOperator, {"image": settings.job_image, "docker_url": settings.docker_url,
                                      "network_mode": settings.docker_network, "auto_remove": "success",
                                      "mount_tmp_dir": False, "tty": False}
    network = {"awsvpcConfiguration": {"subnets": settings.ecs_subnets,
                                       "securityGroups": settings.ecs_security_groups,
                                       "assignPublicIp": "DISABLED"}} if settings.ecs_subnets else None
    from recsys.operators.ecs_stage import RecsysEcsRunTaskOperator

    return RecsysEcsRunTaskOperator, {
        "aws_conn_id": settings.aws_conn_id, "region_name": settings.region,
        "cluster": settings.ecs_cluster, "task_definition": jobs_task_definition(settings, plan_task),
        **capacity(settings), "network_configuration": network, "container_name": settings.ecs_container,
        "awslogs_group": settings.ecs_log_group, "awslogs_region": settings.region,
        "awslogs_stream_prefix": f"jobs/{settings.ecs_container}", "reattach": True,
        # deferrable: the provider's default, Airflow's [operators] default_deferrable
        "propagate_tags": "TASK_DEFINITION",
        "tags": {"recsys:stage": stage},
    }


def jobs_task_definition(settings: Settings, plan_task: str = "plan") -> str:
    """The ECS stages' ``task_definition`` (templated): the jobs revision (family:revision, the jobs
    image by digest) that the run's ``plan_task`` (``plan`` in the pipeline, ``check`` in
    ``recommender_rollback``) pinned once, so every stage runs it whatever is pushed meanwhile. The
    family's latest revision only for a stage that runs although that task failed (the pipeline's
    ``all_done`` ``versions`` page): it renders instead of failing on a missing XCom."""
    return (f'{{{{ (ti.xcom_pull(task_ids="{plan_task}") or {{}}).get("jobs_task_definition") '
            f'or "{settings.ecs_job_task_definition}" }}}}')


def capacity(settings: Settings) -> dict:
    """Where a stage task runs: ``launchType`` FARGATE (on-demand), or with
    ``RECSYS_ECS_CAPACITY=fargate-spot`` a FARGATE_SPOT capacity-provider strategy and no launch
    type (RunTask refuses both together: "Specifying both a launch type and capacity provider
    strategy is not supported"). The cluster needs the provider: ``recsys.infra up`` adds it."""
    if settings.ecs_capacity == "fargate-spot":
        return {"launch_type": None, "capacity_provider_strategy": [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]}
    return {"launch_type": "FARGATE", "capacity_provider_strategy": None}


_FIELD = {"local": "bash_command", "docker": "command", "ecs": "overrides"}


def compute_task(task_id: str, argv: Sequence[str], settings: Settings | None = None,
                 execution_timeout: timedelta | None = timedelta(hours=4), plan_task: str = "plan", **kwargs):
    """An operator that runs ``argv`` on the configured backend (on ECS, the jobs revision that
    ``plan_task``'s XCom pinned)."""
    settings = settings or Settings()
    cls, common = _common(settings, task_id, plan_task)
    return cls(task_id=task_id, execution_timeout=execution_timeout, **{**common, **kwargs},
               **{_FIELD[settings.compute]: field_value(argv, settings)})


def compute_mapped(task_id: str, values, settings: Settings | None = None,
                   execution_timeout: timedelta | None = timedelta(hours=4), **kwargs):
    """A mapped operator: one task instance per element of ``values`` (see :func:`mapped_values`)."""
    settings = settings or Settings()
    cls, common = _common(settings, task_id)
    return cls.partial(task_id=task_id, execution_timeout=execution_timeout, **{**common, **kwargs}).expand(
        **{_FIELD[settings.compute]: values})
