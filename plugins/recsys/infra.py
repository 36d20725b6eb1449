"""Create the pipeline's AWS resources idempotently (plain boto3, no Airflow needed).

``python -m recsys.infra up`` (with ``plugins/`` on ``PYTHONPATH``) creates the
S3 bucket, the DynamoDB table (on-demand, TTL on ``expires_at``), the SNS alert topic,
and with ECS: the ECR repositories (serving, jobs), the log group, the task roles (from the
least-privilege policies in ``deploy/iam/``, unless ``RECSYS_ECS_*_ROLE`` name your own), the
jobs task definition the DAG runs its stages on, and the cluster with a serving task
definition and service behind an Application Load Balancer (target group health-checking
``/readyz``; ``--no-alb`` for none), whose address it prints as ``endpoint``. Fargate needs
subnets: ``RECSYS_ECS_SUBNETS`` (or ``--default-subnets`` for the default VPC's). Running it twice changes nothing.
``python -m recsys.infra policies`` prints the policies with this account's names filled in. It talks to whatever the
standard AWS environment points at: real AWS, or an emulator via ``AWS_ENDPOINT_URL``.
On real AWS most teams own these in Terraform/CloudFormation; the names here are
the defaults of :mod:`recsys.settings`.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from recsys import layout
from recsys.settings import Settings

log = logging.getLogger(__name__)


def ensure_bucket(s3, name: str, region: str) -> str:
    try:
        kwargs = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=name, **kwargs)
        log.info("created bucket %s", name)
    except ClientError as err:
        if err.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    return f"s3://{name}"


def ensure_table(ddb, name: str) -> str:
    try:
        ddb.create_table(
            TableName=name,
            KeySchema=layout.KEY_SCHEMA,
            AttributeDefinitions=layout.ATTRIBUTE_DEFINITIONS,
            BillingMode="PAY_PER_REQUEST",
        )
        log.info("created table %s", name)
    except ClientError as err:
        if err.response["Error"]["Code"] != "ResourceInUseException":
            raise
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True,
                                                                          "AttributeName": layout.ATTR_EXPIRES_AT})
    return ddb.describe_table(TableName=name)["Table"]["TableArn"]


def ensure_repository(ecr, name: str) -> str:
    try:
        repo = ecr.create_repository(repositoryName=name, imageTagMutability="IMMUTABLE")["repository"]
        log.info("created ECR repository %s", name)
    except ClientError as err:
        if err.response["Error"]["Code"] != "RepositoryAlreadyExistsException":
            raise
        repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    return repo["repositoryUri"]


class InfraError(RuntimeError):
    """A resource cannot be made as configured (the message says which setting to change)."""


POLICY_FILES = {"jobs": "jobs-task-role.json", "serve": "serve-task-role.json",
                "execution": "ecs-execution-role.json", "airflow": "mwaa-execution-role.json",
                "push": "push-image.json"}
TRUST_FILE = "ecs-tasks-trust.json"


def policy_dir(settings: Settings) -> Path:
    return Path(settings.project_root) / "deploy" / "iam"


def role_names(settings: Settings) -> dict[str, str]:
    prefix = settings.ecs_cluster
    return {"jobs": f"{prefix}-jobs-task", "serve": f"{prefix}-serve-task", "execution": f"{prefix}-ecs-execution"}


def role_arn(account: str, name: str) -> str:
    return f"arn:aws:iam::{account}:role/{name}"


def policy_values(settings: Settings, account: str, roles: dict[str, str] | None = None) -> dict[str, str]:
    """What the ``${Name}`` placeholders of deploy/iam/*.json stand for."""
    names = role_names(settings)
    roles = roles or {k: role_arn(account, v) for k, v in names.items()}
    return {"Region": settings.region, "Account": account, "Bucket": settings.bucket, "Table": settings.table,
            "AlertTopic": settings.alert_topic, "EcrRepository": settings.ecr_repository,
            "JobsRepository": settings.ecr_jobs_repository, "Cluster": settings.ecs_cluster,
            "Service": settings.ecs_service, "JobsTaskDefinition": settings.ecs_job_task_definition,
            "LogGroup": settings.ecs_log_group, "JobsTaskRoleArn": roles["jobs"],
            "ServeTaskRoleArn": roles["serve"], "ExecutionRoleArn": roles["execution"]}


def render_policy(path: Path, values: dict[str, str]) -> dict:
    """A policy file with its ``${Name}`` placeholders filled (CloudFormation ``Fn::Sub`` syntax)."""
    def sub(match):
        if match.group(1) not in values:
            raise InfraError(f"{path.name}: unknown placeholder ${{{match.group(1)}}}")
        return values[match.group(1)]

    return json.loads(re.sub(r"\$\{(\w+)\}", sub, path.read_text()))


def ensure_role(iam, name: str, trust: dict, policy: dict) -> str:
    try:
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust),
                              Description="recsys pipeline (recsys.infra)")["Role"]["Arn"]
        log.info("created IAM role %s", name)
    except ClientError as err:
        if err.response["Error"]["Code"] != "EntityAlreadyExists":
            raise
        arn = iam.get_role(RoleName=name)["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="recsys", PolicyDocument=json.dumps(policy))  # idempotent
    return arn


def ensure_roles(iam, settings: Settings, account: str) -> dict[str, str]:
    """Task roles and the execution role: the configured ARNs, else made from deploy/iam/."""
    given = {"jobs": settings.ecs_jobs_task_role, "serve": settings.ecs_serve_task_role,
             "execution": settings.ecs_execution_role}
    names = role_names(settings)
    values = policy_values(settings, account, {k: given[k] or role_arn(account, names[k]) for k in names})
    trust = render_policy(policy_dir(settings) / TRUST_FILE, values)
    return {kind: given[kind] or ensure_role(iam, names[kind], trust,
                                             render_policy(policy_dir(settings) / POLICY_FILES[kind], values))
            for kind in names}


def ensure_log_group(logs, name: str) -> str:
    try:
        logs.create_log_group(logGroupName=name)
        logs.put_retention_policy(logGroupName=name, retentionInDays=30)
        log.info("created log group %s", name)
    except ClientError as err:
        if err.response["Error"]["Code"] != "ResourceAlreadyExistsException":
            raise
    return name


def jobs_container(settings: Settings, image: str) -> dict:
    """The stages' container: the DAG overrides its command; logs where the DAG reads them
    (group RECSYS_ECS_LOG_GROUP, stream ``jobs/<container>/<task id>``)."""
    return {
        "name": settings.ecs_container,
        "image": image,
        "essential": True,
        "command": ["python", "-m", "tasks.train", "--help"],
        # the whole task's size (one container); moto's RunTask also needs it at this level
        "cpu": int(settings.ecs_jobs_cpu), "memory": int(settings.ecs_jobs_memory),
        "environment": [{"name": "AWS_DEFAULT_REGION", "value": settings.region},
                        {"name": "RECSYS_TABLE", "value": settings.table},
                        {"name": "RECSYS_TTL_DAYS", "value": str(settings.ttl_days)}],
        "logConfiguration": {"logDriver": "awslogs", "options": {
            "awslogs-group": settings.ecs_log_group, "awslogs-region": settings.region,
            "awslogs-stream-prefix": "jobs"}},
    }


def _same_task_definition(current: dict, wanted: dict) -> bool:
    container_keys = ("name", "image", "cpu", "memory", "logConfiguration")
    return (current.get("status", "ACTIVE") == "ACTIVE"
            and all(current.get(k) == v for k, v in wanted.items() if k != "containerDefinitions")
            and [{k: c.get(k) for k in container_keys} for c in current["containerDefinitions"]]
            == [{k: c.get(k) for k in container_keys} for c in wanted["containerDefinitions"]])


def ensure_jobs_task_definition(ecs, settings: Settings, image: str, roles: dict[str, str]) -> str:
    """The task definition the DAG's stages run on (a new revision only when it changes)."""
    wanted = {"family": settings.ecs_job_task_definition, "networkMode": "awsvpc",
              "requiresCompatibilities": ["FARGATE"], "cpu": settings.ecs_jobs_cpu,
              "memory": settings.ecs_jobs_memory, "taskRoleArn": roles["jobs"],
              "executionRoleArn": roles["execution"], "containerDefinitions": [jobs_container(settings, image)]}
    try:
        current = ecs.describe_task_definition(taskDefinition=settings.ecs_job_task_definition)["taskDefinition"]
    except ClientError:
        current = None
    if current and _same_task_definition(current, wanted):
        return current["taskDefinitionArn"]
    arn = ecs.register_task_definition(**wanted)["taskDefinition"]["taskDefinitionArn"]
    log.info("registered jobs task definition %s (image %s)", arn, image)
    return arn


def serve_container(settings: Settings, image: str, model_version: str) -> dict:
    return {
        "name": settings.ecs_container,
        "image": image,
        "essential": True,
        "command": ["python", "-m", "tasks.serve", "--port", str(settings.serve_port)],
        "portMappings": [{"containerPort": settings.serve_port, "protocol": "tcp"}],
        "environment": [{"name": "MODEL_VERSION", "value": model_version},
                        {"name": "RECSYS_TABLE", "value": settings.table}],
        "healthCheck": {"command": ["CMD-SHELL", f"python -c \"import urllib.request;urllib.request.urlopen("
                                                 f"'http://127.0.0.1:{settings.serve_port}/readyz')\""],
                        "interval": 15, "timeout": 5, "retries": 3, "startPeriod": 20},
        "logConfiguration": {"logDriver": "awslogs", "options": {
            "awslogs-group": settings.ecs_log_group, "awslogs-region": settings.region,
            "awslogs-stream-prefix": "serve"}},
    }


def default_subnets(ec2) -> list[str]:
    """The default VPC's default subnets (``--default-subnets``)."""
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    if not subnets:
        raise InfraError("no default subnets in this account/region: set RECSYS_ECS_SUBNETS")
    return sorted(s["SubnetId"] for s in subnets)


def subnets_for(settings: Settings, ec2, use_default: bool) -> list[str]:
    if settings.ecs_subnets:
        return settings.ecs_subnets
    if use_default:
        return default_subnets(ec2)
    raise InfraError("RECSYS_ECS_SUBNETS is not set: Fargate tasks (the serving service and the DAG's job "
                     "tasks) need subnets. Set it to comma-separated subnet ids with a route to S3, DynamoDB and "
                     "ECR (e.g. private subnets with VPC endpoints or a NAT), or pass --default-subnets to use "
                     "the default VPC's.")


HEALTH_CHECK_GRACE_SECONDS = 60  # the app loads its model before /readyz answers 200


def _vpc_of(ec2, subnets: list[str]) -> str:
    vpcs = {s["VpcId"] for s in ec2.describe_subnets(SubnetIds=subnets)["Subnets"]}
    if len(vpcs) != 1:
        raise InfraError(f"subnets {','.join(subnets)} are in {len(vpcs)} VPCs: the load balancer and the "
                         "service need subnets of one VPC (RECSYS_ECS_SUBNETS, RECSYS_ALB_SUBNETS)")
    return vpcs.pop()


def ensure_security_group(ec2, name: str, vpc: str, description: str) -> str:
    found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]},
                                                  {"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"]
    if found:
        return found[0]["GroupId"]
    group = ec2.create_security_group(GroupName=name, Description=description, VpcId=vpc)["GroupId"]
    log.info("created security group %s (%s)", name, group)
    return group


def allow_in(ec2, group: str, port: int, *, cidr: str | None = None, source_group: str | None = None) -> None:
    """One TCP ingress rule; a rule that exists already is kept (EC2 refuses duplicates)."""
    rule: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
    if cidr:
        rule["IpRanges"] = [{"CidrIp": cidr}]
    else:
        rule["UserIdGroupPairs"] = [{"GroupId": source_group}]
    try:
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[rule])
    except ClientError as err:
        if err.response["Error"]["Code"] != "InvalidPermission.Duplicate":
            raise


def _not_found(err: ClientError, code: str) -> bool:
    return err.response["Error"]["Code"] == code


def balancer_subnets(settings: Settings, task_subnets: list[str]) -> list[str]:
    subnets = settings.alb_subnets or task_subnets
    if len(subnets) < 2:
        raise InfraError(f"an Application Load Balancer needs subnets in two Availability Zones at least; got "
                         f"{','.join(subnets)}: set RECSYS_ALB_SUBNETS (public subnets for an internet-facing one)")
    return subnets


def ensure_load_balancer(elbv2, ec2, settings: Settings, task_subnets: list[str]) -> dict:
    """The service's stable endpoint: an Application Load Balancer, an ``ip`` target group (Fargate
    tasks register by address) health-checking ``/readyz``, a listener forwarding to it, and
    security groups letting the listener port in and the load balancer reach the app's port.
    Each is found by name first (adopted), made only when missing."""
    name = settings.alb_name
    subnets = balancer_subnets(settings, task_subnets)
    vpc = _vpc_of(ec2, sorted(set(subnets) | set(task_subnets)))
    https = bool(settings.alb_certificate_arn)
    port = 443 if https else 80
    try:
        lb = elbv2.describe_load_balancers(Names=[name])["LoadBalancers"][0]
        if lb["Type"] != "application" or lb["VpcId"] != vpc:
            raise InfraError(f"load balancer {name} exists but is a {lb['Type']} one in {lb['VpcId']}, not an "
                             f"application one in {vpc}: set RECSYS_ALB_NAME to another name")
        lb_groups = lb.get("SecurityGroups", [])
    except ClientError as err:
        if not _not_found(err, "LoadBalancerNotFound"):
            raise
        alb_group = ensure_security_group(ec2, f"{name}-alb", vpc, f"{name} load balancer: listener port in")
        cidr = "0.0.0.0/0" if settings.alb_scheme == "internet-facing" else \
            ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlock"]
        allow_in(ec2, alb_group, port, cidr=cidr)
        lb = elbv2.create_load_balancer(Name=name, Subnets=subnets, SecurityGroups=[alb_group],
                                        Scheme=settings.alb_scheme, Type="application",
                                        IpAddressType="ipv4")["LoadBalancers"][0]
        lb_groups = [alb_group]
        log.info("created load balancer %s (%s)", name, lb["DNSName"])
    tasks_group = ensure_security_group(ec2, f"{name}-tasks", vpc, f"{name} tasks: app port from the load balancer")
    for group in lb_groups:
        allow_in(ec2, tasks_group, settings.serve_port, source_group=group)

    health = {"HealthCheckProtocol": "HTTP", "HealthCheckPath": "/readyz", "HealthCheckIntervalSeconds": 15,
              "HealthyThresholdCount": 2, "UnhealthyThresholdCount": 3, "Matcher": {"HttpCode": "200"}}
    try:
        group = elbv2.describe_target_groups(Names=[name])["TargetGroups"][0]
        if group["TargetType"] != "ip" or group["VpcId"] != vpc or group["Port"] != settings.serve_port:
            raise InfraError(f"target group {name} exists with target type {group['TargetType']}, port "
                             f"{group['Port']} in {group['VpcId']}; Fargate tasks need type ip, port "
                             f"{settings.serve_port} in {vpc}: set RECSYS_ALB_NAME to another name")
        if (group.get("HealthCheckPath"), group.get("Matcher")) != ("/readyz", {"HttpCode": "200"}):
            elbv2.modify_target_group(TargetGroupArn=group["TargetGroupArn"], **health)
            log.info("target group %s now health-checks /readyz", name)
    except ClientError as err:
        if not _not_found(err, "TargetGroupNotFound"):
            raise
        group = elbv2.create_target_group(Name=name, Protocol="HTTP", Port=settings.serve_port, VpcId=vpc,
                                          TargetType="ip", **health)["TargetGroups"][0]
        log.info("created target group %s", name)
    group_arn = group["TargetGroupArn"]

    listeners = [x for x in elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
                 if x["Port"] == port]
    if listeners:
        listener = listeners[0]
        targets = [a.get("TargetGroupArn") for a in listener.get("DefaultActions", [])]
        if targets != [group_arn]:
            raise InfraError(f"the listener on port {port} of load balancer {name} does not forward to target "
                             f"group {name} (its default action: {targets}): point it there, or set "
                             "RECSYS_ALB_NAME to another name")
    else:
        kwargs: dict[str, Any] = {"LoadBalancerArn": lb["LoadBalancerArn"], "Protocol": "HTTPS" if https else "HTTP",
                                  "Port": port, "DefaultActions": [{"Type": "forward", "TargetGroupArn": group_arn}]}
        if https:
            kwargs.update(Certificates=[{"CertificateArn": settings.alb_certificate_arn}],
                          SslPolicy="ELBSecurityPolicy-TLS13-1-2-2021-06")
        listener = elbv2.create_listener(**kwargs)["Listeners"][0]
        log.info("created %s listener on port %d", kwargs["Protocol"], port)
    return {"load_balancer": lb["LoadBalancerArn"], "target_group": group_arn,
            "listener": listener["ListenerArn"], "security_groups": {"alb": lb_groups, "tasks": tasks_group},
            "endpoint": f"{'https' if https else 'http'}://{lb['DNSName']}"}


FARGATE_PROVIDERS = ("FARGATE", "FARGATE_SPOT")


def ensure_cluster(ecs, cluster: str) -> list[str]:
    """Create the cluster with FARGATE and FARGATE_SPOT, or associate whichever of them an existing
    (adopted) cluster lacks: ``RECSYS_ECS_CAPACITY=fargate-spot`` runs the stages through a
    FARGATE_SPOT strategy, which RunTask refuses on a cluster without it. An existing cluster is
    not passed to CreateCluster again (moto replaces it, losing its providers), and
    PutClusterCapacityProviders replaces the whole list and default strategy: both are read
    first and kept. Returns the cluster's capacity providers."""
    found = [c for c in ecs.describe_clusters(clusters=[cluster]).get("clusters", []) if c.get("status") == "ACTIVE"]
    if not found:
        ecs.create_cluster(clusterName=cluster, capacityProviders=list(FARGATE_PROVIDERS))
        log.info("created ECS cluster %s with %s", cluster, ", ".join(FARGATE_PROVIDERS))
        return list(FARGATE_PROVIDERS)
    have = list(found[0].get("capacityProviders") or [])
    missing = [p for p in FARGATE_PROVIDERS if p not in have]
    if missing:
        ecs.put_cluster_capacity_providers(
            cluster=cluster, capacityProviders=have + missing,
            defaultCapacityProviderStrategy=found[0].get("defaultCapacityProviderStrategy") or [])
        log.info("associated %s with ECS cluster %s", ", ".join(missing), cluster)
    return have + missing


def ensure_ecs(ecs, settings: Settings, repository_uri: str, roles: dict[str, str], subnets: list[str],
               alb: dict | None = None) -> dict:
    """The cluster and the serving service (behind ``alb``'s target group when given). A service
    made earlier without a load balancer is attached to it with UpdateService, which ECS allows
    for rolling-update services (it starts a new deployment whose tasks register as targets)."""
    ensure_cluster(ecs, settings.ecs_cluster)
    groups = settings.ecs_security_groups + ([alb["security_groups"]["tasks"]] if alb else [])
    network = {"awsvpcConfiguration": {"subnets": subnets, "securityGroups": groups, "assignPublicIp": "DISABLED"}}
    balancers = ([{"targetGroupArn": alb["target_group"], "containerName": settings.ecs_container,
                   "containerPort": settings.serve_port}] if alb else [])
    services = ecs.describe_services(cluster=settings.ecs_cluster, services=[settings.ecs_service])["services"]
    active = [s for s in services if s.get("status") == "ACTIVE"]
    if active:
        service = active[0]
        if balancers and not service.get("loadBalancers"):
            controller = service.get("deploymentController", {}).get("type", "ECS")
            if controller != "ECS":
                raise InfraError(f"service {settings.ecs_service} uses the {controller} deployment controller, "
                                 "whose load balancers ECS cannot change: attach target group "
                                 f"{settings.alb_name} through it, or delete the service and run `infra up` again")
            ecs.update_service(cluster=settings.ecs_cluster, service=settings.ecs_service, loadBalancers=balancers,
                               healthCheckGracePeriodSeconds=HEALTH_CHECK_GRACE_SECONDS,
                               networkConfiguration=network)
            log.info("attached service %s to target group %s", settings.ecs_service, settings.alb_name)
        return {"cluster": settings.ecs_cluster, "service": service["serviceArn"],
                "task_definition": service["taskDefinition"]}
    taskdef = ecs.register_task_definition(
        family=settings.ecs_serve_family, networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="256", memory="512", containerDefinitions=[serve_container(settings, f"{repository_uri}:bootstrap",
                                                                       "none")],
        taskRoleArn=roles["serve"], executionRoleArn=roles["execution"],
    )["taskDefinition"]["taskDefinitionArn"]
    extra: dict[str, Any] = ({"loadBalancers": balancers, "healthCheckGracePeriodSeconds": HEALTH_CHECK_GRACE_SECONDS}
                             if balancers else {})
    service = ecs.create_service(
        cluster=settings.ecs_cluster, serviceName=settings.ecs_service, taskDefinition=taskdef,
        desiredCount=1, launchType="FARGATE", networkConfiguration=network,
        deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True},
                                 "maximumPercent": 200, "minimumHealthyPercent": 100},
        **extra,
    )["service"]
    log.info("created ECS service %s", settings.ecs_service)
    return {"cluster": settings.ecs_cluster, "service": service["serviceArn"], "task_definition": taskdef}


def ensure_topic(sns, name: str) -> str:
    return sns.create_topic(Name=name)["TopicArn"]  # idempotent: returns the existing ARN


def up(settings: Settings | None = None, session: boto3.Session | None = None, ecs: bool = True,
       default_subnets: bool = False, alb: bool = True) -> dict:
    settings = settings or Settings()
    session = session or boto3.Session(region_name=settings.region)
    subnets = subnets_for(settings, session.client("ec2"), default_subnets) if ecs else []  # fail before creating
    if ecs and alb:
        balancer_subnets(settings, subnets)
    out: dict[str, Any] = {
        "bucket": ensure_bucket(session.client("s3"), settings.bucket, settings.region),
        "table": ensure_table(session.client("dynamodb"), settings.table),
        "alert_topic": ensure_topic(session.client("sns"), settings.alert_topic),
    }
    if ecs:
        account = session.client("sts").get_caller_identity()["Account"]
        out["repository"] = ensure_repository(session.client("ecr"), settings.ecr_repository)
        out["jobs_repository"] = ensure_repository(session.client("ecr"), settings.ecr_jobs_repository)
        out["log_group"] = ensure_log_group(session.client("logs"), settings.ecs_log_group)
        out["roles"] = ensure_roles(session.client("iam"), settings, account)
        image = settings.job_image if "/" in settings.job_image else f"{out['jobs_repository']}:latest"
        out["jobs_task_definition"] = ensure_jobs_task_definition(session.client("ecs"), settings, image,
                                                                  out["roles"])
        balancer = ensure_load_balancer(session.client("elbv2"), session.client("ec2"), settings, subnets) \
            if alb else None
        out["ecs"] = ensure_ecs(session.client("ecs"), settings, out["repository"], out["roles"], subnets, balancer)
        if balancer:
            out["load_balancer"] = balancer
            out["endpoint"] = balancer["endpoint"]
        out["subnets"] = subnets
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys.infra", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "policies"])
    parser.add_argument("--no-ecs", action="store_true", help="skip ECR and ECS (S3, DynamoDB, SNS only)")
    parser.add_argument("--no-alb", action="store_true",
                        help="no load balancer in front of the service (no endpoint outside its VPC)")
    parser.add_argument("--default-subnets", action="store_true",
                        help="without RECSYS_ECS_SUBNETS, put Fargate tasks in the default VPC's default subnets")
    parser.add_argument("--account", help="policies: the account id (default: the caller's, from STS)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings()
    try:
        if args.command == "policies":
            account = args.account or boto3.client("sts", region_name=settings.region).get_caller_identity()["Account"]
            values = policy_values(settings, account)
            print(json.dumps({kind: render_policy(policy_dir(settings) / f, values)
                              for kind, f in {**POLICY_FILES, "trust": TRUST_FILE}.items()}, indent=2))
            return 0
        print(json.dumps(up(settings, ecs=not args.no_ecs, default_subnets=args.default_subnets,
                            alb=not args.no_alb), indent=2))
    except InfraError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
