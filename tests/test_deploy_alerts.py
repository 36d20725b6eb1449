"""ECS roll-out against the moto server's ECS API, and SNS failure alerts arriving in SQS.

moto accepts the ECS calls but never starts a task, so a service never reaches
steady state there: the success path stubs the waiter and ECS's verdict (the exact
DescribeServices answers are in tests/test_ecs_roll.py); the failure path uses moto's real
behaviour (the waiter gives up) and checks the roll-back.
"""

from __future__ import annotations

import json
import sys

import pytest

from recsys import deploy, infra
from recsys.notifiers import failure_notifier
from recsys.settings import Settings


@pytest.fixture
def ecs_env(aws, boto):
    settings = Settings()
    out = infra.up(settings, ecs=True, default_subnets=True)
    return settings, boto("ecs"), out


def env_of(taskdef):
    return {e["name"]: e["value"] for e in taskdef["containerDefinitions"][0]["environment"]}


def test_infra_up_is_idempotent(ecs_env):
    settings, ecs, first = ecs_env
    assert infra.up(settings, ecs=True, default_subnets=True) == first
    assert len(ecs.list_task_definitions(familyPrefix=settings.ecs_serve_family)["taskDefinitionArns"]) == 1


def test_deploy_registers_revision_and_rolls_service(ecs_env, monkeypatch):
    settings, ecs, out = ecs_env

    class Stable:
        def wait(self, **kwargs):
            self.kwargs = kwargs

    from recsys import ecs_rollout

    stable = Stable()
    monkeypatch.setattr(ecs, "get_waiter", lambda name: stable if name == "services_stable" else None)
    monkeypatch.setattr(ecs_rollout, "settle", lambda *a, **k: ecs_rollout.Verdict("serving", "stubbed"))
    image = f"{out['repository']}:abc123"
    result = deploy.ecs.deploy_ecs(ecs, settings, image, "v20261123")
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
    from recsys.ecs_rollout import RollFailed

    with pytest.raises(RollFailed, match="does not serve.*Max attempts exceeded.*rolled back"):
        deploy.ecs.deploy_ecs(ecs, settings, f"{out['repository']}:bad", "v2", wait_delay=1, wait_attempts=2)
    after = ecs.describe_services(cluster="recsys", services=["recsys-serve"])["services"][0]["taskDefinition"]
    assert after == before


def test_new_task_definition_requires_the_named_container():
    with pytest.raises(ValueError, match="container 'recsys' not in task definition"):
        deploy.ecs.new_task_definition({"family": "f", "containerDefinitions": [{"name": "web"}]}, "recsys", "i", "v")


def test_new_task_definition_points_serving_at_the_version_table_when_given():
    current = {"family": "f", "containerDefinitions": [
        {"name": "recsys", "image": "old", "environment": [{"name": "MODEL_VERSION", "value": "v1"},
                                                           {"name": "RECSYS_TABLE", "value": "recs"},
                                                           {"name": "OTHER", "value": "kept"}]}]}
    env = {e["name"]: e["value"] for e in
           deploy.ecs.new_task_definition(current, "recsys", "img", "v2", "recs-v2")["containerDefinitions"][0][
               "environment"]}
    assert env == {"MODEL_VERSION": "v2", "RECSYS_TABLE": "recs-v2", "OTHER": "kept"}
    env = {e["name"]: e["value"] for e in
           deploy.ecs.new_task_definition(current, "recsys", "img", "v2")["containerDefinitions"][0]["environment"]}
    assert env["RECSYS_TABLE"] == "recs"  # batch path: the one table stays


def test_image_tag_is_a_content_hash(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.py").write_text("x = 1\n")
    first = deploy.image.image_tag(str(tmp_path))
    assert deploy.image.image_tag(str(tmp_path)) == first
    (tmp_path / "tasks" / "a.py").write_text("x = 2\n")
    assert deploy.image.image_tag(str(tmp_path)) != first


class FakeTI:
    def __init__(self, task_id="snapshot", plan=None, map_index=-1):
        self.task_id, self.map_index, self.dag_id, self.try_number = task_id, map_index, "recommender_pipeline", 1
        self.log_url = ("http://airflow.example:8080/dags/recommender_pipeline/runs/manual__x/tasks/"
                        f"{task_id}?try_number=1")
        self._plan = plan

    def xcom_pull(self, task_ids=None):
        assert task_ids == "plan"
        return self._plan


class FakeRun:
    run_id, run_type, logical_date, clear_number = "manual__x", "manual", "2026-11-23T00:00:00+00:00", 0


def alert_messages(sqs, queue):
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return out
        out += [json.loads(m["Body"]) for m in got]


def subscribe(boto, topic):
    sns, sqs = boto("sns"), boto("sqs")
    queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return sqs, queue


def test_failure_alert_says_why_once_per_run(aws, boto):
    sqs, queue = subscribe(boto, aws["alert_topic"])
    from recsys.operators import stage_failure

    lines = [f"log line {n}" for n in range(30)] + [
        "RECSYS-ERROR: invalid input: | s3://b/raw/ratings/bad.csv, line 3, column 'rating': not a number"]
    err = stage_failure("snapshot", 3, lines)
    plan = {"model_version": "v20261123T000000m-abcdef", "live_version": "v20261122T020000s-123456"}
    alert = failure_notifier(Settings())
    context = {"ti": FakeTI("snapshot", plan), "dag_run": FakeRun(), "exception": err}
    alert(context)
    alert({**context, "ti": FakeTI("train", plan)})  # a second failed task of the same run: no second alert
    got = alert_messages(sqs, queue)
    assert len(got) == 1, got
    body = got[0]
    assert body["TopicArn"] == aws["alert_topic"]
    msg = body["Message"]
    assert "Task snapshot of recommender_pipeline failed." in msg
    assert "Reason: stage snapshot failed (exit code 3, not retried" in msg
    assert "bad.csv, line 3, column 'rating': not a number" in msg.splitlines()[1]
    assert "log line 29" in msg and "log line 10" not in msg  # the last 20 lines, not more
    assert "v20261123T000000m-abcdef" in msg and "Live version: v20261122T020000s-123456" in msg
    assert "Run: http://airflow.example:8080/dags/recommender_pipeline/runs/manual__x" in msg
    assert "nothing after this task ran" not in msg
    assert body["Subject"].startswith("[recsys] recommender_pipeline failed: snapshot")
    # a cleared re-run that fails again alerts again
    again = FakeRun()
    again.clear_number = 1
    alert({**context, "dag_run": again})
    assert len(alert_messages(sqs, queue)) == 1


def test_success_is_silent_unless_asked(aws, boto, monkeypatch):
    from recsys import notifiers

    sqs, queue = subscribe(boto, aws["alert_topic"])
    assert notifiers.notify_success(Settings(), {"model_version": "v1"}) is False
    monkeypatch.setenv("RECSYS_NOTIFY_SUCCESS", "true")
    assert notifiers.notify_success(Settings(), {"model_version": "v1"}) is True
    got = alert_messages(sqs, queue)
    assert len(got) == 1 and '"model_version": "v1"' in got[0]["Message"]


@pytest.mark.parametrize("code, fails_at_once", [(3, True), (1, False)])
def test_local_stage_exit_code_3_fails_without_retry_and_quotes_the_stage(code, fails_at_once, tmp_path):
    from airflow.exceptions import AirflowException

    from recsys.compat import AirflowFailException
    from recsys.operators.local_stage import LocalStageOperator

    script = ("import sys\nfor n in range(25): print('step', n)\n"
              f"print('RECSYS-ERROR: file f.csv, line 3: bad', file=sys.stderr)\nsys.exit({code})\n")
    (tmp_path / "stage.py").write_text(script)
    op = LocalStageOperator(task_id="snapshot", bash_command=f"exec {sys.executable} stage.py", cwd=str(tmp_path))
    with pytest.raises(AirflowException) as info:
        op.execute({})
    assert isinstance(info.value, AirflowFailException) is fails_at_once
    text = str(info.value)
    assert text.startswith(f"stage snapshot failed (exit code {code}") and "file f.csv, line 3: bad" in text
    assert "step 24" in text and "step 4\n" not in text


def test_docker_and_ecs_stages_fail_without_retry_on_exit_code_3(monkeypatch):
    from airflow.providers.docker.exceptions import DockerContainerFailedException
    from airflow.providers.docker.operators.docker import DockerOperator

    from recsys.compat import AirflowFailException
    from recsys.operators.docker_stage import RecsysDockerOperator
    from recsys.operators.ecs_stage import RecsysEcsRunTaskOperator

    def failed(self, context):
        raise DockerContainerFailedException("Docker container failed: {'StatusCode': 3}",
                                             logs=[b"working\n", b"RECSYS-ERROR: bad rating 'five'\n"])

    monkeypatch.setattr(DockerOperator, "execute", failed)
    op = RecsysDockerOperator(task_id="snapshot", image="x", command=["true"])
    with pytest.raises(AirflowFailException, match="bad rating 'five'"):
        op.execute({})

    class Client:
        calls = []

        def describe_tasks(self, **kwargs):
            self.calls.append(kwargs)
            return {"tasks": [{"containers": [{"name": "recsys", "lastStatus": "STOPPED", "exitCode": 3}]}]}

    class Fetcher:
        def get_last_log_messages(self, n):
            assert n == 20
            return ["loading", "RECSYS-ERROR: refusing to train over model version v1: it is live"]

    ecs = RecsysEcsRunTaskOperator(task_id="train", cluster="c", task_definition="td", overrides={})
    client = Client()
    monkeypatch.setattr(RecsysEcsRunTaskOperator, "client", client, raising=False)
    ecs.arn = "arn:aws:ecs:us-east-1:123456789012:task/c/abc"
    ecs.task_log_fetcher = Fetcher()
    with pytest.raises(AirflowFailException, match="refusing to train over model version v1"):
        ecs._check_success_task()
    assert client.calls == [{"cluster": "c", "tasks": [ecs.arn]}]


def test_local_app_gets_an_allow_listed_environment_and_no_inherited_stdin(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://secret")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "jwt-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    env = deploy.local.serving_env(__import__("os").environ)
    assert "AWS_DEFAULT_REGION" in env and not any(k.startswith("AIRFLOW") for k in env)
    seen = {}

    class Proc:
        pid = 4242

    def popen(argv, **kwargs):
        seen.update(kwargs)
        return Proc()

    monkeypatch.setattr(deploy.local.subprocess, "Popen", popen)
    deploy.local.LocalServer(Settings(state_dir=str(tmp_path))).start("v1")
    assert seen["stdin"] is deploy.local.subprocess.DEVNULL and seen["start_new_session"] and seen["close_fds"]
    assert seen["env"]["MODEL_VERSION"] == "v1" and "AIRFLOW__API_AUTH__JWT_SECRET" not in seen["env"]
    assert seen["stdout"].name.endswith("serve.log")


def test_ensure_image_reuses_an_existing_tag_and_explains_a_missing_engine(ecs_env, monkeypatch):
    settings, _, out = ecs_env
    import boto3

    ecr = boto3.client("ecr", region_name="us-east-1")
    monkeypatch.setattr(deploy.image, "docker_engine_available", lambda **kw: (False, "no Docker engine reachable"))
    with pytest.raises(deploy.image.NoDockerEngine, match=r"serving image .*:[0-9a-f]{16} is not in ECR and cannot be "
                                                    r"built here: no Docker engine reachable. .*make push-image"):
        deploy.image.ensure_image(ecr, settings)
    tag = deploy.image.image_tag(settings.project_root)
    ecr.put_image(repositoryName=settings.ecr_repository, imageTag=tag,
                  imageManifest=json.dumps({"schemaVersion": 2, "layers": [],
                                            "config": {"digest": "sha256:" + "0" * 64}}),
                  imageManifestMediaType="application/vnd.docker.distribution.manifest.v2+json")
    assert deploy.image.ensure_image(ecr, settings) == f"{out['repository']}:{tag}"


def test_registry_override_keeps_the_repository_path_and_builds_can_be_turned_off(ecs_env, monkeypatch):
    settings, _, out = ecs_env
    import boto3

    uri = out["repository"]
    assert deploy.image.push_target(settings, uri, "t1") == f"{uri}:t1"
    local = Settings(registry="127.0.0.1:5001/")
    assert deploy.image.push_target(local, uri, "t1") == f"127.0.0.1:5001/{uri.split('/', 1)[1]}:t1"
    monkeypatch.setenv("RECSYS_BUILD_IMAGE", "0")
    monkeypatch.setattr(deploy.image, "docker_engine_available", lambda **kw: pytest.fail("looked for an engine"))
    with pytest.raises(deploy.image.ImageUnavailable, match=r"image builds are off here \(RECSYS_BUILD_IMAGE=0\)"):
        deploy.image.ensure_image(boto3.client("ecr", region_name="us-east-1"), Settings())


def test_image_tag_comes_from_the_variable_then_the_bundle_then_the_sources(tmp_path, monkeypatch):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "requirements").mkdir()
    (tmp_path / "tasks" / "a.py").write_text("x = 1\n")
    (tmp_path / "requirements" / "serve.lock").write_text("fastapi==0.136.3\n")
    settings = Settings(project_root=str(tmp_path))
    assert deploy.image.serving_image_tag(settings) == deploy.image.image_tag(str(tmp_path))
    monkeypatch.setattr(deploy.image, "bundle_info", lambda: {"serving_image_tag": "fromthebundle01"})
    assert deploy.image.serving_image_tag(settings) == "fromthebundle01"
    assert deploy.image.serving_image_tag(Settings(project_root=str(tmp_path), image_tag="pinned")) == "pinned"


def test_a_worker_without_sources_or_bundle_never_hashes_nothing(tmp_path, ecs_env, monkeypatch):
    """An MWAA worker has no tasks/: the old code deployed the hash of nothing (e3b0c442...)."""
    import boto3

    monkeypatch.setattr(deploy.image, "bundle_info", lambda: {})
    with pytest.raises(deploy.image.ImageUnavailable, match="RECSYS_IMAGE_TAG is unset.*make bundle"):
        deploy.image.serving_image_tag(Settings(project_root=str(tmp_path)))
    monkeypatch.setattr(deploy.image, "bundle_info", lambda: {"serving_image_tag": "0123456789abcdef"})
    monkeypatch.setattr(deploy.image, "docker_engine_available", lambda: (True, "engine"))  # an engine does not help
    with pytest.raises(deploy.image.ImageUnavailable, match=r"recsys-serve:0123456789abcdef is not in ECR, and this "
                                                      r"worker cannot build it .*make push-image"):
        deploy.image.ensure_image(boto3.client("ecr", region_name="us-east-1"), Settings(project_root=str(tmp_path)))


def test_docker_stage_forwards_aws_settings_privately(monkeypatch):
    from airflow.providers.docker.operators.docker import DockerOperator

    from recsys.operators.docker_stage import RecsysDockerOperator

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5999")
    monkeypatch.setattr(DockerOperator, "execute", lambda self, context: dict(self._private_environment))
    op = RecsysDockerOperator(task_id="snapshot", image="x", command=["true"])
    assert op.execute({})["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5999"
    assert "AWS_ENDPOINT_URL" not in op.environment  # never in the rendered/serialized fields


def test_rollback_refuses_incomplete_unmarked_and_expiring_versions(aws, boto, monkeypatch):
    import time as _time

    from recsys import pipeline, rollback
    from tasks import table

    settings = Settings()
    s3 = boto("s3")
    live = {"model_version": "v2", "model_uri": f"s3://{aws['bucket']}/models/v2",
            "previous": {"model_version": "v1", "model_uri": f"s3://{aws['bucket']}/models/v1"}}
    pipeline.write_json(settings, pipeline.LIVE_POINTER, live)
    with pytest.raises(rollback.RollbackRefused, match="v1 is incomplete: .*_complete.json is missing"):
        rollback.rollback(settings)
    s3.put_object(Bucket=aws["bucket"], Key="models/v1/_complete.json", Body=b"{}")
    with pytest.raises(rollback.RollbackRefused, match="v1 has no completion marker in table recs-test"):
        rollback.rollback(settings)
    table.put_marker(aws["table"], "v1", 10, 5, "2026-11-23T00:00:00+00:00", int(_time.time()) + 3600)
    with pytest.raises(rollback.RollbackRefused, match=r"rows expire at .*\(within 24 h\)"):
        rollback.rollback(settings)
    table.put_marker(aws["table"], "v1", 10, 5, "2026-11-23T00:00:01+00:00", int(_time.time()) + 10 * 86400)
    assert rollback.rollback(settings, dry_run=True) == {"from": "v2", "to": "v1", "table": "recs-test",
                                                         "dry_run": True}
    with pytest.raises(rollback.RollbackRefused, match="v2 is already live"):
        rollback.rollback(settings, to="v2")
    assert pipeline.read_json(settings, pipeline.LIVE_POINTER) == live  # refusals and dry runs change nothing


def test_alert_quotes_the_failure_when_the_callback_gets_no_exception():
    """Airflow 3.0.x passes no ``exception`` to failure callbacks: the text kept by the stage is used."""
    from recsys.notifiers import failure_message
    from recsys.operators import stage_failure

    stage_failure("train", 3, ["RECSYS-ERROR: refusing to train over model version v1: it is live"])
    _, msg = failure_message({"ti": FakeTI("train", {}), "dag_run": FakeRun()})
    assert "Reason: stage train failed (exit code 3" in msg and "refusing to train over model version v1" in msg


class FakeEngine:
    """The docker APIClient calls deploy_container makes, over an in-memory set of containers."""

    def __init__(self, running: dict | None, fail_create: bool = False):
        self.containers = {"recsys-serve": running} if running else {}
        self.fail_create = fail_create
        self.calls: list[tuple] = []

    def pull(self, repository, tag, stream, decode, auth_config=None):
        self.calls.append(("pull", f"{repository}:{tag}"))
        self.pull_auth = auth_config
        return iter([{"status": "Downloaded"}])

    def inspect_container(self, ref):
        import docker.errors

        if ref not in self.containers:
            raise docker.errors.NotFound(ref)
        return self.containers[ref]

    def stop(self, name, timeout):
        self.calls.append(("stop", name))

    def rename(self, old, new):
        self.calls.append(("rename", old, new))
        self.containers[new] = self.containers.pop(old)

    def start(self, ref):
        self.calls.append(("start", ref))

    def remove_container(self, ref, force):
        self.calls.append(("remove", ref))
        self.containers.pop(ref, None)

    def create_host_config(self, **kwargs):
        return kwargs

    def create_container(self, image, **kwargs):
        import docker.errors

        if self.fail_create:
            raise docker.errors.APIError("Bind for 127.0.0.1:8090 failed: port is already allocated")
        self.containers[kwargs["name"]] = {"Config": {"Image": image, "Labels": kwargs["labels"]}}
        return {"Id": kwargs["name"]}


def test_container_deploy_that_cannot_start_puts_the_running_container_back(monkeypatch):
    """RECSYS_DEPLOY=docker: a new container that cannot even be created (a port taken, a bad
    image) must not leave serving down: the previous container gets its name back and starts."""
    pytest.importorskip("docker")
    running = {"Config": {"Image": "r/recsys-serve:old", "Labels": {"recsys.model_version": "v1"}}}
    engine = FakeEngine(running, fail_create=True)
    waited = []
    monkeypatch.setattr(deploy.smoke, "smoke_test", lambda url, version, *a, **k: waited.append(version))
    with pytest.raises(Exception, match="port is already allocated"):
        deploy.container.deploy_container(Settings(docker_network="recsys"), "r/recsys-serve:new", "v2", "42",
                                          client=engine)
    assert ("rename", "recsys-serve", "recsys-serve-previous") in engine.calls
    assert engine.calls[-2:] == [("rename", "recsys-serve-previous", "recsys-serve"), ("start", "recsys-serve")]
    assert engine.containers["recsys-serve"] is running and waited == ["v1"]


def test_container_deploy_passes_only_aws_and_recsys_variables(monkeypatch):
    pytest.importorskip("docker")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "s3cret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    env = deploy.container.container_env(dict(__import__("os").environ), "v9", "recs")
    assert env["MODEL_VERSION"] == "v9" and env["RECSYS_TABLE"] == "recs" and env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert not [k for k in env if k.startswith("AIRFLOW") or k in ("PATH", "HOME", "PYTHONPATH")]


@pytest.mark.parametrize(("task", "said"), [
    # exact DescribeTasks answers (moto never runs a task): a task that never started has no exit code
    ({"lastStatus": "STOPPED", "stopCode": "TaskFailedToStart",
      "stoppedReason": "ResourceInitializationError: unable to pull secrets or registry auth",
      "containers": [{"name": "recsys", "lastStatus": "STOPPED"}]},
     "never started \\(TaskFailedToStart\\): ResourceInitializationError: unable to pull secrets"),
    ({"lastStatus": "STOPPED", "stopCode": "EssentialContainerExited", "stoppedReason": "Essential container in task "
      "exited", "containers": [{"name": "recsys", "lastStatus": "STOPPED", "exitCode": 137,
                                "reason": "OutOfMemoryError: Container killed due to memory usage"}]},
     "killed for memory \\(OutOfMemoryError: Container killed due to memory usage, exit code 137\\): raise "
     "RECSYS_ECS_JOBS_MEMORY"),
    ({"lastStatus": "STOPPED", "stopCode": "SpotInterruption", "stoppedReason": "Your Spot Task was interrupted.",
      "containers": [{"name": "recsys", "lastStatus": "STOPPED", "exitCode": 143}]},
     "Fargate Spot reclaimed the task .*a retry runs it again"),
])
def test_ecs_stage_failures_say_what_ecs_said_and_stay_retryable(monkeypatch, task, said):
    from airflow.exceptions import AirflowException

    from recsys.compat import AirflowFailException
    from recsys.operators.ecs_stage import RecsysEcsRunTaskOperator

    class Client:
        def describe_tasks(self, **kwargs):
            return {"tasks": [{"taskArn": "arn:aws:ecs:us-east-1:123456789012:task/c/abc", **task}], "failures": []}

        def stop_task(self, **kwargs):
            self.stopped = kwargs
            return {}

    client = Client()
    monkeypatch.setattr(RecsysEcsRunTaskOperator, "client", client, raising=False)
    op = RecsysEcsRunTaskOperator(task_id="train", cluster="c", task_definition="td", overrides={})
    op.arn = "arn:aws:ecs:us-east-1:123456789012:task/c/abc"
    with pytest.raises(AirflowException, match=f"stage train: .*{said}") as raised:
        op._check_success_task()
    assert not isinstance(raised.value, AirflowFailException)  # retried
    op.task_log_fetcher = None
    op.on_kill()  # clear / mark failed: the provider's on_kill stops the ECS task
    assert client.stopped == {"cluster": "c", "task": op.arn, "reason": "Task killed by the user"}
