"""Resource names and switches of the Airflow side: one typed object, read from the
environment in one place (a pydantic model, as the serving app's ``tasks/serve/config.py``; the
environment is read by :meth:`Settings.__init__` rather than pydantic-settings, which is not in
MWAA's preinstalled set while pydantic is: the Airflow side adds no package to the workers).

- Every value is parsed and checked when the object is made (at DAG parse time): a misspelt
  choice (``RECSYS_COMPUTE=lamda``), a non-number, a non-boolean fails then, naming the variable.
- Booleans are parsed one way: ``1/true/yes/on`` or ``0/false/no/off`` (any case), nothing else.
- Every ``RECSYS_X`` may also arrive as ``AIRFLOW__ENV__RECSYS_X``: that is how MWAA hands an
  environment's "Airflow configuration options" (``env.recsys_x``) to its processes.
- ``RECSYS_REGION`` names the AWS region; without it ``AWS_DEFAULT_REGION`` (or ``AWS_REGION``),
  then ``us-east-1``. (MWAA protects ``AWS_DEFAULT_REGION``; Composer does not set it.)
- An empty variable counts as unset.

Reading the environment is cheap and safe at DAG parse time (no network, no DB). The table of
every setting in docs/configuration.md is rendered from this class (``python -m recsys.settings``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recsys import layout

MWAA_PREFIX = "AIRFLOW__ENV__"
PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


def env(name: str, *fallbacks: str) -> AliasChoices:
    """The variable ``name``, its MWAA form, then ``fallbacks`` (first one set wins)."""
    return AliasChoices(name, MWAA_PREFIX + name, *fallbacks)


def _setting(default: Any, name: str, doc: str, *fallbacks: str) -> Any:
    return Field(default, validation_alias=env(name, *fallbacks), description=doc)


Csv = list[str]  # from the environment: "a, b" -> ["a", "b"]


class Settings(BaseModel):
    """Every setting; keyword arguments (by field name) win over the environment."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    def __init__(self, **values: Any) -> None:
        for name, info in type(self).model_fields.items():
            if name in values or not isinstance(info.validation_alias, AliasChoices):
                continue
            for variable_name in info.validation_alias.choices:  # the first one set (not empty) wins
                raw = os.environ.get(str(variable_name))
                if raw:
                    values[name] = raw
                    break
        if "region" not in values and os.environ.get("COMPOSER_ENVIRONMENT"):
            # Cloud Composer's workers have no AWS region: us-east-1 would be a silent guess
            raise ValueError(
                f"bad setting: RECSYS_REGION is unset on Cloud Composer (environment "
                f"{os.environ['COMPOSER_ENVIRONMENT']}), whose workers have no AWS_DEFAULT_REGION: every AWS call "
                "would go to us-east-1. Bake it into the bundle (RECSYS_REGION=<region> make bundle) or set it "
                "as an environment variable of the Composer environment (docs/managed.md)")
        try:
            super().__init__(**values)
        except ValidationError as err:  # name the variable, not the field
            fields = type(self).model_fields
            raise ValueError("bad setting: " + "; ".join(
                (f"{variable(str(e['loc'][0]))}={e.get('input')!r}: " if e["loc"] and e["loc"][0] in fields else "")
                + e["msg"].removeprefix("Value error, ") for e in err.errors())) from None

    bucket: str = _setting("recsys", "RECSYS_BUCKET", "S3 bucket of snapshots, models, run records, `_live.json`")
    table: str = _setting(layout.DEFAULT_TABLE, "RECSYS_TABLE", "DynamoDB table of the recommendations")
    compute: Literal["local", "docker", "ecs"] = _setting(
        "local", "RECSYS_COMPUTE", "where container stages run: `local`, `docker` or `ecs`")
    deploy: Literal["local", "docker", "ecs"] = _setting(
        "local", "RECSYS_DEPLOY", "what `deploy` rolls: `local`, `docker` or `ecs`")
    aws_conn_id: str = _setting("aws_default", "RECSYS_AWS_CONN_ID", "Airflow connection of every AWS call")
    region: str = _setting("us-east-1", "RECSYS_REGION",
                           "AWS region of every resource (unset: `AWS_DEFAULT_REGION`, `AWS_REGION`, us-east-1)",
                           "AWS_DEFAULT_REGION", "AWS_REGION")
    alert_topic: str = _setting("recsys-alerts", "RECSYS_ALERT_TOPIC", "SNS topic of failure alerts")
    ecs_cluster: str = _setting("recsys", "RECSYS_ECS_CLUSTER", "ECS cluster of the service and the stages")
    ecs_service: str = _setting("recsys-serve", "RECSYS_ECS_SERVICE", "ECS service that serves")
    ecs_serve_family: str = _setting("recsys-serve", "RECSYS_ECS_SERVE_FAMILY",
                                     "task-definition family of the service")
    ecs_job_task_definition: str = _setting("recsys-jobs", "RECSYS_ECS_JOB_TASK_DEFINITION",
                                            "task definition the stages run on")
    ecs_container: str = _setting("recsys", "RECSYS_ECS_CONTAINER", "container name in both task definitions")
    ecs_subnets: Csv = _setting([], "RECSYS_ECS_SUBNETS", "comma-separated subnets of the Fargate tasks "
                                "(required with `RECSYS_COMPUTE=ecs`)")
    ecs_security_groups: Csv = _setting([], "RECSYS_ECS_SECURITY_GROUPS",
                                        "comma-separated security groups of the Fargate tasks")
    ecs_capacity: Literal["fargate", "fargate-spot"] = _setting(
        "fargate", "RECSYS_ECS_CAPACITY", "capacity of the stage tasks: `fargate` (on-demand) or `fargate-spot` "
        "(a FARGATE_SPOT capacity-provider strategy; an interrupted stage is retried)")
    ecs_log_group: str = _setting("/ecs/recsys", "RECSYS_ECS_LOG_GROUP", "CloudWatch log group of the tasks")
    alb_name: str = _setting("recsys-serve", "RECSYS_ALB_NAME", "load balancer, target group and security-group "
                             "name prefix `infra up` makes or adopts in front of the service")
    alb_scheme: Literal["internet-facing", "internal"] = _setting(
        "internet-facing", "RECSYS_ALB_SCHEME", "the load balancer's scheme: `internet-facing` or `internal`")
    alb_certificate_arn: str = _setting("", "RECSYS_ALB_CERTIFICATE_ARN", "ACM certificate of an HTTPS listener "
                                        "on 443 (unset: HTTP on 80)")
    alb_subnets: Csv = _setting([], "RECSYS_ALB_SUBNETS", "comma-separated subnets of the load balancer, two "
                                "zones at least (unset: the tasks')")
    ecs_execution_role: str = _setting("", "RECSYS_ECS_EXECUTION_ROLE",
                                       "your task execution role ARN (unset: `infra up` makes one)")
    ecs_jobs_task_role: str = _setting("", "RECSYS_ECS_JOBS_TASK_ROLE",
                                       "your stages' task role ARN (unset: `infra up` makes one)")
    ecs_serve_task_role: str = _setting("", "RECSYS_ECS_SERVE_TASK_ROLE",
                                        "your service's task role ARN (unset: `infra up` makes one)")
    image_tag: str = _setting("", "RECSYS_IMAGE_TAG", "serving image tag to deploy (unset: the bundle's, "
                              "else the sources' content hash)")
    ecr_repository: str = _setting("recsys-serve", "RECSYS_ECR_REPOSITORY", "ECR repository of the serving image")
    ecr_jobs_repository: str = _setting("recsys-jobs", "RECSYS_ECR_JOBS_REPOSITORY",
                                        "ECR repository of the jobs image")
    # training holds the ratings in memory
    ecs_jobs_cpu: str = _setting("2048", "RECSYS_ECS_JOBS_CPU", "Fargate cpu units of a stage task")
    ecs_jobs_memory: str = _setting("8192", "RECSYS_ECS_JOBS_MEMORY", "Fargate memory (MiB) of a stage task")
    registry: str = _setting("", "RECSYS_REGISTRY", "registry the serving image is pushed to (unset: the ECR "
                             "repository's own)")
    registry_credentials: str = _setting("", "RECSYS_REGISTRY_CREDENTIALS", "file holding `user:password` of "
                                         "`RECSYS_REGISTRY` (the compose stack's registry; unset: ECR's "
                                         "authorization token)")
    build_image: bool = _setting(True, "RECSYS_BUILD_IMAGE", "build and push a missing serving image here")
    docker_cli: str = _setting("docker", "RECSYS_DOCKER_CLI", "docker client used for builds")
    docker_build_flags: str = _setting("", "RECSYS_DOCKER_BUILD_FLAGS", "extra `docker build` flags, shell-split")
    job_image: str = _setting("recsys-jobs:latest", "RECSYS_JOB_IMAGE", "image of the stages with "
                              "`RECSYS_COMPUTE=docker`")
    docker_url: str = _setting("unix://var/run/docker.sock", "RECSYS_DOCKER_URL", "Docker engine of the "
                               "docker backend")
    docker_network: str = _setting("host", "RECSYS_DOCKER_NETWORK", "network of stage and serving containers "
                               "(serving: unless `RECSYS_SERVE_NETWORK` is set)")
    serve_network: str = _setting("", "RECSYS_SERVE_NETWORK", "network of the serving container (unset: "
                                  "`RECSYS_DOCKER_NETWORK`)")
    serve_container: str = _setting("recsys-serve", "RECSYS_SERVE_CONTAINER", "serving container's name "
                                    "(`RECSYS_DEPLOY=docker`)")
    serve_host: str = _setting("127.0.0.1", "RECSYS_SERVE_HOST", "address the local/docker serving app listens on")
    serve_port: int = _setting(8080, "RECSYS_SERVE_PORT", "port of the serving app")
    smoke_url: str = _setting("", "RECSYS_SMOKE_URL", "base URL the deploy smoke-tests (`/readyz` must report "
                              "the new version; unset on ECS: the load balancer's endpoint)")
    project_root: str = _setting(PROJECT_ROOT, "RECSYS_PROJECT_ROOT", "checkout the local stages run in")
    state_dir: str = _setting("", "RECSYS_STATE_DIR", "local serving app's pid/log directory (unset: "
                              "`<project root>/.state`)")
    python: str = _setting(sys.executable, "RECSYS_PYTHON", "interpreter of local stages and the local app")
    retry_delay_seconds: int = _setting(120, "RECSYS_RETRY_DELAY_SECONDS", "delay between task retries")
    ttl_days: int = _setting(layout.DEFAULT_TTL_DAYS, "RECSYS_TTL_DAYS", "days a version's rows live (stage "
                             "flag `--ttl-days`)")
    min_ratings: int = _setting(1, "RECSYS_MIN_RATINGS", "users with fewer ratings get no personal row (stage flag "
                                "`--min-ratings`)")
    threads: int = _setting(0, "RECSYS_THREADS", "threads of `train`/`score`, 0 = every core (stage flag "
                            "`--threads`)")
    run_deadline_minutes: int = _setting(0, "RECSYS_RUN_DEADLINE_MINUTES", "a run still unfinished this many "
                                         "minutes after it started is stopped and alerts once, naming the task "
                                         "it is stuck in (the DAG's `dagrun_timeout`; 0 = no deadline)")
    notify_success: bool = _setting(False, "RECSYS_NOTIFY_SUCCESS", "also notify each successful run")
    # Heavy stages (snapshot, train, publish) of all runs together, one at a time by default:
    # a backfill's runs (REST/UI default max_active_runs 10) then train one date after another.
    stage_concurrency: int = _setting(1, "RECSYS_STAGE_CONCURRENCY", "heavy stages of all runs at once")
    score_concurrency: int = _setting(2, "RECSYS_SCORE_CONCURRENCY", "score tasks of all runs at once")

    @field_validator("ecs_subnets", "ecs_security_groups", "alb_subnets", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return [x.strip() for x in value.split(",") if x.strip()] if isinstance(value, str) else value

    @field_validator("compute", "deploy", mode="before")
    @classmethod
    def _choice(cls, value: Any, info) -> Any:
        choices = ("local", "docker", "ecs")
        if value not in choices:
            raise ValueError(f"{variable(info.field_name)} must be local, docker or ecs, got {value!r}")
        return value

    @field_validator("ecs_capacity", mode="before")
    @classmethod
    def _capacity(cls, value: Any) -> Any:
        if value not in ("fargate", "fargate-spot"):
            raise ValueError(f"RECSYS_ECS_CAPACITY must be fargate or fargate-spot, got {value!r}")
        return value

    @field_validator("ttl_days", "retry_delay_seconds", "stage_concurrency", "score_concurrency", "serve_port")
    @classmethod
    def _positive(cls, value: int, info) -> int:
        if value < 1:
            raise ValueError(f"{variable(info.field_name)} must be at least 1, got {value}")
        return value

    @field_validator("min_ratings", "threads", "run_deadline_minutes")
    @classmethod
    def _not_negative(cls, value: int, info) -> int:
        if value < 0:
            raise ValueError(f"{variable(info.field_name)} must be 0 or more, got {value}")
        return value

    @model_validator(mode="after")
    def _needs(self) -> Settings:
        if self.compute == "ecs" and not self.ecs_subnets:
            raise ValueError("RECSYS_COMPUTE=ecs needs RECSYS_ECS_SUBNETS: comma-separated subnet ids for the "
                             "stages' Fargate tasks (`python -m recsys.infra up` prints the ones it used)")
        return self

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir or Path(self.project_root) / ".state")

    def s3(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *(p.strip("/") for p in parts)])


def variable(field_name: str) -> str:
    """The environment variable of a setting."""
    alias = Settings.model_fields[field_name].validation_alias
    assert isinstance(alias, AliasChoices)
    return str(alias.choices[0])


def table_markdown() -> str:
    """The Markdown table of every setting (docs/configuration.md carries it: make docs-tables)."""
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = info.default
        if name == "project_root":
            default = "the checkout `plugins/` is in"
        elif name == "python":
            default = "the worker's interpreter"
        elif isinstance(default, list):
            default = ",".join(default)
        elif isinstance(default, bool):
            default = str(default).lower()
        alias = info.validation_alias
        assert isinstance(alias, AliasChoices)
        assert "|" not in str(info.description), name  # a cell may not hold the column separator
        rows.append(f"| `{alias.choices[0]}` | {f'`{default}`' if default != '' else '(unset)'} | "
                    f"{info.description} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table_markdown())
