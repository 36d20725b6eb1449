"""The ``recommender_rollback`` DAG: import, policy and structure, then `airflow dags test` on the
moto server with the local serving app (two complete versions, one live)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.0.x (make test-compat)
    from airflow.models.dagbag import DagBag

from recsys.notifiers import FailureAlert
from tests.conftest import free_port

DAG_ID = "recommender_rollback"
ROOT = Path(__file__).resolve().parents[1]
STAGE_PYTHON = os.environ.get("RECSYS_PYTHON") or sys.executable


@pytest.fixture(scope="module")
def dag():
    bag = DagBag(dag_folder="dags")
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def test_policy(dag):
    assert dag.timetable.__class__.__name__ == "NullTimetable"  # schedule=None: manual only
    assert "recsys" in dag.tags and dag.max_active_runs == 1 and dag.catchup is False
    assert dag.doc_md and "Roll the recommender back" in dag.doc_md
    for task in dag.tasks:
        assert task.retries >= 2, task.task_id
        assert isinstance(task.on_failure_callback[0], FailureAlert), task.task_id
    params = dag.params
    assert set(params.keys()) == {"target", "reason", "min_hours"}
    assert params["target"] == ""  # empty: the rollback target the live pointer names


def test_a_reason_is_required():
    from airflow.sdk.definitions.param import ParamsDict

    bag = DagBag(dag_folder="dags")
    params = bag.dags[DAG_ID].params
    with pytest.raises(Exception, match="reason"):
        ParamsDict(params).validate()
    ok = ParamsDict({**{k: params.get_param(k) for k in params}, "reason": "bad recs"})
    assert ok.validate()["reason"] == "bad recs"


def test_the_cli_needs_a_reason_too_unless_it_only_checks(capsys, monkeypatch):
    """``python -m recsys.rollback`` records who and why as the DAG does: no reason, no change (exit 2,
    before any AWS call); ``--dry-run`` changes nothing, so it needs none."""
    from recsys import rollback

    for argv in ([], ["--reason", "  x "]):
        with pytest.raises(SystemExit) as exit_:
            rollback.main(argv)
        assert exit_.value.code == 2 and "--reason WHY is required" in capsys.readouterr().err
    monkeypatch.setattr(rollback, "rollback", lambda settings, to, min_hours, dry_run: {"dry_run": dry_run})
    assert rollback.main(["--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out) == {"dry_run": True}


def test_structure(dag):
    edges = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    assert edges == {"check": ["alert", "roll"], "roll": ["alert", "retain"], "retain": ["versions"],
                     "versions": ["alert"], "alert": []}
    assert dag.get_task("retain").bash_command.startswith("exec ")  # through the compute backend
    assert "tasks.publish versions" in dag.get_task("versions").bash_command


@pytest.mark.parametrize("deploy", ["docker", "ecs"])
def test_the_graph_is_the_same_on_every_deploy_backend(dag, deploy, monkeypatch):
    monkeypatch.setenv("RECSYS_DEPLOY", deploy)
    other = DagBag(dag_folder="dags").dags[DAG_ID]
    assert {t.task_id: sorted(t.downstream_task_ids) for t in other.tasks} == \
        {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}


class _XCom:
    """A task instance whose XCom holds ``values`` by task id (None for a task that never returned)."""

    def __init__(self, values):
        self.values = values

    def xcom_pull(self, task_ids=None, **_):
        return self.values.get(task_ids)


@pytest.mark.parametrize("dag_id, pinned_by, stage", [
    ("recommender_rollback", "check", "retain"), ("recommender_rollback", "check", "versions"),
    ("recommender_pipeline", "plan", "versions"), ("recommender_pipeline", "plan", "train")])
def test_ecs_stages_run_the_jobs_revision_their_run_pinned(dag_id, pinned_by, stage, monkeypatch):
    """With ECS stages the rollback's own stages (which have no ``plan`` task) render the revision
    ``check`` pinned; a stage that runs after its pinning task failed (the pipeline's ``all_done``
    versions page) renders the family, not a template error."""
    monkeypatch.setenv("RECSYS_COMPUTE", "ecs")
    monkeypatch.setenv("RECSYS_ECS_SUBNETS", "subnet-1")
    op = DagBag(dag_folder="dags").dags[dag_id].get_task(stage)
    revision = "arn:aws:ecs:eu-west-1:1:task-definition/recsys-jobs:7"
    rendered = op.render_template(op.task_definition, {"ti": _XCom({pinned_by: {"jobs_task_definition": revision}})})
    assert rendered == revision
    family = op.render_template(op.task_definition, {"ti": _XCom({})})
    assert family == "recsys-jobs"


def test_check_pins_the_jobs_image_for_ecs_stages(monkeypatch):
    from recsys import pipeline, rollback
    from recsys.settings import Settings

    monkeypatch.setenv("RECSYS_ECS_SUBNETS", "subnet-1")
    pin = {"jobs_image": "r@sha256:1", "jobs_task_definition": "arn:aws:ecs:r:1:task-definition/recsys-jobs:7"}
    monkeypatch.setattr(rollback, "rollback", lambda *a, **k: {"from": "v2", "to": "v1", "table": "t", "dry_run": True})
    monkeypatch.setattr(pipeline, "pin_jobs_image", lambda settings: pin if settings.compute == "ecs" else {})
    plan = rollback.check(Settings(compute="ecs"), None, 24, " bad recs ", "alice")
    assert plan == {"from": "v2", "to": "v1", "table": "t", "reason": "bad recs", "by": "alice", **pin}
    assert "jobs_task_definition" not in rollback.check(Settings(compute="local"), None, 24, "bad recs", "alice")


# -- end to end: `airflow dags test` -------------------------------------------------------------

V1, V2 = "v20261101T020000s-aaaaaa", "v20261102T020000s-bbbbbb"


def publish_version(s3, bucket, table_name, version, expires_at):
    """What a finished run leaves: the sealed artifact and the rows' completion marker (the serving
    app answers from the rows; the fallback list serves every user)."""
    from tasks import table

    s3.put_object(Bucket=bucket, Key=f"models/{version}/_complete.json",
                  Body=json.dumps({"model_version": version, "files": {}}).encode())
    s3.put_object(Bucket=bucket, Key=f"models/{version}/meta.json", Body=json.dumps({"user_ids": []}).encode())
    table.write_items(table_name, [table.rec_item("__popular__", version, table.encode_items(["i1"], [1.0], ["I1"]),
                                                  "2026-11-01T00:00:00+00:00", expires_at)])
    table.put_marker(table_name, version, 1, 10, "2026-11-01T00:00:00+00:00", expires_at)


@pytest.fixture
def stack(aws, boto, tmp_path):
    import time

    s3, b = boto("s3"), aws["bucket"]
    far = int(time.time()) + 20 * 86400
    publish_version(s3, b, aws["table"], V1, far)
    publish_version(s3, b, aws["table"], V2, far)
    s3.put_object(Bucket=b, Key="models/_live.json", Body=json.dumps({
        "model_version": V2, "model_uri": f"s3://{b}/models/{V2}", "deployed_at": "2026-11-02T03:00:00+00:00",
        "table": aws["table"], "previous": {"model_version": V1, "model_uri": f"s3://{b}/models/{V1}"}}).encode())
    env = {**os.environ,
           "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "RECSYS_STATE_DIR": str(tmp_path / "state"), "RECSYS_SERVE_PORT": str(free_port()),
           "RECSYS_RETRY_DELAY_SECONDS": "1", "RECSYS_PROJECT_ROOT": str(ROOT), "RECSYS_DEPLOY": "local",
           "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)

    def dags_test(conf: dict) -> subprocess.CompletedProcess:
        return subprocess.run([airflow, "dags", "test", DAG_ID, "-c", json.dumps(conf)], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=600)

    yield {"run": dags_test, "env": env, **aws}
    from recsys.deploy.local import LocalServer
    from recsys.settings import Settings

    LocalServer(Settings(state_dir=str(tmp_path / "state"))).stop()


def live(s3, bucket):
    return json.loads(s3.get_object(Bucket=bucket, Key="models/_live.json")["Body"].read())


@pytest.mark.e2e
def test_rollback_dag_serves_the_target_moves_the_pointer_and_says_who_and_why(stack, boto):
    s3, sqs, sns = boto("s3"), boto("sqs"), boto("sns")
    queue = sqs.create_queue(QueueName="rollback-alerts")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=stack["alert_topic"], Protocol="sqs", Endpoint=arn)

    # an incomplete target is refused before anything changes
    refused = stack["run"]({"target": "v19990101T000000m-000000", "reason": "try the old one"})
    assert refused.returncode != 0
    assert "is incomplete" in refused.stdout + refused.stderr
    assert live(s3, stack["bucket"])["model_version"] == V2

    res = stack["run"]({"reason": "odd recommendations since last night"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    pointer = live(s3, stack["bucket"])
    assert pointer["model_version"] == V1 and pointer["previous"]["model_version"] == V2
    state = json.loads((Path(stack["env"]["RECSYS_STATE_DIR"]) / "serve.json").read_text())
    import urllib.request

    with urllib.request.urlopen(f"{state['url']}/readyz", timeout=5) as resp:
        assert json.loads(resp.read())["model_version"] == V1  # the app serves the target
    history = [json.loads(s3.get_object(Bucket=stack["bucket"], Key=o["Key"])["Body"].read())
               for o in s3.list_objects_v2(Bucket=stack["bucket"], Prefix="runs/live/")["Contents"]]
    assert [(h["model_version"], h["rollback"]["from"], h["rollback"]["reason"]) for h in history] == \
        [(V1, V2, "odd recommendations since last night")]
    page = json.loads(s3.get_object(Bucket=stack["bucket"], Key="versions/versions.json")["Body"].read())
    assert page["live"]["model_version"] == V1 and page["served"][-1]["how"] == "rollback"
    bodies = [json.loads(m["Body"])["Message"] for m in
              sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2, MaxNumberOfMessages=10).get("Messages", [])]
    done = [b for b in bodies if b.startswith(f"The recommender now serves {V1}")]
    assert len(done) == 1 and "Reason: odd recommendations since last night" in done[0] and "By: " in done[0]
