"""The one ECS service roll (plain boto3, no Airflow): used by the DAG's
:class:`recsys.operators.ecs_roll.EcsRollServiceOperator` (blocking and deferrable) and by
``python -m recsys.rollback`` (through :func:`recsys.deploy.ecs.deploy_ecs`).

A roll is green only when ECS says the new revision serves, not when boto's
``services_stable`` waiter returns. That waiter only checks "one deployment, running =
desired": it also succeeds when ECS's deployment circuit breaker has rolled the service back
to the previous revision (the service is then stable, on the old model). So after the wait,
:func:`verify` reads the service's deployments (``DescribeServices``) and requires:

- the PRIMARY deployment runs the new task definition;
- its ``rolloutState`` is ``COMPLETED`` (services without one, e.g. behind a Classic Load
  Balancer: one deployment with running = desired);
- with a load balancer, every running task of the new revision is a ``healthy`` target;
- the smoke test passes: ``/readyz`` at ``RECSYS_SMOKE_URL``, else at the endpoint of the
  service's load balancer (:func:`endpoint`), reports the new version.

Anything else fails the roll with what ECS said (the deployment's ``rolloutStateReason``, the
service's latest events, the stopped tasks' ``stopCode``/``stoppedReason`` and container
reasons), after :func:`finish` puts the previous revision back where ECS has not (a stalled or
unhealthy roll) and leaves the service alone where ECS already did (circuit breaker) or where
another deploy has since taken over (superseded).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# How often ECS's answer may still be "in progress" after the waiter returned (rolloutState
# turns COMPLETED a little after running = desired; targets start in "initial").
SETTLE_ATTEMPTS = 4
STOPPED_TASKS_QUOTED = 3
EVENTS_QUOTED = 3


class RollFailed(RuntimeError):
    """The new revision does not serve; the message says what ECS reported and what is serving."""


class RollSuperseded(RollFailed):
    """Another deploy changed the service during this roll: this roll neither serves nor rolls back."""


@dataclass(frozen=True)
class Verdict:
    """What ECS says about a roll. ``state``: ``serving`` | ``in_progress`` | ``failed`` (the new
    deployment failed, ECS did not roll back) | ``rolled_back`` (ECS's circuit breaker put the
    previous revision back) | ``superseded`` (another revision is PRIMARY) | ``unhealthy`` (the
    load balancer's targets are not healthy)."""

    state: str
    reason: str
    primary: dict = field(default_factory=dict, compare=False)
    target_groups: tuple[str, ...] = field(default=(), compare=False)  # the service's, when serving

    @property
    def ok(self) -> bool:
        return self.state == "serving"

    @property
    def settling(self) -> bool:
        return self.state in ("in_progress", "unhealthy")


def start(ecs, cluster: str, service: str, container: str, image: str, model_version: str,
          table: str | None = None) -> dict:
    """Register the new revision and point the service at it. Returns what the rest of the roll
    needs (JSON-safe: it travels through the triggerer): ``task_definition``, ``previous``, ``image``."""
    from recsys import deploy

    new_arn, previous = deploy.ecs.register_revision(ecs, cluster, service, container, image, model_version, table)
    return {"task_definition": new_arn, "previous": previous, "image": image}


def wait_stable(ecs, cluster: str, service: str, delay: int, attempts: int) -> str | None:
    """boto's ``services_stable`` waiter on the worker; the error text, or None once stable."""
    try:
        ecs.get_waiter("services_stable").wait(cluster=cluster, services=[service],
                                               WaiterConfig={"Delay": delay, "MaxAttempts": attempts})
    except Exception as err:  # WaiterError, ClientError: the verdict below says what ECS thinks
        return str(err)
    return None


def _describe(ecs, cluster: str, service: str) -> dict:
    services = ecs.describe_services(cluster=cluster, services=[service])["services"]
    if not services:
        raise RollFailed(f"ECS service {service} not found in cluster {cluster}")
    return services[0]


def _short(arn: str | None) -> str:
    return (arn or "?").rsplit("/", 1)[-1]


def stopped_reasons(ecs, cluster: str, service: str, task_definition: str) -> list[str]:
    """Why the service's recently stopped tasks of ``task_definition`` stopped (ECS keeps a stopped
    task about an hour): ``stopCode: stoppedReason (container: reason, exit code)``."""
    arns = ecs.list_tasks(cluster=cluster, serviceName=service, desiredStatus="STOPPED").get("taskArns", [])
    if not arns:
        return []
    out = []
    for task in ecs.describe_tasks(cluster=cluster, tasks=arns[:100]).get("tasks", []):
        if task.get("taskDefinitionArn") != task_definition:
            continue
        containers = [f"{c['name']}: {c.get('reason') or 'no reason'}"
                      + (f", exit code {c['exitCode']}" if "exitCode" in c else "")
                      for c in task.get("containers", []) if c.get("reason") or c.get("exitCode")]
        out.append(f"{task.get('stopCode', 'stopped')}: {task.get('stoppedReason', 'no reason given')}"
                   + (f" ({'; '.join(containers)})" if containers else ""))
        if len(out) == STOPPED_TASKS_QUOTED:
            break
    return out


def _events(described: dict) -> list[str]:
    # newest first, as ECS returns them
    return [e["message"] for e in described.get("events", [])[:EVENTS_QUOTED]]


def _targets_healthy(ecs, elbv2, cluster: str, service: str, described: dict, primary: dict) -> str | None:
    """None when every running task of the primary revision is a healthy target of every target
    group of the service; else what the load balancer says."""
    groups = [lb["targetGroupArn"] for lb in described.get("loadBalancers", []) if lb.get("targetGroupArn")]
    if not groups:
        return None
    arns = ecs.list_tasks(cluster=cluster, serviceName=service, desiredStatus="RUNNING").get("taskArns", [])
    tasks = ecs.describe_tasks(cluster=cluster, tasks=arns).get("tasks", []) if arns else []
    ips = {d["value"] for t in tasks if t.get("taskDefinitionArn") == primary["taskDefinition"]
           for a in t.get("attachments", []) for d in a.get("details", []) if d.get("name") == "privateIPv4Address"}
    if not ips:
        return f"no running task of {_short(primary['taskDefinition'])} to check against the load balancer"
    for group in groups:
        health = {t["Target"]["Id"]: t["TargetHealth"]
                  for t in elbv2.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]}
        bad = {ip: health.get(ip, {"State": "unregistered"}) for ip in ips
               if health.get(ip, {}).get("State") != "healthy"}
        if bad:
            return f"target group {group.rsplit('/', 2)[1]}: " + "; ".join(
                f"{ip} {h['State']}" + (f" ({h.get('Reason')}: {h.get('Description', '')})" if h.get("Reason") else "")
                for ip, h in sorted(bad.items()))
    return None


def verify(ecs, cluster: str, service: str, rolled: dict, elbv2=None) -> Verdict:
    """What ECS says about the roll ``rolled`` (see the module docstring)."""
    new, previous = rolled["task_definition"], rolled.get("previous")
    described = _describe(ecs, cluster, service)
    deployments = described.get("deployments", [])
    primary: dict = next((d for d in deployments if d.get("status") == "PRIMARY"), {})
    ours: dict = next((d for d in deployments if d.get("taskDefinition") == new), {})
    events = _events(described)
    if primary.get("taskDefinition") != new and described.get("taskDefinition") == new:
        # ECS names one revision on the service and on its PRIMARY deployment; until both
        # agree the roll has not taken effect (and nothing says ECS undid it): ours to undo
        return Verdict("in_progress", f"the service names {_short(new)} but its PRIMARY deployment runs "
                                      f"{_short(primary.get('taskDefinition'))}", primary)
    if primary.get("taskDefinition") != new:
        said = [f"deployment of {_short(new)}: {ours.get('rolloutState', 'gone')}"
                + (f" ({ours['rolloutStateReason']})" if ours.get("rolloutStateReason") else ""),
                *(f"event: {e}" for e in events)]
        state = "rolled_back" if primary.get("taskDefinition") == previous else "superseded"
        what = ("ECS rolled the service back to the previous revision" if state == "rolled_back" else
                f"another deploy superseded this roll: {_short(primary.get('taskDefinition'))} is PRIMARY")
        return Verdict(state, f"{what}; " + "; ".join(said), primary)
    rollout = primary.get("rolloutState")
    said_primary = f"rolloutState {rollout}" + (f" ({primary['rolloutStateReason']})"
                                                if primary.get("rolloutStateReason") else "")
    if rollout == "FAILED":
        return Verdict("failed", f"ECS failed the deployment: {said_primary}", primary)
    running, desired = primary.get("runningCount", 0), primary.get("desiredCount", 0)
    done = rollout == "COMPLETED" if rollout else (len(deployments) == 1 and running == desired)
    if not done or running < desired:
        return Verdict("in_progress", f"deployment still in progress: {said_primary or 'no rolloutState'}, "
                                      f"{running}/{desired} tasks running, {primary.get('failedTasks', 0)} failed",
                       primary)
    if elbv2 is not None:
        unhealthy = _targets_healthy(ecs, elbv2, cluster, service, described, primary)
        if unhealthy:
            return Verdict("unhealthy", f"load balancer targets not healthy: {unhealthy}", primary)
    return Verdict("serving", said_primary or f"{running}/{desired} tasks running", primary,
                   tuple(lb["targetGroupArn"] for lb in described.get("loadBalancers", []) if lb.get("targetGroupArn")))


def endpoint(elbv2, target_group: str) -> str | None:
    """The URL of the load balancer that forwards to ``target_group`` (the listener's scheme and
    port), or None when no listener does."""
    group = elbv2.describe_target_groups(TargetGroupArns=[target_group])["TargetGroups"][0]
    for balancer in group.get("LoadBalancerArns", []):
        for listener in elbv2.describe_listeners(LoadBalancerArn=balancer)["Listeners"]:
            if not any(a.get("TargetGroupArn") == target_group for a in listener.get("DefaultActions", [])):
                continue
            dns = elbv2.describe_load_balancers(LoadBalancerArns=[balancer])["LoadBalancers"][0]["DNSName"]
            scheme = "https" if listener["Protocol"] == "HTTPS" else "http"
            port = "" if listener["Port"] == (443 if scheme == "https" else 80) else f":{listener['Port']}"
            return f"{scheme}://{dns}{port}"
    return None


def settle(ecs, cluster: str, service: str, rolled: dict, elbv2=None, attempts: int = SETTLE_ATTEMPTS,
           delay: float = 15.0, sleep: Callable[[float], None] = time.sleep) -> Verdict:
    """:func:`verify`, asked again while ECS still reports a transient state (at most ``attempts`` times)."""
    verdict = verify(ecs, cluster, service, rolled, elbv2)
    for _ in range(attempts - 1):
        if not verdict.settling:
            break
        sleep(delay)
        verdict = verify(ecs, cluster, service, rolled, elbv2)
    return verdict


Smoke = Callable[[Callable[[], "str | None"]], Any]


def finish(ecs, cluster: str, service: str, rolled: dict, *, wait_error: str | None = None, elbv2=None,
           smoke: Smoke | None = None, settle_attempts: int = SETTLE_ATTEMPTS,
           delay: float = 15.0, sleep: Callable[[float], None] = time.sleep) -> dict:
    """After the wait (``wait_error``: the waiter's or trigger's failure, None if it saw the
    service stable): verify, smoke-test (``smoke``, given a function that finds the endpoint of
    the service's load balancer: the default smoke-test URL), and on failure roll back where ECS has not,
    then raise :class:`RollFailed` (or :class:`RollSuperseded`) quoting ECS. Returns ``rolled``."""
    new, previous = rolled["task_definition"], rolled.get("previous")
    # after a failed wait there is nothing to wait for any more: one look at what ECS says
    verdict = settle(ecs, cluster, service, rolled, elbv2, 1 if wait_error else settle_attempts, delay, sleep)
    if verdict.ok and smoke is not None:
        try:
            groups = verdict.target_groups
            smoke(lambda: endpoint(elbv2, groups[0]) if elbv2 is not None and groups else None)
        except Exception as err:
            verdict = Verdict("unhealthy", f"the smoke test failed: {err}", verdict.primary)
    if verdict.ok:
        log.info("%s serves %s (%s)", service, _short(new), verdict.reason)
        return rolled
    parts = [f"ECS service {service} does not serve {_short(new)}: {verdict.reason}"]
    if wait_error:
        parts.append(f"the wait for a steady state failed: {wait_error}")
    stopped = stopped_reasons(ecs, cluster, service, new)
    if stopped:
        parts.append("stopped tasks: " + " | ".join(stopped))
    if verdict.state == "superseded":
        parts.append("not rolled back (the service belongs to the newer deploy now)")
        raise RollSuperseded("; ".join(parts))
    if verdict.state == "rolled_back":
        parts.append(f"ECS's circuit breaker already put {_short(previous)} back")
    elif previous:
        from recsys import deploy

        deploy.ecs.restore_revision(ecs, cluster, service, previous, new)
        parts.append(f"rolled back to {_short(previous)}")
    raise RollFailed("; ".join(parts))


def roll(ecs, cluster: str, service: str, container: str, image: str, model_version: str, *,
         table: str | None = None, elbv2=None, smoke: Smoke | None = None, delay: int = 15,
         attempts: int = 40, sleep: Callable[[float], None] = time.sleep) -> dict:
    """The whole roll on this process (blocking): start, wait, verify, roll back on failure."""
    rolled = start(ecs, cluster, service, container, image, model_version, table)
    error = wait_stable(ecs, cluster, service, delay, attempts)
    return finish(ecs, cluster, service, rolled, wait_error=error, elbv2=elbv2, smoke=smoke, delay=delay,
                  sleep=sleep)
