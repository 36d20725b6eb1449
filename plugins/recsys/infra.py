"""Create the pipeline's AWS resources idempotently (plain boto3, no Airflow needed).

``python -m recsys.infra up`` (with ``plugins/`` on ``PYTHONPATH``) creates the
S3 bucket, the DynamoDB table (on-demand, TTL on ``expires_at``), the ECR
repository, the ECS cluster with a serving task definition and service, and the
SNS alert topic; running it twice changes nothing. It talks to whatever the
standard AWS environment points at: real AWS, or an emulator via ``AWS_ENDPOINT_URL``.
On real AWS most teams own these in Terraform/CloudFormation; the names here are
the defaults of :mod:`recsys.settings`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import boto3
from botocore.exceptions import ClientError

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
            KeySchema=[{"AttributeName": "user_id", "KeyType": "HASH"},
                       {"AttributeName": "model_version", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "user_id", "AttributeType": "S"},
                                  {"AttributeName": "model_version", "AttributeType": "S"}],
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
                                                                          "AttributeName": "expires_at"})
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
    """The default VPC's default subnets: where Fargate tasks go when none are configured."""
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    if not subnets:
        raise RuntimeError("no default subnets in this account/region: set RECSYS_ECS_SUBNETS")
    return sorted(s["SubnetId"] for s in subnets)


def ensure_ecs(ecs, settings: Settings, repository_uri: str, ec2=None) -> dict:
    ecs.create_cluster(clusterName=settings.ecs_cluster)  # idempotent in ECS
    services = ecs.describe_services(cluster=settings.ecs_cluster, services=[settings.ecs_service])["services"]
    active = [s for s in services if s.get("status") == "ACTIVE"]
    if active:
        return {"cluster": settings.ecs_cluster, "service": active[0]["serviceArn"],
                "task_definition": active[0]["taskDefinition"]}
    extra = {"executionRoleArn": settings.ecs_execution_role} if settings.ecs_execution_role else {}
    taskdef = ecs.register_task_definition(
        family=settings.ecs_serve_family, networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
        cpu="256", memory="512", containerDefinitions=[serve_container(settings, f"{repository_uri}:bootstrap",
                                                                       "none")], **extra,
    )["taskDefinition"]["taskDefinitionArn"]
    network = {"awsvpcConfiguration": {"subnets": settings.ecs_subnets or default_subnets(ec2),
                                       "securityGroups": settings.ecs_security_groups,
                                       "assignPublicIp": "DISABLED"}}
    service = ecs.create_service(
        cluster=settings.ecs_cluster, serviceName=settings.ecs_service, taskDefinition=taskdef,
        desiredCount=1, launchType="FARGATE", networkConfiguration=network,
        deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True},
                                 "maximumPercent": 200, "minimumHealthyPercent": 100},
    )["service"]
    log.info("created ECS service %s", settings.ecs_service)
    return {"cluster": settings.ecs_cluster, "service": service["serviceArn"], "task_definition": taskdef}


def ensure_topic(sns, name: str) -> str:
    return sns.create_topic(Name=name)["TopicArn"]  # idempotent: returns the existing ARN


def up(settings: Settings | None = None, session: boto3.Session | None = None, ecs: bool = True) -> dict:
    settings = settings or Settings()
    session = session or boto3.Session(region_name=settings.region)
    out = {
        "bucket": ensure_bucket(session.client("s3"), settings.bucket, settings.region),
        "table": ensure_table(session.client("dynamodb"), settings.table),
        "alert_topic": ensure_topic(session.client("sns"), settings.alert_topic),
    }
    if ecs:
        out["repository"] = ensure_repository(session.client("ecr"), settings.ecr_repository)
        out["ecs"] = ensure_ecs(session.client("ecs"), settings, out["repository"], session.client("ec2"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys.infra", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--no-ecs", action="store_true", help="skip ECR and ECS (S3, DynamoDB, SNS only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(json.dumps(up(ecs=not args.no_ecs), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
