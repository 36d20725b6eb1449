"""Resource names and switches, read from the environment in one place.

Reading ``os.environ`` is cheap and safe at DAG parse time (no network, no DB).
Every ``RECSYS_X`` may also arrive as ``AIRFLOW__ENV__RECSYS_X``: that is how MWAA hands
an environment's "Airflow configuration options" (``env.recsys_x``) to its processes.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from recsys import layout

MWAA_PREFIX = "AIRFLOW__ENV__"


def _get(name: str) -> str:
    return os.environ.get(name) or os.environ.get(MWAA_PREFIX + name) or ""


def _env(name: str, default: str) -> str:
    return _get(name) or default


def _list(name: str) -> list[str]:
    return [x.strip() for x in _get(name).split(",") if x.strip()]


@dataclass(frozen=True)
class Settings:
    bucket: str = field(default_factory=lambda: _env("RECSYS_BUCKET", "recsys"))
    table: str = field(default_factory=lambda: _env("RECSYS_TABLE", layout.DEFAULT_TABLE))
    compute: str = field(default_factory=lambda: _env("RECSYS_COMPUTE", "local"))
    deploy: str = field(default_factory=lambda: _env("RECSYS_DEPLOY", "local"))
    aws_conn_id: str = field(default_factory=lambda: _env("RECSYS_AWS_CONN_ID", "aws_default"))
    region: str = field(default_factory=lambda: _env("AWS_DEFAULT_REGION", "us-east-1"))
    alert_topic: str = field(default_factory=lambda: _env("RECSYS_ALERT_TOPIC", "recsys-alerts"))
    ecs_cluster: str = field(default_factory=lambda: _env("RECSYS_ECS_CLUSTER", "recsys"))
    ecs_service: str = field(default_factory=lambda: _env("RECSYS_ECS_SERVICE", "recsys-serve"))
    ecs_serve_family: str = field(default_factory=lambda: _env("RECSYS_ECS_SERVE_FAMILY", "recsys-serve"))
    ecs_job_task_definition: str = field(default_factory=lambda: _env("RECSYS_ECS_JOB_TASK_DEFINITION", "recsys-jobs"))
    ecs_container: str = field(default_factory=lambda: _env("RECSYS_ECS_CONTAINER", "recsys"))
    ecs_subnets: list[str] = field(default_factory=lambda: _list("RECSYS_ECS_SUBNETS"))
    ecs_security_groups: list[str] = field(default_factory=lambda: _list("RECSYS_ECS_SECURITY_GROUPS"))
    ecs_log_group: str = field(default_factory=lambda: _env("RECSYS_ECS_LOG_GROUP", "/ecs/recsys"))
    ecs_execution_role: str = field(default_factory=lambda: _env("RECSYS_ECS_EXECUTION_ROLE", ""))
    # task roles (what the containers may call): made by `recsys.infra up` from deploy/iam/ when unset
    ecs_jobs_task_role: str = field(default_factory=lambda: _env("RECSYS_ECS_JOBS_TASK_ROLE", ""))
    ecs_serve_task_role: str = field(default_factory=lambda: _env("RECSYS_ECS_SERVE_TASK_ROLE", ""))
    # the serving image's tag: from the bundle's recsys/_bundle.json on managed workers, else the
    # content hash of the sources under project_root; this variable overrides both
    image_tag: str = field(default_factory=lambda: _env("RECSYS_IMAGE_TAG", ""))
    ecr_repository: str = field(default_factory=lambda: _env("RECSYS_ECR_REPOSITORY", "recsys-serve"))
    ecr_jobs_repository: str = field(default_factory=lambda: _env("RECSYS_ECR_JOBS_REPOSITORY", "recsys-jobs"))
    # the jobs task definition's size (Fargate cpu units / MiB): training holds the ratings in memory
    ecs_jobs_cpu: str = field(default_factory=lambda: _env("RECSYS_ECS_JOBS_CPU", "2048"))
    ecs_jobs_memory: str = field(default_factory=lambda: _env("RECSYS_ECS_JOBS_MEMORY", "8192"))
    # where the serving image is pushed: the ECR repository's own registry unless set (a loopback
    # registry in the embedded stack, a mirror); the ECR API answers for the repository either way
    registry: str = field(default_factory=lambda: _env("RECSYS_REGISTRY", ""))
    build_image: bool = field(default_factory=lambda: _env("RECSYS_BUILD_IMAGE", "1") not in ("0", "false", "no"))
    docker_cli: str = field(default_factory=lambda: _env("RECSYS_DOCKER_CLI", "docker"))
    # extra `docker build` flags, shell-split (e.g. "--secret id=pip-ca,src=/etc/ssl/certs/ca.pem")
    docker_build_flags: str = field(default_factory=lambda: _env("RECSYS_DOCKER_BUILD_FLAGS", ""))
    job_image: str = field(default_factory=lambda: _env("RECSYS_JOB_IMAGE", "recsys-jobs:latest"))
    docker_url: str = field(default_factory=lambda: _env("RECSYS_DOCKER_URL", "unix://var/run/docker.sock"))
    docker_network: str = field(default_factory=lambda: _env("RECSYS_DOCKER_NETWORK", "host"))
    serve_container: str = field(default_factory=lambda: _env("RECSYS_SERVE_CONTAINER", "recsys-serve"))
    serve_host: str = field(default_factory=lambda: _env("RECSYS_SERVE_HOST", "127.0.0.1"))
    serve_port: int = field(default_factory=lambda: int(_env("RECSYS_SERVE_PORT", "8080")))
    smoke_url: str = field(default_factory=lambda: _env("RECSYS_SMOKE_URL", ""))
    project_root: str = field(default_factory=lambda: _env(
        "RECSYS_PROJECT_ROOT", str(Path(__file__).resolve().parents[2])))
    state_dir: str = field(default_factory=lambda: _env("RECSYS_STATE_DIR", ""))
    python: str = field(default_factory=lambda: _env("RECSYS_PYTHON", sys.executable))
    retry_delay_seconds: int = field(default_factory=lambda: int(_env("RECSYS_RETRY_DELAY_SECONDS", "120")))
    ttl_days: int = field(default_factory=lambda: int(_env("RECSYS_TTL_DAYS", str(layout.DEFAULT_TTL_DAYS))))
    notify_success: bool = field(default_factory=lambda: _env("RECSYS_NOTIFY_SUCCESS", "").lower()
                                 in ("1", "true", "yes"))
    # Heavy stages (snapshot, train, publish) of all runs together, one at a time by default:
    # a backfill's runs (REST/UI default max_active_runs 10) then train one date after another.
    stage_concurrency: int = field(default_factory=lambda: int(_env("RECSYS_STAGE_CONCURRENCY", "1")))
    # score tasks of all runs together (each one is a container using every core it has)
    score_concurrency: int = field(default_factory=lambda: int(_env("RECSYS_SCORE_CONCURRENCY", "2")))

    def __post_init__(self):
        if self.compute not in ("local", "docker", "ecs"):
            raise ValueError(f"RECSYS_COMPUTE must be local, docker or ecs, got {self.compute!r}")
        if self.deploy not in ("local", "ecs", "docker"):
            raise ValueError(f"RECSYS_DEPLOY must be local, ecs or docker, got {self.deploy!r}")
        if self.compute == "ecs" and not self.ecs_subnets:
            raise ValueError("RECSYS_COMPUTE=ecs needs RECSYS_ECS_SUBNETS: comma-separated subnet ids for the "
                             "stages' Fargate tasks (`python -m recsys.infra up` prints the ones it used)")

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir or Path(self.project_root) / ".state")

    def s3(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *(p.strip("/") for p in parts)])


def get() -> Settings:
    return Settings()
