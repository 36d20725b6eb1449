"""ECS roll-out against the moto server's ECS API, and SNS failure alerts arriving in SQS.

moto accepts the ECS calls but never starts a task, so a service never reaches
steady state there: the success path stubs only the waiter; the failure path
uses moto's real behaviour (the waiter gives up) and checks the roll-back.
"""

from __future__ import annotations

import json

import pytest

from recsys import deploy, infra
from recsys.notifiers import FAILURE_MESSAGE, failure_notifier
from recsys.settings import Settings


@pytest.fixture
def ecs_env(aws, boto):
    settings = Settings()
    out = infra.up(settings, ecs=True)
    return settings, boto("ecs"), out


def env_of(taskdef):
    return {e["name"]: e["value"] for e in taskdef["containerDefinitions"][0]["environment"]}


def test_infra_up_is_idempotent(ecs_env):
    settings, ecs, first = ecs_env
    assert infra.up(settings, ecs=True) == first
    assert len(ecs.list_task_definitions(familyPrefix=settings.ecs_serve_family)["taskDefinitionArns"]) == 1


def test_deploy_registers_revision_and_rolls_service(ecs_env, monkeypatch):
    settings, ecs, out = ecs_env

    class Stable:
        def wait(self, **kwargs):
            self.kwargs = kwargs

    stable = Stable()
    monkeypatch.setattr(ecs, "get_waiter", lambda name: stable if name == "services_stable" else None)
    image = f"{out['repository']}:abc123"
    result = deploy.deploy_ecs(ecs, settings, image, "v20261123")
    service = ecs.describe_services(cluster="recsys", services=["recsys-serve"])["services"][0]
    assert service["taskDefinition"] == result["task_definition"] != result["previous"]
    new = ecs.describe_task_definition(taskDefinition=result["task_definition"])["taskDefinition"]
    old = ecs.describe_task_definition(taskDefinition=result["previous"])["taskDefinition"]
    assert new["family"] == old["family"] and new["revision"] == old["revision"] + 1
    assert new["containerDefinitions"][0]["image"] == image
    assert env_of(new) == {"MODEL_VERSION": "v20261123", "RECSYS_TABLE": settings.table}
    assert new["cpu"] == old["cpu"] and new["networkMode"] == "awsvpc"
    assert stable.kwargs["services"] == ["recsys-serve"] and stable.kwargs["cluster"] == "recsys"


def test_deploy_rolls_back_when_service_never_stabilises(ecs_env):
    settings, ecs, out = ecs_env
    before = ecs.describe_services(cluster="recsys", services=["recsys-serve"])["services"][0]["taskDefinition"]
    with pytest.raises(Exception, match="Max attempts exceeded|failed"):
        deploy.deploy_ecs(ecs, settings, f"{out['repository']}:bad", "v2", wait_delay=1, wait_attempts=2)
    after = ecs.describe_services(cluster="recsys", services=["recsys-serve"])["services"][0]["taskDefinition"]
    assert after == before


def test_new_task_definition_requires_the_named_container():
    with pytest.raises(ValueError, match="container 'recsys' not in task definition"):
        deploy.new_task_definition({"family": "f", "containerDefinitions": [{"name": "web"}]}, "recsys", "i", "v")


def test_new_task_definition_points_serving_at_the_version_table_when_given():
    current = {"family": "f", "containerDefinitions": [
        {"name": "recsys", "image": "old", "environment": [{"name": "MODEL_VERSION", "value": "v1"},
                                                           {"name": "RECSYS_TABLE", "value": "recs"},
                                                           {"name": "OTHER", "value": "kept"}]}]}
    env = {e["name"]: e["value"] for e in
           deploy.new_task_definition(current, "recsys", "img", "v2", "recs-v2")["containerDefinitions"][0]["environment"]}
    assert env == {"MODEL_VERSION": "v2", "RECSYS_TABLE": "recs-v2", "OTHER": "kept"}
    env = {e["name"]: e["value"] for e in
           deploy.new_task_definition(current, "recsys", "img", "v2")["containerDefinitions"][0]["environment"]}
    assert env["RECSYS_TABLE"] == "recs"  # batch path: the one table stays


def test_image_tag_is_a_content_hash(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.py").write_text("x = 1\n")
    first = deploy.image_tag(str(tmp_path))
    assert deploy.image_tag(str(tmp_path)) == first
    (tmp_path / "tasks" / "a.py").write_text("x = 2\n")
    assert deploy.image_tag(str(tmp_path)) != first


def test_failure_alert_arrives_through_sns(aws, boto):
    sns, sqs = boto("sns"), boto("sqs")
    queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=aws["alert_topic"], Protocol="sqs", Endpoint=queue_arn)

    notifier = failure_notifier(Settings())
    assert notifier.target_arn == "recsys-alerts"  # a name: resolved to the ARN when sending
    notifier.message = FAILURE_MESSAGE.replace("{{ ti.task_id }}", "snapshot").replace(
        "{{ exception }}", "ratings.csv, line 3: not a number")
    notifier.notify({})
    messages = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    body = json.loads(messages[0]["Body"])
    assert body["TopicArn"] == aws["alert_topic"]
    assert "Task snapshot of" in body["Message"] and "line 3: not a number" in body["Message"]


def test_ensure_image_reuses_an_existing_tag_and_explains_a_missing_engine(ecs_env, monkeypatch):
    settings, _, out = ecs_env
    import boto3

    ecr = boto3.client("ecr", region_name="us-east-1")
    monkeypatch.setattr(deploy, "docker_engine_available", lambda: (False, "no Docker engine reachable"))
    with pytest.raises(deploy.NoDockerEngine, match="no Docker engine reachable. The image .* would be"):
        deploy.ensure_image(ecr, settings)
    tag = deploy.image_tag(settings.project_root)
    ecr.put_image(repositoryName=settings.ecr_repository, imageTag=tag,
                  imageManifest=json.dumps({"schemaVersion": 2, "layers": [], "config": {"digest": "sha256:" + "0" * 64}}),
                  imageManifestMediaType="application/vnd.docker.distribution.manifest.v2+json")
    assert deploy.ensure_image(ecr, settings) == f"{out['repository']}:{tag}"
