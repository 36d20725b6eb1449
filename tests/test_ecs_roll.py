"""The deploy path's ECS operator and trigger, in the style of the amazon provider's own
tests (template fields, exact calls, the deferral and its resumption) against the moto
server's ECS API. moto never starts a task, so a service never reaches steady state there:
the success path stubs only the waiter; the failure paths use moto's real behaviour."""

from __future__ import annotations

import asyncio
import socket

import pytest

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 3.0.x (make test-compat)
    from airflow.exceptions import TaskDeferred

from recsys import infra
from recsys.operators.ecs_roll import EcsRollServiceOperator, RollFailed
from recsys.settings import Settings
from recsys.triggers import EcsServicesStableTrigger


@pytest.fixture
def ecs_env(aws, boto):
    out = infra.up(Settings(), ecs=True, default_subnets=True)
    ecs = boto("ecs")
    live = ecs.describe_services(cluster="recsys", services=["recsys-serve"])["services"][0]["taskDefinition"]
    return ecs, out, live


def operator(image: str, **kwargs) -> EcsRollServiceOperator:
    return EcsRollServiceOperator(task_id="deploy", cluster="recsys", service="recsys-serve", container_name="recsys",
                                  image=image, model_version="v2", table="recs-test", region_name="us-east-1",
                                  waiter_delay=1, waiter_max_attempts=2, **kwargs)


def serving(ecs) -> str:
    return ecs.describe_services(cluster="recsys", services=["recsys-serve"])["services"][0]["taskDefinition"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_template_fields_and_an_init_that_only_stores():
    op = operator("repo:tag")
    from airflow.providers.amazon.aws.utils.mixins import aws_template_fields

    assert {"aws_conn_id", "region_name"} <= set(aws_template_fields())
    assert set(op.template_fields) == {*aws_template_fields(), "cluster", "service", "container_name", "image",
                                       "model_version", "table", "smoke_url"}
    assert (op.cluster, op.service, op.image, op.model_version, op.table) == ("recsys", "recsys-serve", "repo:tag",
                                                                              "v2", "recs-test")
    assert op.aws_conn_id == "aws_default" and op.deferrable is False


def test_a_stable_roll_registers_exactly_one_revision_and_serves_it(ecs_env, monkeypatch):
    ecs, out, live = ecs_env
    op = operator(f"{out['repository']}:abc")
    waits = []

    class Stable:
        def wait(self, **kwargs):
            waits.append(kwargs)

    monkeypatch.setattr(op.hook.conn, "get_waiter", lambda name: Stable() if name == "services_stable" else None)
    result = op.execute({})
    assert result["previous"] == live and serving(ecs) == result["task_definition"] != live
    new = ecs.describe_task_definition(taskDefinition=result["task_definition"])["taskDefinition"]
    assert new["containerDefinitions"][0]["image"] == f"{out['repository']}:abc" == result["image"]
    env = {e["name"]: e["value"] for e in new["containerDefinitions"][0]["environment"]}
    assert env["MODEL_VERSION"] == "v2" and env["RECSYS_TABLE"] == "recs-test"
    assert waits == [{"cluster": "recsys", "services": ["recsys-serve"],
                      "WaiterConfig": {"Delay": 1, "MaxAttempts": 2}}]


def test_a_roll_that_never_stabilises_is_rolled_back(ecs_env):
    ecs, out, live = ecs_env
    with pytest.raises(RollFailed, match=f"did not become stable.*rolled back to {live}"):
        operator(f"{out['repository']}:bad").execute({})
    assert serving(ecs) == live


def test_deferrable_roll_frees_the_worker_and_resumes_from_the_trigger(ecs_env):
    ecs, out, live = ecs_env
    op = operator(f"{out['repository']}:abc", deferrable=True, smoke_url=f"http://127.0.0.1:{closed_port()}",
                  smoke_timeout=1)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, EcsServicesStableTrigger) and deferred.value.method_name == "execute_complete"
    rolled = {"task_definition": serving(ecs), "previous": live, "image": f"{out['repository']}:abc"}
    assert rolled["task_definition"] != live  # registered and rolling while the triggerer waits
    path, kwargs = trigger.serialize()
    assert path == "recsys.triggers.EcsServicesStableTrigger"
    assert kwargs == {"cluster": "recsys", "service": "recsys-serve", "return_value": rolled, "waiter_delay": 1,
                      "waiter_max_attempts": 2, "aws_conn_id": "aws_default", "region_name": "us-east-1"}
    assert EcsServicesStableTrigger(**kwargs).serialize() == (path, kwargs)  # what the triggerer rebuilds
    # stable, but the smoke test cannot reach the service: rolled back
    with pytest.raises(RollFailed, match="did not serve v2"):
        op.execute_complete({}, {"status": "success", "value": rolled})
    assert serving(ecs) == live
    # the trigger gave up: rolled back
    ecs.update_service(cluster="recsys", service="recsys-serve", taskDefinition=rolled["task_definition"])
    with pytest.raises(RollFailed, match="Max attempts exceeded.*rolled back"):
        op.execute_complete({}, {"status": "error", "message": "Max attempts exceeded", "value": rolled})
    assert serving(ecs) == live
    op.smoke_url = None
    assert op.execute_complete({}, {"status": "success", "value": rolled}) == rolled


def test_the_trigger_waits_on_the_real_api_and_reports_a_service_that_never_stabilises(ecs_env):
    """The trigger's own loop (the provider's async waiter, aiobotocore) against moto, in both
    venvs: a missing aiobotocore fails here, as it would fail the triggerer."""
    trigger = EcsServicesStableTrigger(cluster="recsys", service="recsys-serve", return_value={"x": 1},
                                       waiter_delay=1, waiter_max_attempts=2, region_name="us-east-1")

    async def first_event():
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(first_event())
    # an error event (then execute_complete rolls back) on every provider version; the wording is theirs
    assert event["status"] == "error" and event["value"] == {"x": 1}
    assert "did not become stable" in event["message"] or "max attempts" in event["message"]
