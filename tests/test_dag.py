"""The DAG in three layers (import, policy, structure) and the operators each backend builds."""

from __future__ import annotations

import pytest

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.0.x (make test-compat)
    from airflow.models.dagbag import DagBag
from airflow.providers.amazon.aws.operators.ecs import EcsRunTaskOperator
from airflow.providers.standard.operators.bash import BashOperator

from recsys import compute, pipeline, stages
from recsys.notifiers import FailureAlert
from recsys.settings import Settings

DAG_ID = "recommender_pipeline"


@pytest.fixture(scope="module")
def dagbag():
    return DagBag(dag_folder="dags")


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags[DAG_ID]


def test_import_zero_errors(dagbag):
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dags) == [DAG_ID, "recommender_rollback"]


def test_policy(dag):
    assert dag.tags and "recsys" in dag.tags
    assert dag.catchup is False and dag.max_active_runs == 1
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"  # real data intervals
    assert dag.timetable.summary == "0 2 * * *"
    assert dag.start_date.tzinfo is not None
    assert dag.doc_md and "Nightly recommender pipeline" in dag.doc_md
    for task in dag.tasks:
        assert task.retries >= 2, task.task_id
        assert isinstance(task.on_failure_callback[0], FailureAlert), task.task_id
    params = dag.params
    assert {"top_n", "factors", "sweeps", "shards", "tolerance", "force_promote", "deploy"} <= set(params.keys())


def test_structure(dag):
    edges = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    chain = ["plan", "snapshot", "train", "gate", "shard_commands", "score", "publish", "latest_only",
             "deploy_enabled", "build_image", "deploy", "record_live", "retain", "versions", "summary"]
    for up, down in zip(chain, chain[1:], strict=False):
        assert down in edges[up], f"{up} -> {down}"
    assert dag.get_task("latest_only").__class__.__name__ == "LatestOnlyOperator"
    assert dag.get_task("summary").trigger_rule == "none_failed"
    assert dag.get_task("snapshot").bash_command.startswith("exec ")  # local backend by default


ARGV = ["python", "-m", "tasks.train", "--ratings", "s3://b/datasets/ds=2026-11-23", "--out", "s3://b/models/v1"]
# the stage settings every backend appends (recsys.stages.STAGE_FLAGS; defaults)
RUN = [*ARGV, "--threads", "0"]
SCORE_FLAGS = ["--threads", "0", "--min-ratings", "1", "--ttl-days", "30"]


def test_local_backend_runs_the_argv_with_this_python(monkeypatch):
    op = compute.compute_task("train", ARGV, Settings(compute="local", python="/venv/bin/python"))
    assert isinstance(op, BashOperator)
    assert op.bash_command == ("exec /venv/bin/python -m tasks.train --ratings s3://b/datasets/ds=2026-11-23 "
                               "--out s3://b/models/v1 --threads 0")


def test_docker_backend_builds_docker_operator():
    # MWAA ships no docker provider (make test-compat): skipped there, never in the main suite
    DockerOperator = pytest.importorskip("airflow.providers.docker.operators.docker").DockerOperator
    op = compute.compute_task("train", ARGV, Settings(compute="docker", job_image="recsys-jobs:1"))
    assert isinstance(op, DockerOperator)
    assert op.command == RUN and op.image == "recsys-jobs:1"
    assert "AWS_SECRET_ACCESS_KEY" not in (op.environment or {})  # resolved at run time, never serialized


def test_ecs_backend_builds_run_task_with_the_same_command(monkeypatch):
    monkeypatch.setenv("RECSYS_ECS_SUBNETS", "subnet-1,subnet-2")
    monkeypatch.setenv("RECSYS_ECS_SECURITY_GROUPS", "sg-1")
    op = compute.compute_task("train", ARGV, Settings(compute="ecs"))
    assert isinstance(op, EcsRunTaskOperator)
    assert op.overrides == {"containerOverrides": [{"name": "recsys", "command": RUN}]}
    assert op.launch_type == "FARGATE" and op.cluster == "recsys"
    assert op.task_definition == compute.jobs_task_definition(Settings(compute="ecs"))  # the run's pin
    assert op.network_configuration == {"awsvpcConfiguration": {
        "subnets": ["subnet-1", "subnet-2"], "securityGroups": ["sg-1"], "assignPublicIp": "DISABLED"}}
    assert op.awslogs_group == "/ecs/recsys" and op.reattach is True


@pytest.mark.parametrize("backend, expected", [
    ("local", "exec /py -m tasks.score --shard 1/2 " + " ".join(SCORE_FLAGS)),
    ("docker", ["python", "-m", "tasks.score", "--shard", "1/2", *SCORE_FLAGS]),
    ("ecs", {"containerOverrides": [{"name": "recsys", "command": ["python", "-m", "tasks.score", "--shard", "1/2",
                                                                    *SCORE_FLAGS]}]}),
])
def test_mapped_values_per_backend(backend, expected):
    argvs = [["python", "-m", "tasks.score", "--shard", "0/2"], ["python", "-m", "tasks.score", "--shard", "1/2"]]
    values = compute.mapped_values(argvs, Settings(compute=backend, python="/py", ecs_subnets=["subnet-1"]))
    assert len(values) == 2 and values[1] == expected


def test_bad_backend_name_is_rejected():
    with pytest.raises(ValueError, match="RECSYS_COMPUTE must be local, docker or ecs"):
        Settings(compute="lambda")


def test_ecs_backend_without_subnets_is_rejected_at_parse_time_naming_the_variable():
    """Fargate refuses a task without a network configuration: say so before any run starts."""
    with pytest.raises(ValueError, match="RECSYS_COMPUTE=ecs needs RECSYS_ECS_SUBNETS"):
        Settings(compute="ecs")


def test_plan_keys_data_by_date_and_model_by_version():
    s = Settings(bucket="b", table="t")
    live = {"model_version": "v20261122T020000s-aaaaaa", "model_uri": "s3://b/models/v20261122T020000s-aaaaaa"}
    p = pipeline.plan("2026-11-23", "v20261123T020000s-bbbbbb", {"top_n": 5, "shards": 3}, s, live)
    assert p["model_version"] == "v20261123T020000s-bbbbbb" and p["model"] == "s3://b/models/v20261123T020000s-bbbbbb"
    assert p["snapshot"] == "s3://b/datasets/ds=2026-11-23" and p["quarantine"] == "s3://b/quarantine/ds=2026-11-23"
    assert p["champion"] == live["model_uri"] and p["live_version"] == live["model_version"]
    assert p["shard_manifests"][0] == "s3://b/models/v20261123T020000s-bbbbbb/shards/0000-of-0003.json"
    assert p["metrics"] == p["model"] + "/metrics.json" and p["table"] == "t"
    assert p["summary"] == "s3://b/runs/ds=2026-11-23/v20261123T020000s-bbbbbb/summary.json"
    argvs = stages.score(p)
    assert [a[a.index("--shard") + 1] for a in argvs] == ["0/3", "1/3", "2/3"]
    assert all(a[a.index("--table") + 1] == "t" for a in argvs)


def test_the_airflow_side_and_the_stages_read_one_layout():
    """recsys.layout is tasks.layout (one file): what plan expects is what the stages write."""
    import os

    from recsys import layout as airflow_side
    from tasks import layout

    assert os.path.samefile(airflow_side.__file__, layout.__file__)
    s = Settings(bucket="b")
    p = pipeline.plan("2026-11-23", "v9", {"shards": 4}, s, None)
    from tasks.live import pointer_uri

    assert pointer_uri(p["model"]) == s.s3(airflow_side.LIVE_POINTER)
    shards = pytest.importorskip("tasks.shards", reason="the stages' libraries (make test-compat has only Airflow's)")
    assert p["shard_manifests"] == [shards.manifest_uri(p["model"], i, 4) for i in range(4)]


def test_plan_refuses_the_live_version_and_the_rollback_target():
    s = Settings(bucket="b")
    live = {"model_version": "v2", "model_uri": "s3://b/models/v2",
            "previous": {"model_version": "v1", "model_uri": "s3://b/models/v1"}}
    for version, role in (("v2", "is live"), ("v1", "is the rollback target")):
        with pytest.raises(pipeline.LiveVersionRefused, match=f"model version {version} {role}.*immutable"):
            pipeline.plan("2026-11-23", version, {}, s, live)
    assert pipeline.plan("2026-11-23", "v3", {}, s, live)["model_version"] == "v3"


def test_model_version_is_the_runs_own():
    import datetime as dt

    from airflow.utils.types import DagRunType

    t = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.timezone.utc)
    nightly = pipeline.model_version_for("scheduled__2026-11-23T02:00:00+00:00", DagRunType.SCHEDULED, t)
    assert nightly.startswith("v20261123T020000s-") and len(nightly) == len("v20261123T020000s-") + 6
    # a retry / cleared re-run of the same run: the same version
    assert pipeline.model_version_for("scheduled__2026-11-23T02:00:00+00:00", "scheduled", t) == nightly
    # a manual run at the same instant, or a backfill reprocessing that run: never the same
    manual = pipeline.model_version_for("manual__2026-11-23T02:00:00+00:00", DagRunType.MANUAL, t)
    backfill = pipeline.model_version_for("scheduled__2026-11-23T02:00:00+00:00", DagRunType.BACKFILL_JOB, t)
    assert len({nightly, manual, backfill}) == 3 and backfill.startswith("v20261123T020000b-")
    # two manual runs in the same second (no logical date): the run id tells them apart
    a = pipeline.model_version_for("manual__2026-11-23T02:00:00.1+00:00", "manual", t)
    b = pipeline.model_version_for("manual__2026-11-23T02:00:00.2+00:00", "manual", t)
    assert a != b
    # the version is a valid DynamoDB table-name suffix and S3 key segment
    import re

    assert re.fullmatch(r"[A-Za-z0-9._-]+", nightly)


@pytest.mark.parametrize("run_type, deploy, ok", [
    ("manual", True, True), ("scheduled", True, True), ("backfill", True, False),
    ("manual", False, False), ("backfill", False, False),
])
def test_should_deploy(run_type, deploy, ok):
    assert pipeline.should_deploy(run_type, deploy)[0] is ok


def skipped_by(dag, gate: str) -> set[str]:
    """Tasks a skip of ``gate``'s direct downstream leaves skipped, by their trigger rules."""
    skipped = set(dag.get_task(gate).downstream_task_ids)
    changed = True
    while changed:
        changed = False
        for task in dag.tasks:
            if task.task_id in skipped or task.task_id == gate:
                continue
            ups = task.upstream_task_ids
            if task.trigger_rule == "all_success" and ups & skipped:
                skipped.add(task.task_id)
                changed = True
    return skipped


@pytest.mark.parametrize("env", [{"RECSYS_DEPLOY": "docker"}, {"RECSYS_DEPLOY": "ecs"},
                                 {"RECSYS_COMPUTE": "docker"},
                                 {"RECSYS_COMPUTE": "ecs", "RECSYS_ECS_SUBNETS": "subnet-1"}],
                         ids=["deploy=docker", "deploy=ecs", "compute=docker", "compute=ecs"])
def test_the_graph_is_the_same_whatever_the_backends(dag, env, monkeypatch):
    """Backends change which operator runs a task, never the tasks, their edges or trigger rules."""
    if env.get("RECSYS_COMPUTE") == "docker":
        pytest.importorskip("airflow.providers.docker")  # MWAA ships no docker provider (make test-compat)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    other = DagBag(dag_folder="dags").dags[DAG_ID]

    def shape(d):
        return {t.task_id: (sorted(t.downstream_task_ids), t.trigger_rule) for t in d.tasks}

    assert shape(other) == shape(dag)


def test_deploy_gates_skip_only_the_deploy_path(dag):
    assert dag.get_task("deploy_enabled").ignore_downstream_trigger_rules is False
    path = {"build_image", "deploy", "record_live"}
    assert skipped_by(dag, "deploy_enabled") == path
    assert skipped_by(dag, "latest_only") == path | {"deploy_enabled"}
    for task in ("summary", "retain"):
        assert task not in skipped_by(dag, "latest_only")


def test_heavy_stages_run_one_at_a_time_across_runs(dag):
    for task in ("snapshot", "train", "publish"):
        assert dag.get_task(task).max_active_tis_per_dag == 1, task
    assert dag.get_task("score").partial_kwargs["max_active_tis_per_dag"] == 2


def test_stages_declare_their_assets(dag):
    from recsys.compat import ASSET_OUTLETS

    if not ASSET_OUTLETS:
        assert all(not dag.get_task(t).outlets for t in ("snapshot", "train", "publish", "record_live"))
        pytest.skip("Airflow 3.0.x: no asset outlets (its `dags test` refuses never-activated assets)")
    names = {t: [a.name for a in dag.get_task(t).outlets] for t in ("snapshot", "train", "publish", "record_live")}
    assert names == {"snapshot": ["recsys_snapshot"], "train": ["recsys_model"],
                     "publish": ["recsys_recommendations"], "record_live": ["recsys_serving"]}


METRICS = {"candidate": {"rmse": 0.90, "ndcg@10": 0.30},
           "baselines": {"global_mean": {"rmse": 1.12}, "bias": {"rmse": 0.94}}}


def test_gate_promotes_a_better_model():
    assert pipeline.gate({**METRICS, "champion": {"rmse": 0.905, "ndcg@10": 0.29}}, 0.01) == (True, [])


def test_gate_stops_a_worse_model_and_says_why():
    ok, reasons = pipeline.gate({**METRICS, "champion": {"rmse": 0.85, "ndcg@10": 0.40}}, 0.01)
    assert not ok and len(reasons) == 2
    assert "worse than the live model's 0.8500" in reasons[0] and "NDCG@10" in reasons[1]
    ok, reasons = pipeline.gate({"candidate": {"rmse": 1.2, "ndcg@10": 0.1}, "baselines": METRICS["baselines"]}, 0.01)
    assert not ok and "does not beat the global mean" in reasons[0]


def test_gate_compares_the_live_model_on_the_rows_it_never_saw():
    """train scores a live model fitted on every rating only on holdout ratings newer than its
    data, with the candidate's figures on the same rows: the gate compares those two."""
    same_rows = {"rmse": 0.95, "ndcg@10": 0.20}
    ok, reasons = pipeline.gate({**METRICS, "champion": {"rmse": 0.93, "ndcg@10": 0.25, "candidate": same_rows}}, 0.01)
    assert not ok and "RMSE 0.9500 is worse than the live model's 0.9300" in reasons[0]
    assert "NDCG@10 0.2000" in reasons[1]
    assert pipeline.gate({**METRICS, "champion": {"rmse": 0.96, "ndcg@10": 0.19, "candidate": same_rows}},
                         0.01) == (True, [])
    assert pipeline.gate({**METRICS, "champion": {"uri": "s3://b/m", "skipped": "no newer rating"}}, 0.01) == (True, [])


def test_gate_requires_beating_surprise_svd_and_popularity():
    base = {**METRICS["baselines"], "svd": {"rmse": 0.89, "ndcg@10": 0.05}, "popularity": {"ndcg@10": 0.31}}
    ok, reasons = pipeline.gate({"candidate": METRICS["candidate"], "baselines": base}, 0.01)
    assert not ok and len(reasons) == 2
    assert "does not beat surprise SVD (0.8900)" in reasons[0]
    assert "does not beat the most-popular list (0.3100)" in reasons[1]
    # a baseline skipped for size is not checked
    base["svd"], base["popularity"] = {"skipped": "too large"}, {"ndcg@10": 0.2}
    assert pipeline.gate({"candidate": METRICS["candidate"], "baselines": base}, 0.01) == (True, [])


def test_gate_holds_the_ranking_head_within_its_margin_of_ease():
    cand = METRICS["candidate"]
    near = {**METRICS["baselines"], "ease": {"ndcg@10": cand["ndcg@10"] / 0.96}}  # 4% below: inside 5%
    assert pipeline.gate({"candidate": cand, "baselines": near}, 0.01) == (True, [])
    far = {**METRICS["baselines"], "ease": {"ndcg@10": cand["ndcg@10"] / 0.9}}
    ok, reasons = pipeline.gate({"candidate": cand, "baselines": far}, 0.01)
    assert not ok and reasons == [f"NDCG@10 {cand['ndcg@10']:.4f} is below EASE^R's "
                                  f"{cand['ndcg@10'] / 0.9:.4f} by more than 5%"]
    skipped = {**METRICS["baselines"], "ease": {"skipped": "12000 items > ease_max_items 10000"}}
    assert pipeline.gate({"candidate": cand, "baselines": skipped}, 0.01) == (True, [])


def test_gate_force_promote_overrides_but_keeps_reasons():
    ok, reasons = pipeline.gate({**METRICS, "champion": {"rmse": 0.5, "ndcg@10": 0.3}}, 0.0, force=True)
    assert ok and reasons


class FakeRun:
    def __init__(self, run_type, start):
        import pendulum

        self.run_type = run_type
        self.logical_date = self.data_interval_start = pendulum.parse(start)
        self.data_interval_end = self.data_interval_start.add(days=1)
        self.run_after = self.data_interval_end


@pytest.mark.parametrize("run_type, start, deploys", [
    ("backfill", "2026-01-05T02:00:00+00:00", False),
    ("scheduled", "2026-01-05T02:00:00+00:00", False),
    ("manual", "2026-01-05T02:00:00+00:00", True),
])
def test_latest_only_keeps_backfills_away_from_deploy(dag, run_type, start, deploys):
    from airflow.utils.types import DagRunType

    op = dag.get_task("latest_only")
    branches = op.choose_branch({"dag_run": FakeRun(DagRunType(run_type), start)})
    assert (list(branches) == ["deploy_enabled"]) is deploys


def test_live_pointer_keeps_the_version_it_replaced():
    p = {"model_version": "v3", "model": "s3://b/models/v3", "ds": "2026-11-23"}
    first = pipeline.live_pointer(p, {}, None, "now")
    assert first["previous"] is None
    old = {"model_version": "v2", "model_uri": "s3://b/models/v2", "previous": {"model_version": "v1"}}
    assert pipeline.live_pointer(p, {}, old, "now")["previous"] == {"model_version": "v2", "model_uri": "s3://b/models/v2"}
    # re-deploying the live version keeps its predecessor as the rollback target
    again = pipeline.live_pointer(p, {}, pipeline.live_pointer(p, {}, old, "t"), "now")
    assert again["previous"]["model_version"] == "v2"
    plan = pipeline.plan("2026-11-24", "v4", {}, Settings(bucket="b"), again)
    assert plan["retain"] == "v3=s3://b/models/v3 v2=s3://b/models/v2"


def test_retain_runs_whatever_happened(dag):
    retain = dag.get_task("retain")
    assert retain.trigger_rule == "all_done" and "record_live" in retain.upstream_task_ids


def test_the_versions_page_is_regenerated_every_night_through_the_compute_backend(dag):
    versions = dag.get_task("versions")
    assert versions.trigger_rule == "all_done" and "retain" in versions.upstream_task_ids
    s = Settings()
    assert versions.bash_command.endswith(f"-m tasks.publish versions --root s3://{s.bucket} --table {s.table}")


# trigger rules under which an upstream failure becomes this task's upstream_failed
PROPAGATES_FAILURE = {"all_success", "none_failed", "none_failed_min_one_success"}


@pytest.mark.parametrize("deploy", ["local", "ecs", "docker"])
def test_a_failure_anywhere_fails_the_run_in_every_deploy_mode(monkeypatch, deploy):
    """Airflow judges a run by its leaves only. From every task, a chain of failure-propagating
    tasks must reach a leaf that propagates too: an ``all_done`` leaf (retain) would mark a run
    whose gate rejected the model as a success."""
    monkeypatch.setenv("RECSYS_DEPLOY", deploy)
    dag = DagBag(dag_folder="dags").dags[DAG_ID]
    leaves = {t.task_id for t in dag.tasks if not t.downstream_task_ids}
    assert "summary" in leaves and "retain" not in leaves
    for task in dag.tasks:
        frontier, seen, reached = [task], set(), task.task_id in leaves
        while frontier and not reached:
            for down_id in frontier.pop().downstream_task_ids:
                down = dag.get_task(down_id)
                if down_id in seen or down.trigger_rule not in PROPAGATES_FAILURE:
                    continue
                seen.add(down_id)
                reached = reached or down_id in leaves
                frontier.append(down)
        if task.task_id in leaves:
            assert task.trigger_rule in PROPAGATES_FAILURE, task.task_id
        assert reached, f"{task.task_id}'s failure reaches no leaf: the run would end green"


@pytest.mark.parametrize("version, outlets", [("3.0.6", False), ("3.1.0rc1", True), ("3.3.2", True), ("4.0.0", True)])
def test_asset_outlets_from_airflow_3_1(version, outlets):
    from recsys import compat

    assert (compat._major_minor(version) >= (3, 1)) is outlets


PARSE_FORBIDDEN = ("boto3", "botocore", "pandas", "numpy", "torch", "numba", "surprise", "tasks")


@pytest.mark.parametrize("compute", ["local", "docker"])
def test_parsing_imports_no_aws_sdk_and_no_data_libraries(compute, tmp_path):
    """A fresh interpreter imports the DAG file the way a dag-processor does: none of the heavy
    modules may load, directly or through a provider (an ``s3://`` asset URI loads boto3)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    if compute == "docker":  # MWAA ships no docker provider (make test-compat)
        pytest.importorskip("airflow.providers.docker")
    root = Path(__file__).resolve().parents[1]
    code = ("import json, sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import recommender_pipeline; "
            f"print(json.dumps([m for m in {PARSE_FORBIDDEN!r} if m in sys.modules]))")
    env = {**os.environ, "RECSYS_COMPUTE": compute, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", code, str(root / "plugins"), str(root / "dags")], cwd=tmp_path,
                         env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("deploy_mode", ["ecs", "docker", "local"])
def test_build_image_fails_a_deploy_it_cannot_serve_and_lets_the_local_app_go_without(deploy_mode, monkeypatch):
    """Never a green run that did not deploy: with RECSYS_DEPLOY=ecs or docker a missing image
    fails the run; the local app runs from source, so there it is logged and the deploy goes on."""
    from airflow.providers.amazon.aws.hooks.ecr import EcrHook

    from recsys import deploy
    from recsys.compat import AirflowFailException

    monkeypatch.setenv("RECSYS_DEPLOY", deploy_mode)
    monkeypatch.setenv("RECSYS_ECR_REPOSITORY", "not-this-one")
    task = DagBag(dag_folder="dags").dags[DAG_ID].get_task("build_image")
    assert task.__class__.__name__ == "ServingImageOperator" and "repository" in task.template_fields
    monkeypatch.setattr(EcrHook, "conn", "ecr-client")
    seen = {}

    def unavailable(ecr, settings):
        seen.update(ecr=ecr, repository=settings.ecr_repository)
        raise deploy.image.ImageUnavailable("serving image r:t is not in ECR ... make push-image")

    monkeypatch.setattr(deploy.image, "ensure_image", unavailable)
    task.repository = "rendered-repo"  # what rendering the template gives
    if deploy_mode == "local":
        assert task.execute({}) is None
    else:
        with pytest.raises(AirflowFailException, match="make push-image"):
            task.execute({})
    assert seen == {"ecr": "ecr-client", "repository": "rendered-repo"}


def test_unknown_conf_keys_fail_the_run_at_plan_naming_the_params(dag):
    """{"topn": 3} (a typo in the trigger form's JSON) ran the whole pipeline with top_n 10."""
    from types import SimpleNamespace

    from recsys.compat import AirflowFailException

    plan = dag.get_task("plan").python_callable
    run = SimpleNamespace(conf={"topn": 3}, run_id="manual__x", run_type="manual", logical_date=None, run_after=None)
    with pytest.raises(AirflowFailException) as err:
        plan(params={**dag.params, "topn": 3}, ds="2026-11-23", dag_run=run, dag=dag)
    text = str(err.value)
    assert "unknown key(s) in the run's conf: 'topn' (did you mean 'top_n' for 'topn'?)" in text
    assert all(name in text for name in dag.params)
    pipeline.check_conf({"top_n": 3, "deploy": False}, dag.params)  # known keys pass
    pipeline.check_conf(None, dag.params)  # a scheduled run has no conf


def test_failure_alerts_and_run_summaries_link_the_versions_page(monkeypatch):
    from recsys import notifiers

    page = pipeline.versions_page(Settings(bucket="b"))
    assert page == "s3://b/versions/index.html"
    _, msg = notifiers.failure_message({"exception": "boom"}, page)
    assert msg.splitlines()[-1].endswith(": s3://b/versions/index.html")
    sent = []
    monkeypatch.setattr(notifiers.FailureAlert, "first_for_run", lambda self, context, subject: True)
    monkeypatch.setattr(notifiers, "sns_notifier", lambda settings, subject, message: type(
        "N", (), {"notify": lambda self, context: sent.append(message)})())
    # a task's failure context as Airflow passes it: Airflow 3.0's BaseNotifier reads context["dag"]
    # to render its template fields before notify()
    from airflow.sdk import DAG

    context = {"exception": "boom", "dag": DAG("recommender_pipeline", schedule=None)}
    notifiers.FailureAlert(Settings(bucket="b"))(context)
    assert "s3://b/versions/index.html" in sent[0]


def test_plan_carries_the_pinned_jobs_revision_and_fails_without_retries_when_unpushed(dag, monkeypatch):
    """The DAG's plan task: the jobs pin (recsys.pipeline.pin_jobs_image, tested against moto in
    tests/test_jobs_image.py) goes into the XCom every ECS stage renders; an unpushed image fails the run."""
    import datetime as dt
    from types import SimpleNamespace

    from recsys import deploy
    from recsys.compat import AirflowFailException

    plan = dag.get_task("plan").python_callable
    run = SimpleNamespace(conf={}, run_id="manual__x", run_type="manual", logical_date=None,
                          run_after=dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc))
    monkeypatch.setattr(pipeline, "read_json", lambda settings, key: None)
    pin = {"jobs_image": "r@sha256:1", "jobs_task_definition": "arn:aws:ecs:r:1:task-definition/recsys-jobs:7"}
    monkeypatch.setattr(pipeline, "pin_jobs_image", lambda settings: pin)
    out = plan(params=dict(dag.params), ds="2026-11-23", dag_run=run, dag=dag)
    assert out["jobs_task_definition"] == pin["jobs_task_definition"] and out["jobs_image"] == pin["jobs_image"]

    def unpushed(settings):
        raise deploy.image.ImageUnavailable("jobs image r:t is not in ECR ... Push it (`make push-jobs-image` ...)")

    monkeypatch.setattr(pipeline, "pin_jobs_image", unpushed)
    with pytest.raises(AirflowFailException, match="jobs image r:t is not in ECR.*make push-jobs-image"):
        plan(params=dict(dag.params), ds="2026-11-23", dag_run=run, dag=dag)
