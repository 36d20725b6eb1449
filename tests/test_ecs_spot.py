"""Fargate Spot for the stages (``RECSYS_ECS_CAPACITY``): the exact RunTask request the provider's
operator sends for each setting (in the provider's test_ecs.py style: a mock client, the kwargs
asserted whole), the cluster's capacity providers ``infra up`` associates (moto server), and a
Spot interruption told as Spot and left to the task's retries."""

from __future__ import annotations

from unittest import mock

import pytest

from recsys import compute, infra
from recsys.settings import Settings

ARN = "arn:aws:ecs:us-east-1:123456789012:task/recsys/0123456789abcdef"
RUN = ["python", "-m", "tasks.train", "--ratings", "s3://recsys/datasets/ds=2026-11-23/ratings.parquet",
       "--threads", "0"]


def started(capacity: str) -> dict:
    """The kwargs of the one RunTask call the stage operator makes for ``capacity``."""
    settings = Settings(compute="ecs", ecs_subnets=["subnet-1"], ecs_security_groups=["sg-1"], ecs_capacity=capacity)
    op = compute.compute_task("train", RUN[:5], settings)
    op.task_definition = "recsys-jobs"  # what plan's pinned revision renders to (tests/test_jobs_image.py)
    client = mock.Mock()
    client.run_task.return_value = {"tasks": [{"taskArn": ARN}], "failures": []}
    with mock.patch.object(type(op), "client", new_callable=mock.PropertyMock, return_value=client):
        op._start_task()
    client.run_task.assert_called_once()
    assert op.arn == ARN
    return client.run_task.call_args.kwargs


COMMON = {
    "cluster": "recsys", "taskDefinition": "recsys-jobs", "startedBy": "airflow",
    "overrides": {"containerOverrides": [{"name": "recsys", "command": RUN}]},
    "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["subnet-1"], "securityGroups": ["sg-1"],
                                                     "assignPublicIp": "DISABLED"}},
    "tags": [{"key": "recsys:stage", "value": "train"}], "propagateTags": "TASK_DEFINITION",
}


def test_on_demand_is_the_default_and_sends_the_fargate_launch_type():
    assert Settings().ecs_capacity == "fargate"
    assert started("fargate") == {**COMMON, "launchType": "FARGATE"}


def test_spot_sends_a_capacity_provider_strategy_and_no_launch_type():
    """RunTask refuses both together (InvalidParameterException: "Specifying both a launch type and
    capacity provider strategy is not supported")."""
    kwargs = started("fargate-spot")
    assert kwargs == {**COMMON, "capacityProviderStrategy": [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]}
    assert "launchType" not in kwargs


def test_a_misspelt_capacity_fails_at_parse_time_naming_the_variable(monkeypatch):
    monkeypatch.setenv("RECSYS_ECS_CAPACITY", "spot")
    with pytest.raises(ValueError, match="RECSYS_ECS_CAPACITY must be fargate or fargate-spot, got 'spot'"):
        Settings()


def test_infra_up_associates_fargate_and_spot_and_keeps_the_clusters_own(aws, boto):
    ecs = boto("ecs")
    out = infra.up(Settings(), ecs=True, default_subnets=True)
    cluster = ecs.describe_clusters(clusters=["recsys"])["clusters"][0]
    assert cluster["capacityProviders"] == ["FARGATE", "FARGATE_SPOT"]
    # an adopted cluster with its own provider and default strategy keeps both
    ecs.put_cluster_capacity_providers(cluster="recsys", capacityProviders=["FARGATE_SPOT"],
                                       defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT",
                                                                         "weight": 1}])
    assert infra.up(Settings(), ecs=True, default_subnets=True) == out
    cluster = ecs.describe_clusters(clusters=["recsys"])["clusters"][0]
    assert cluster["capacityProviders"] == ["FARGATE_SPOT", "FARGATE"]
    assert cluster["defaultCapacityProviderStrategy"] == [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]


def test_the_spot_request_is_one_ecs_accepts(aws, boto):
    """The operator's own RunTask, against the moto server (which, like ECS, refuses a launch type
    with a strategy), on the cluster ``infra up`` made."""
    out = infra.up(Settings(), ecs=True, default_subnets=True)
    settings = Settings(compute="ecs", ecs_subnets=out["subnets"], ecs_capacity="fargate-spot")
    op = compute.compute_task("train", ["python", "-m", "tasks.train", "--help"], settings)
    op.task_definition = "recsys-jobs"  # rendered from plan's XCom in a run
    op._start_task()
    task = boto("ecs").describe_tasks(cluster="recsys", tasks=[op.arn])["tasks"][0]
    assert task["capacityProviderName"] == "FARGATE_SPOT"
    with pytest.raises(Exception, match="Specify either Launch Type or Capacity Provider Strategy"):
        boto("ecs").run_task(cluster="recsys", taskDefinition="recsys-jobs", launchType="FARGATE",
                             capacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "weight": 1}],
                             networkConfiguration=op.network_configuration)


def test_a_spot_interruption_is_retried_and_says_spot(monkeypatch):
    """Exact DescribeTasks answer of a reclaimed task: the stage fails with a retryable error
    (the DAG gives every stage retries), its text says Spot, and the run's alert is not sent for
    a try that is retried (the alert is the tasks' on_failure_callback, not on_retry)."""
    from airflow.exceptions import AirflowException

    from recsys.compat import AirflowFailException
    from recsys.operators.ecs_stage import RecsysEcsRunTaskOperator

    reclaimed = {"taskArn": ARN, "lastStatus": "STOPPED", "desiredStatus": "STOPPED", "capacityProviderName":
                 "FARGATE_SPOT", "stopCode": "SpotInterruption", "stoppedReason": "Your Spot Task was interrupted.",
                 "containers": [{"name": "recsys", "lastStatus": "STOPPED", "exitCode": 143}]}
    settings = Settings(compute="ecs", ecs_subnets=["subnet-1"], ecs_capacity="fargate-spot")
    op = compute.compute_task("train", RUN[:5], settings, retries=2)
    assert isinstance(op, RecsysEcsRunTaskOperator)
    client = mock.Mock()
    client.describe_tasks.return_value = {"tasks": [reclaimed], "failures": []}
    op.arn = ARN
    said = r"stage train: Fargate Spot reclaimed the task \(SpotInterruption: Your Spot Task was interrupted.\); a"
    with (mock.patch.object(type(op), "client", new_callable=mock.PropertyMock, return_value=client),
          pytest.raises(AirflowException, match=said) as got):
        op._check_success_task()
    assert not isinstance(got.value, AirflowFailException)
    assert op.retries == 2 and not op.on_retry_callback
