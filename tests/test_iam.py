"""AWS resources a user can own: what ``recsys.infra up`` makes, and least-privilege policies
(deploy/iam/) that allow every call the code makes, checked against calls recorded at the moto
server. The e2e tests check the same for a whole `airflow dags test` run (local stages, local app);
this module covers the ECS half: the provider's EcsRunTaskOperator, the service roll, the ECR lookup.
moto runs no containers, so the job task never finishes there: its calls are what is checked.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from recsys import compute, deploy, infra, pipeline
from recsys.settings import Settings
from tests.aws_calls import ACCOUNT, allowed, violations


@pytest.fixture
def ecs_stack(aws, boto, monkeypatch):
    out = infra.up(Settings(), ecs=True, default_subnets=True)
    monkeypatch.setenv("RECSYS_ECS_SUBNETS", ",".join(out["subnets"]))
    return out


def policy(kind: str, settings: Settings | None = None) -> dict:
    settings = settings or Settings()
    return infra.render_policy(infra.policy_dir(settings) / infra.POLICY_FILES[kind],
                               infra.policy_values(settings, ACCOUNT))


def test_infra_makes_the_jobs_task_definition_the_dag_runs_and_gives_each_task_a_role(ecs_stack, boto):
    ecs, iam = boto("ecs"), boto("iam")
    settings = Settings()
    jobs = ecs.describe_task_definition(taskDefinition=settings.ecs_job_task_definition)["taskDefinition"]
    op = compute.compute_task("train", ["python", "-m", "tasks.train"], Settings(compute="ecs"))
    container = jobs["containerDefinitions"][0]
    assert container["name"] == op.container_name == settings.ecs_container
    logs = container["logConfiguration"]["options"]
    # ECS names the stream <prefix>/<container>/<task id>; the operator reads <its prefix>/<task id>
    assert f"{logs['awslogs-stream-prefix']}/{container['name']}" == op.awslogs_stream_prefix
    assert logs["awslogs-group"] == op.awslogs_group and op.network_configuration["awsvpcConfiguration"]["subnets"]
    assert container["image"] == f"{ecs_stack['jobs_repository']}:latest"
    assert jobs["taskRoleArn"] == ecs_stack["roles"]["jobs"]
    assert jobs["executionRoleArn"] == ecs_stack["roles"]["execution"]
    serve = ecs.describe_task_definition(taskDefinition=settings.ecs_serve_family)["taskDefinition"]
    assert serve["taskRoleArn"] == ecs_stack["roles"]["serve"]
    inline = iam.get_role_policy(RoleName=ecs_stack["roles"]["serve"].rsplit("/", 1)[-1], PolicyName="recsys")
    assert inline["PolicyDocument"] == policy("serve")  # the role carries the policy from deploy/iam/
    assert boto("logs").describe_log_groups(logGroupNamePrefix=settings.ecs_log_group)["logGroups"]
    again = infra.up(Settings(), ecs=True)  # idempotent: no new revision, same roles
    assert again["jobs_task_definition"] == ecs_stack["jobs_task_definition"] and again["roles"] == ecs_stack["roles"]


def test_infra_without_subnets_names_the_variable_and_creates_nothing(aws, boto, capsys):
    with pytest.raises(infra.InfraError, match="RECSYS_ECS_SUBNETS is not set: Fargate tasks .* --default-subnets"):
        infra.up(Settings(), ecs=True)
    assert boto("ecs").list_clusters()["clusterArns"] == []
    assert infra.main(["up"]) == 2 and "RECSYS_ECS_SUBNETS" in capsys.readouterr().err


def test_own_roles_are_used_as_given(aws, boto, monkeypatch):
    monkeypatch.setenv("RECSYS_ECS_JOBS_TASK_ROLE", f"arn:aws:iam::{ACCOUNT}:role/team-jobs")
    monkeypatch.setenv("RECSYS_ECS_SERVE_TASK_ROLE", f"arn:aws:iam::{ACCOUNT}:role/team-serve")
    monkeypatch.setenv("RECSYS_ECS_EXECUTION_ROLE", f"arn:aws:iam::{ACCOUNT}:role/team-exec")
    out = infra.up(Settings(), ecs=True, default_subnets=True)
    assert out["roles"] == {"jobs": f"arn:aws:iam::{ACCOUNT}:role/team-jobs",
                            "serve": f"arn:aws:iam::{ACCOUNT}:role/team-serve",
                            "execution": f"arn:aws:iam::{ACCOUNT}:role/team-exec"}
    assert boto("iam").list_roles()["Roles"] == []  # nothing made on the user's behalf


def test_policies_are_least_privilege():
    serve, jobs, airflow = policy("serve"), policy("jobs"), policy("airflow")
    table = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/recommendations"
    assert allowed(serve, "dynamodb:GetItem", table)
    for action in ("dynamodb:Query", "dynamodb:Scan", "dynamodb:PutItem", "s3:GetObject"):
        assert not allowed(serve, action, table), action
    live = "arn:aws:s3:::recsys/models/_live.json"
    assert not allowed(jobs, "s3:PutObject", live) and not allowed(jobs, "s3:DeleteObject", live)  # explicit Deny
    assert allowed(jobs, "s3:PutObject", "arn:aws:s3:::recsys/models/v1/model.pt")
    assert allowed(airflow, "s3:PutObject", live)
    assert not allowed(airflow, "s3:PutObject", "arn:aws:s3:::recsys/models/v1/model.pt")  # never artifacts
    assert not allowed(airflow, "s3:DeleteObject", "arn:aws:s3:::recsys/models/v1/model.pt")
    assert not allowed(airflow, "dynamodb:BatchWriteItem", table)
    assert not allowed(airflow, "ecs:RunTask", f"arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/other")
    assert not allowed(jobs, "s3:GetObject", "arn:aws:s3:::other-bucket/x")
    rendered = json.dumps([policy(k) for k in infra.POLICY_FILES])
    assert "${" not in rendered  # every placeholder filled


class FakeTI:
    dag_id, task_id, run_id, map_index, try_number = "recommender_pipeline", "train", "manual__x", -1, 1

    def xcom_push(self, key, value):
        pass

    def xcom_pull(self, *args, **kwargs):
        return None


def test_every_call_of_the_ecs_paths_is_allowed_by_the_worker_role(ecs_stack, boto, aws_calls, monkeypatch):
    from airflow.providers.amazon.aws.hooks.ecr import EcrHook

    settings = Settings(compute="ecs", deploy="ecs")
    ecs_admin = boto("ecs")

    # 1. plan pins the jobs image by digest in a jobs revision; a stage on Fargate runs it through the
    # provider's operator (reattach lookup, RunTask, DescribeTasks, logs)
    boto("ecr").put_image(repositoryName=settings.ecr_jobs_repository, imageTag=deploy.image.jobs_image_tag(settings),
                          imageManifest=json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:" + "1" * 64},
                                                    "layers": [{"digest": "sha256:" + "2" * 64}]}),
                          imageManifestMediaType="application/vnd.docker.distribution.manifest.v2+json")
    pinned = pipeline.pin_jobs_image(settings)
    op = compute.compute_task("train", ["python", "-m", "tasks.train", "--help"], settings)
    op.task_definition = pinned["jobs_task_definition"]  # what the template renders from plan's XCom
    op.awslogs_fetch_interval = timedelta(seconds=0.2)
    op.waiter_delay = 0  # the provider's real tasks_stopped waiter, polled without sleeping (moto stops the task)
    with pytest.raises(Exception, match="pending|not in success|failed"):  # moto's container never ran
        op.execute({"ti": FakeTI(), "task_instance": FakeTI()})
    operations = {c.operation for c in aws_calls if c.caller == "airflow"}
    assert {"DescribeImages", "RegisterTaskDefinition", "ListTasks", "RunTask", "DescribeTasks",
            "GetLogEvents"} <= operations

    # 2. the serving image lookup and the service roll, through the provider's hooks
    ecr = EcrHook(aws_conn_id="aws_default", region_name="us-east-1").conn
    tag = deploy.image.serving_image_tag(settings)
    boto("ecr").put_image(repositoryName=settings.ecr_repository, imageTag=tag, imageManifest=json.dumps(
        {"schemaVersion": 2, "layers": [], "config": {"digest": "sha256:" + "0" * 64}}),
        imageManifestMediaType="application/vnd.docker.distribution.manifest.v2+json")
    image = deploy.image.ensure_image(ecr, settings)
    # the DAG's deploy task in ECS mode: EcsRollServiceOperator (its waiter stubbed: moto never
    # stabilises, and its verification then finds the deployment not started and rolls back)
    from recsys.operators.ecs_roll import EcsRollServiceOperator, RollFailed

    roll = EcsRollServiceOperator(task_id="deploy", cluster=settings.ecs_cluster, service=settings.ecs_service,
                                  container_name=settings.ecs_container, image=image,
                                  model_version="v20261202T000000m-abcdef", table=settings.table,
                                  aws_conn_id="aws_default", region_name="us-east-1", settle_attempts=1)
    monkeypatch.setattr(roll.hook.conn, "get_waiter",
                        lambda name: type("Stable", (), {"wait": lambda self, **kw: None})())
    with pytest.raises(RollFailed, match="rolled back"):
        roll.execute({})
    registered = [c for c in aws_calls if c.operation == "RegisterTaskDefinition" and c.caller == "airflow"]
    family = registered[-1].params["family"]
    revision = ecs_admin.describe_task_definition(taskDefinition=family)["taskDefinition"]  # the latest
    assert revision["containerDefinitions"][0]["image"] == image
    assert revision["taskRoleArn"] == ecs_stack["roles"]["serve"]  # the new revision keeps the task role
    assert {"DescribeImages", "DescribeServices", "DescribeTaskDefinition", "RegisterTaskDefinition",
            "UpdateService", "ListTasks"} <= {c.operation for c in aws_calls if c.caller == "airflow"}
    # the verification's target-health read (a service behind a load balancer) is allowed too
    assert allowed(policy("airflow"), "elasticloadbalancing:DescribeTargetHealth", "*")

    assert violations(aws_calls, settings) == {}
