"""Exact ECS and ELBv2 responses for what moto cannot act out (tasks that run, fail, stop;
deployments that complete, fail or are rolled back by the circuit breaker), served through
botocore's Stubber, which checks every request and response against the service model.

Field names, states and message formats are those the ECS API reference documents for
``DescribeServices`` (``deployments[].rolloutState``/``rolloutStateReason``, ``events``),
``DescribeTasks`` (``stopCode``, ``stoppedReason``, ``containers[].reason``/``exitCode``) and
ELBv2 ``DescribeTargetHealth``; the message texts are the ones ECS writes (quoted, never parsed).
"""

from __future__ import annotations

import datetime as dt

import boto3
from botocore.stub import ANY, Stubber

ACCOUNT = "123456789012"
REGION = "us-east-1"
ECS_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}"
CLUSTER = "recsys"
SERVICE = "recsys-serve"
CLUSTER_ARN = f"{ECS_ARN}:cluster/{CLUSTER}"
SERVICE_ARN = f"{ECS_ARN}:service/{CLUSTER}/{SERVICE}"
OLD = f"{ECS_ARN}:task-definition/recsys-serve:7"
NEW = f"{ECS_ARN}:task-definition/recsys-serve:8"
OTHER = f"{ECS_ARN}:task-definition/recsys-serve:9"
TARGET_GROUP = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/recsys-serve/0123456789abcdef"
T0 = dt.datetime(2026, 12, 7, 3, 0, tzinfo=dt.timezone.utc)


def deployment(dep_id: str, status: str, task_definition: str, rollout: str | None, *, running: int = 1,
               desired: int = 1, failed: int = 0, reason: str | None = None) -> dict:
    out = {"id": f"ecs-svc/{dep_id}", "status": status, "taskDefinition": task_definition,
           "desiredCount": desired, "pendingCount": max(desired - running, 0), "runningCount": running,
           "failedTasks": failed, "createdAt": T0, "updatedAt": T0, "launchType": "FARGATE"}
    if rollout:
        out["rolloutState"] = rollout
        out["rolloutStateReason"] = reason or {
            "COMPLETED": f"ECS deployment ecs-svc/{dep_id} completed.",
            "IN_PROGRESS": f"ECS deployment ecs-svc/{dep_id} in progress.",
            "FAILED": "ECS deployment circuit breaker: tasks failed to start."}[rollout]
    return out


def service(task_definition: str, deployments: list[dict], events: tuple[str, ...] = (),
            load_balancer: bool = False) -> dict:
    primary = next(d for d in deployments if d["status"] == "PRIMARY")
    svc = {"serviceArn": SERVICE_ARN, "serviceName": SERVICE, "clusterArn": CLUSTER_ARN, "status": "ACTIVE",
           "desiredCount": primary["desiredCount"], "runningCount": sum(d["runningCount"] for d in deployments),
           "pendingCount": 0, "launchType": "FARGATE", "taskDefinition": task_definition,
           "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": True, "rollback": True},
                                       "maximumPercent": 200, "minimumHealthyPercent": 100},
           "deployments": deployments,
           "events": [{"id": f"e{n}", "createdAt": T0 - dt.timedelta(minutes=n), "message": m}
                      for n, m in enumerate(events)]}
    if load_balancer:
        svc["loadBalancers"] = [{"targetGroupArn": TARGET_GROUP, "containerName": "recsys", "containerPort": 8080}]
    return {"services": [svc], "failures": []}


def stopped_task(task_id: str, task_definition: str, stop_code: str, stopped_reason: str,
                 container_reason: str | None = None, exit_code: int | None = None) -> dict:
    container = {"containerArn": f"{ECS_ARN}:container/{CLUSTER}/{task_id}/c1", "name": "recsys",
                 "lastStatus": "STOPPED"}
    if container_reason:
        container["reason"] = container_reason
    if exit_code is not None:
        container["exitCode"] = exit_code
    return {"taskArn": f"{ECS_ARN}:task/{CLUSTER}/{task_id}", "taskDefinitionArn": task_definition,
            "clusterArn": CLUSTER_ARN, "lastStatus": "STOPPED", "desiredStatus": "STOPPED",
            "stopCode": stop_code, "stoppedReason": stopped_reason, "group": f"service:{SERVICE}",
            "launchType": "FARGATE", "containers": [container]}


def running_task(task_id: str, task_definition: str, ip: str) -> dict:
    return {"taskArn": f"{ECS_ARN}:task/{CLUSTER}/{task_id}", "taskDefinitionArn": task_definition,
            "clusterArn": CLUSTER_ARN, "lastStatus": "RUNNING", "desiredStatus": "RUNNING",
            "group": f"service:{SERVICE}", "launchType": "FARGATE",
            "attachments": [{"id": "a1", "type": "ElasticNetworkInterface", "status": "ATTACHED",
                             "details": [{"name": "subnetId", "value": "subnet-0abc"},
                                         {"name": "privateIPv4Address", "value": ip}]}],
            "containers": [{"name": "recsys", "lastStatus": "RUNNING"}]}


def task_definition(arn: str, image: str = "repo/recsys-serve:old") -> dict:
    return {"taskDefinition": {
        "taskDefinitionArn": arn, "family": "recsys-serve", "revision": int(arn.rsplit(":", 1)[1]),
        "status": "ACTIVE", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256",
        "memory": "512", "containerDefinitions": [{
            "name": "recsys", "image": image, "essential": True,
            "environment": [{"name": "MODEL_VERSION", "value": "v1"}, {"name": "RECSYS_TABLE", "value": "recs"}]}]}}


class Ecs:
    """A stubbed ECS (and ELBv2) client pair: queue responses in the order the roll asks."""

    def __init__(self):
        self.ecs = boto3.client("ecs", region_name=REGION, aws_access_key_id="k", aws_secret_access_key="s",
                                endpoint_url="http://127.0.0.1:9")  # never reached: the Stubber answers
        self.elbv2 = boto3.client("elbv2", region_name=REGION, aws_access_key_id="k", aws_secret_access_key="s",
                                  endpoint_url="http://127.0.0.1:9")
        self.stub = Stubber(self.ecs)
        self.elb_stub = Stubber(self.elbv2)

    def __enter__(self):
        self.stub.activate()
        self.elb_stub.activate()
        return self

    def __exit__(self, *exc):
        self.stub.deactivate()
        self.elb_stub.deactivate()

    def assert_done(self):
        self.stub.assert_no_pending_responses()
        self.elb_stub.assert_no_pending_responses()

    # -- what the roll asks, in order --
    def register(self, image: str = "repo/recsys-serve:new"):
        """register_revision: the service's revision, its definition, the new one, the update."""
        self.describe(service(OLD, [deployment("000", "PRIMARY", OLD, "COMPLETED")]))
        self.stub.add_response("describe_task_definition", task_definition(OLD), {"taskDefinition": OLD})
        self.stub.add_response("register_task_definition", task_definition(NEW, image), None)
        self.update(NEW)

    def describe(self, response: dict):
        self.stub.add_response("describe_services", response, {"cluster": CLUSTER, "services": [SERVICE]})

    def update(self, task_definition: str):
        self.stub.add_response("update_service", {"service": {"serviceArn": SERVICE_ARN, "taskDefinition":
                                                             task_definition}},
                               {"cluster": CLUSTER, "service": SERVICE, "taskDefinition": task_definition})

    def stopped(self, *tasks: dict):
        self.stub.add_response("list_tasks", {"taskArns": [t["taskArn"] for t in tasks]},
                               {"cluster": CLUSTER, "serviceName": SERVICE, "desiredStatus": "STOPPED"})
        if tasks:
            self.stub.add_response("describe_tasks", {"tasks": list(tasks), "failures": []},
                                   {"cluster": CLUSTER, "tasks": [t["taskArn"] for t in tasks]})

    def running(self, *tasks: dict):
        self.stub.add_response("list_tasks", {"taskArns": [t["taskArn"] for t in tasks]},
                               {"cluster": CLUSTER, "serviceName": SERVICE, "desiredStatus": "RUNNING"})
        if tasks:
            self.stub.add_response("describe_tasks", {"tasks": list(tasks), "failures": []},
                                   {"cluster": CLUSTER, "tasks": [t["taskArn"] for t in tasks]})

    def targets(self, *states: tuple[str, str, str | None]):
        """(ip, state, reason) per target of the service's target group."""
        self.elb_stub.add_response("describe_target_health", {"TargetHealthDescriptions": [
            {"Target": {"Id": ip, "Port": 8080}, "HealthCheckPort": "8080",
             "TargetHealth": {"State": state, **({"Reason": reason, "Description": "Health checks failed with "
                                                   "these codes: [503]"} if reason else {})}}
            for ip, state, reason in states]}, {"TargetGroupArn": TARGET_GROUP})


__all__ = ["ANY", "CLUSTER", "Ecs", "NEW", "OLD", "OTHER", "SERVICE", "TARGET_GROUP", "deployment", "running_task",
           "service", "stopped_task"]
