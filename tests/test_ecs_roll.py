"""The deploy path's ECS operator and trigger, in the style of the amazon provider's own
tests (template fields, exact calls, the deferral and its resumption).

Two kinds: against the moto server's ECS API where moto acts as ECS does (registration,
update, a service that never stabilises: moto never starts a task), and with exact ECS
responses through botocore's Stubber (:mod:`tests.ecs_responses`) for what moto cannot act
out: a deployment that completes, one ECS's circuit breaker rolled back, one another deploy
superseded, one stalled in progress, unhealthy load-balancer targets."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta

import pytest

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 3.0.x (make test-compat)
    from airflow.exceptions import TaskDeferred

from recsys import deploy, infra
from recsys.operators.ecs_roll import EcsRollServiceOperator, RollFailed
from recsys.settings import Settings
from recsys.triggers import EcsServicesStableTrigger
from tests import ecs_responses as r


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


def test_registration_carries_image_version_and_table_and_the_wait_is_bounded(ecs_env, monkeypatch):
    """moto: the revision the roll registers, and the waiter's arguments (moto never completes a
    deployment, so the verdict is stubbed here; the exact-response tests below cover it)."""
    from recsys import ecs_rollout

    ecs, out, live = ecs_env
    op = operator(f"{out['repository']}:abc")
    waits = []

    class Stable:
        def wait(self, **kwargs):
            waits.append(kwargs)

    monkeypatch.setattr(op.hook.conn, "get_waiter", lambda name: Stable() if name == "services_stable" else None)
    monkeypatch.setattr(ecs_rollout, "settle", lambda *a, **k: ecs_rollout.Verdict("serving", "stubbed"))
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
    # moto names the new revision on the service but keeps its one deployment (never started)
    with pytest.raises(RollFailed, match=r"does not serve recsys-serve:2: the service names recsys-serve:2 but "
                                         r"its PRIMARY deployment runs recsys-serve:1; the wait for a steady "
                                         rf"state failed: .*rolled back to {live.rsplit('/', 1)[1]}"):
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
    # as the provider's operators: a dead triggerer cannot hold the task longer than the wait (+1 min)
    assert deferred.value.timeout == timedelta(seconds=1 * 2 + 60)
    assert deferred.value.kwargs == {"rolled": rolled}  # a malformed event still knows what to undo
    assert rolled["task_definition"] != live  # registered and rolling while the triggerer waits
    path, kwargs = trigger.serialize()
    assert path == "recsys.triggers.EcsServicesStableTrigger"
    assert kwargs == {"cluster": "recsys", "service": "recsys-serve", "return_value": rolled, "waiter_delay": 1,
                      "waiter_max_attempts": 2, "aws_conn_id": "aws_default", "region_name": "us-east-1"}
    assert EcsServicesStableTrigger(**kwargs).serialize() == (path, kwargs)  # what the triggerer rebuilds
    # the trigger gave up: moto's deployment is still in progress -> rolled back, ECS quoted
    with pytest.raises(RollFailed, match="PRIMARY deployment runs.*Max attempts exceeded.*rolled back"):
        op.execute_complete({}, {"status": "error", "message": "Max attempts exceeded", "value": rolled}, rolled)
    assert serving(ecs) == live
    # no event at all (a triggerer that died): rolled back all the same
    ecs.update_service(cluster="recsys", service="recsys-serve", taskDefinition=rolled["task_definition"])
    with pytest.raises(RollFailed, match="no valid event.*rolled back"):
        op.execute_complete({}, None, rolled)
    assert serving(ecs) == live


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


# -- exact ECS responses (botocore Stubber): what moto cannot act out -----------------------

def stubbed(fake: r.Ecs, **kwargs) -> EcsRollServiceOperator:
    op = EcsRollServiceOperator(task_id="deploy", cluster=r.CLUSTER, service=r.SERVICE, container_name="recsys",
                                image="repo/recsys-serve:new", model_version="v2", region_name="us-east-1",
                                waiter_delay=0, waiter_max_attempts=2, **kwargs)
    op.hook.__dict__["conn"] = fake.ecs  # the hook's cached client: the Stubber answers for it
    op.__dict__["elbv2"] = fake.elbv2
    return op


def stable(task_definition: str, rollout: str = "COMPLETED", **kwargs) -> dict:
    """What a stable service looks like: one deployment, running = desired (the waiter's test)."""
    return r.service(task_definition, [r.deployment("222", "PRIMARY", task_definition, rollout)], **kwargs)


NOT_STARTED = r.stopped_task(
    "t1", r.NEW, "TaskFailedToStart",
    "CannotPullContainerError: pull image manifest has been retried 1 time(s): failed to resolve ref "
    "repo/recsys-serve:new: not found", container_reason="CannotPullContainerError: not found")
CRASHED = r.stopped_task("t2", r.NEW, "EssentialContainerExited", "Essential container in task exited",
                         exit_code=1)


def test_the_deferrable_default_is_airflows_default_deferrable(monkeypatch):
    """[operators] default_deferrable, as the provider's operators (not a RECSYS_ variable)."""
    import importlib

    import recsys.operators.ecs_roll as module

    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    try:
        assert importlib.reload(module).EcsRollServiceOperator(
            task_id="d", cluster="c", service="s", container_name="x", image="i", model_version="v").deferrable
    finally:
        monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE")
        importlib.reload(module)


def test_a_completed_deployment_of_the_new_revision_serves():
    with r.Ecs() as fake:
        fake.register()
        fake.describe(stable(r.NEW))  # the waiter
        fake.describe(stable(r.NEW))  # the verification
        result = stubbed(fake).execute({})
        fake.assert_done()
    assert result == {"task_definition": r.NEW, "previous": r.OLD, "image": "repo/recsys-serve:new"}


def test_a_roll_the_circuit_breaker_undid_fails_quoting_ecs_and_is_not_rolled_back_twice():
    """The service is stable on the OLD revision (ECS rolled back on its own): the waiter passes,
    yet the new version never served. Today's code called this live."""
    events = ("(service recsys-serve) has reached a steady state.",
              "(service recsys-serve) rolling back to deployment ecs-svc/000.",
              "(service recsys-serve) (deployment ecs-svc/111) deployment failed: tasks failed to start.")
    with r.Ecs() as fake:
        fake.register()
        fake.describe(stable(r.OLD, events=events))  # the waiter: stable - on the old revision
        fake.describe(stable(r.OLD, events=events))
        fake.stopped(NOT_STARTED, CRASHED)
        # no update_service: ECS's circuit breaker has put the old revision back already
        with pytest.raises(RollFailed) as failed:
            stubbed(fake).execute({})
        fake.assert_done()
    text = str(failed.value)
    assert text.startswith("ECS service recsys-serve does not serve recsys-serve:8: ECS rolled the service back "
                           "to the previous revision")
    assert "deployment failed: tasks failed to start" in text and "rolling back to deployment ecs-svc/000" in text
    assert ("TaskFailedToStart: CannotPullContainerError: pull image manifest has been retried 1 time(s)" in text
            and "EssentialContainerExited: Essential container in task exited (recsys: no reason, exit code 1)"
            in text)
    assert text.endswith("ECS's circuit breaker already put recsys-serve:7 back")


def test_a_failed_deployment_ecs_did_not_roll_back_is_rolled_back_here():
    """Circuit breaker without rollback (or caught before ECS's rollback started): FAILED on PRIMARY."""
    with r.Ecs() as fake:
        fake.register()
        failed = r.service(r.NEW, [r.deployment("111", "PRIMARY", r.NEW, "FAILED", running=0, failed=3)])
        fake.describe(failed)  # the waiter gives up on it (attempt 1)
        fake.describe(failed)  # (attempt 2)
        fake.describe(failed)  # the verification
        fake.stopped(NOT_STARTED)
        fake.update(r.OLD)
        with pytest.raises(RollFailed, match=r"ECS failed the deployment: rolloutState FAILED \(ECS deployment "
                                             r"circuit breaker: tasks failed to start.\).*TaskFailedToStart.*"
                                             r"rolled back to recsys-serve:7$"):
            stubbed(fake).execute({})
        fake.assert_done()


def test_a_roll_superseded_by_another_deploy_fails_without_undoing_the_other():
    """Someone deployed revision 9 while this roll waited: not ours to claim, not ours to undo."""
    from recsys.compat import AirflowFailException

    with r.Ecs() as fake:
        fake.register()
        fake.describe(stable(r.OTHER))
        fake.describe(stable(r.OTHER))
        fake.stopped()
        with pytest.raises(AirflowFailException, match=r"another deploy superseded this roll: recsys-serve:9 is "
                                                       r"PRIMARY.*not rolled back"):
            stubbed(fake).execute({})
        fake.assert_done()


def test_a_deployment_stalled_in_progress_is_rolled_back():
    """Stable by the waiter's count (one deployment, running = desired) but ECS never called the
    rollout COMPLETED within the settle polls: not live, rolled back."""
    with r.Ecs() as fake:
        fake.register()
        fake.describe(stable(r.NEW, "IN_PROGRESS"))  # the waiter
        for _ in range(3):
            fake.describe(stable(r.NEW, "IN_PROGRESS"))  # settle_attempts=3
        fake.stopped(CRASHED)
        fake.update(r.OLD)
        with pytest.raises(RollFailed, match=r"deployment still in progress: rolloutState IN_PROGRESS \(ECS "
                                             r"deployment ecs-svc/222 in progress.\), 1/1 tasks running.*"
                                             r"EssentialContainerExited.*rolled back to recsys-serve:7$"):
            stubbed(fake, settle_attempts=3).execute({})
        fake.assert_done()


def test_behind_a_load_balancer_unhealthy_targets_fail_the_roll():
    task = r.running_task("t3", r.NEW, "10.0.1.5")
    old_task = r.running_task("t0", r.OLD, "10.0.1.4")
    with r.Ecs() as fake:
        fake.register()
        fake.describe(stable(r.NEW, load_balancer=True))
        fake.describe(stable(r.NEW, load_balancer=True))
        fake.running(task, old_task)
        fake.targets(("10.0.1.5", "unhealthy", "Target.ResponseCodeMismatch"), ("10.0.1.4", "draining", None))
        fake.stopped()
        fake.update(r.OLD)
        with pytest.raises(RollFailed, match=r"load balancer targets not healthy: target group recsys-serve: "
                                             r"10.0.1.5 unhealthy \(Target.ResponseCodeMismatch: Health checks "
                                             r"failed with these codes: \[503\]\).*rolled back to recsys-serve:7"):
            stubbed(fake, settle_attempts=1).execute({})
        fake.assert_done()
    # healthy targets pass once the load balancer's endpoint serves the new version: tests/test_alb.py


def test_the_deferred_roll_verifies_too():
    """execute_complete after a "success" event from the trigger: the same verification."""
    rolled = {"task_definition": r.NEW, "previous": r.OLD, "image": "repo/recsys-serve:new"}
    with r.Ecs() as fake:
        fake.describe(stable(r.OLD))
        fake.stopped(NOT_STARTED)
        with pytest.raises(RollFailed, match="ECS rolled the service back.*TaskFailedToStart"):
            stubbed(fake, deferrable=True).execute_complete({}, {"status": "success", "value": rolled}, rolled)
        fake.assert_done()


def test_the_rollback_cli_rolls_through_the_same_verification(monkeypatch):
    """deploy.ecs.deploy_ecs (python -m recsys.rollback) is the same roll: a circuit-breaker undo fails it."""
    settings = Settings()
    with r.Ecs() as fake:
        fake.register()
        fake.describe(stable(r.OLD))
        fake.describe(stable(r.OLD))
        fake.stopped()
        with pytest.raises(RollFailed, match="ECS rolled the service back"):
            deploy.ecs.deploy_ecs(fake.ecs, settings, "repo/recsys-serve:new", "v2", wait_delay=0, wait_attempts=2)
        fake.assert_done()
