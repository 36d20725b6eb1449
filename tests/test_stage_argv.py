"""Every command line the Airflow side can build parses with the stage's own parser.

The DAGs build each stage's argv in :mod:`recsys.stages` from the run's plan (Jinja that Airflow
renders when the task runs) and :mod:`recsys.compute` turns it into the backend's field (a shell
line, a container command, an ECS override) with the stage's settings appended. Here the DAG files
are loaded for every compute backend, every stage field is rendered (with the DAG's own Jinja
environment) for every combination of the Params the DAG allows (each one's minimum, default and
maximum, both booleans) with and without a live version, decoded back into an argv and parsed by
``build_parser()`` of the stage's ``__main__``; each value must land where the stage reads it. A
flag one side renames and the other does not fails here, not in a nightly run.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import shlex
from types import SimpleNamespace

import pytest

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.0.x (make test-compat)
    from airflow.models.dagbag import DagBag

from recsys import compute, pipeline, stages
from recsys.settings import Settings

pytest.importorskip("tasks.train", reason="the stages' parsers need their libraries (make test-compat has only "
                                          "Airflow's)")

BACKENDS = {"local": {}, "docker": {"RECSYS_JOB_IMAGE": "recsys-jobs:test"},
            "ecs": {"RECSYS_ECS_SUBNETS": "subnet-1", "RECSYS_ECS_SECURITY_GROUPS": "sg-1"}}
STAGES = ("tasks.data", "tasks.train", "tasks.score", "tasks.publish")
LIVE = {"model_version": "v20261122T020000s-aaaaaa", "model_uri": "s3://recsys/models/v20261122T020000s-aaaaaa",
        "previous": {"model_version": "v20261121T020000s-cccccc",
                     "model_uri": "s3://recsys/models/v20261121T020000s-cccccc"}}
VERSION = "v20261123T020000s-bbbbbb"


def parser_of(module: str) -> argparse.ArgumentParser:
    """The stage's parser, taking flags only as spelled (``--sweep`` would pass for ``--sweeps``)."""
    parser = importlib.import_module(f"{module}.__main__").build_parser()
    for p in (parser, *(sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
                        for sub in action.choices.values())):
        p.allow_abbrev = False
    return parser


PARSERS: dict[str, argparse.ArgumentParser] = {}


def parse(argv: list[str]) -> tuple[str, argparse.Namespace]:
    """(stage module, parsed arguments) of ``python -m <stage> ...``; SystemExit if the stage's parser
    refuses it (an unknown or missing flag, a value of the wrong type)."""
    assert argv[:2] == ["python", "-m"] and argv[2] in STAGES, argv
    module = argv[2]
    parser = PARSERS.setdefault(module, parser_of(module))
    return module, parser.parse_args(argv[3:])


def as_argv(value, backend: str, settings: Settings) -> list[str]:
    """A backend's command field, back to the argv it runs."""
    if backend == "local":
        assert value.startswith("exec ")
        argv = shlex.split(value[len("exec "):])
        assert argv[0] == settings.python
        return ["python", *argv[1:]]
    if backend == "ecs":
        (override,) = value["containerOverrides"]
        assert override["name"] == settings.ecs_container
        return list(override["command"])
    return list(value)


def combinations(params) -> list[dict]:
    """Every combination of the Params' boundary values: minimum, default and maximum of a number,
    both values of a boolean (read from the DAG's own Params, so a new or widened Param is covered)."""
    choices = {}
    for name in params:
        param = params.get_param(name)
        schema, default = param.schema, param.value
        if schema.get("type") == "boolean":
            choices[name] = [False, True]
        elif schema.get("type") in ("integer", "number"):
            choices[name] = sorted({schema.get("minimum", default), default, schema.get("maximum", default)})
        else:
            choices[name] = [default]
    names = sorted(choices)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(choices[n] for n in names))]


class Renderer:
    """Renders a templated field as Airflow does: each string through the DAG's Jinja environment
    (compiled once per string), lists and dicts element by element."""

    def __init__(self, dag):
        self.env, self.compiled = dag.get_template_env(), {}

    def __call__(self, value, context):
        if isinstance(value, str):
            if value not in self.compiled:
                self.compiled[value] = self.env.from_string(value)
            return self.compiled[value].render(**context)
        if isinstance(value, list):
            return [self(v, context) for v in value]
        if isinstance(value, dict):
            return {k: self(v, context) for k, v in value.items()}
        return value


def xcom(values: dict):
    return SimpleNamespace(xcom_pull=lambda task_ids, **_: values[task_ids])


def expected(module: str, command: str | None, plan: dict, params: dict, settings: Settings) -> dict:
    """Where each of the plan's values must land in the stage's parsed arguments."""
    if module == "tasks.data":
        return {"command": "snapshot", "raw": plan["raw"], "items": plan["items"], "ds": plan["ds"],
                "out": plan["snapshot"], "quarantine": plan["quarantine"]}
    if module == "tasks.train":
        return {"ratings": plan["snapshot"], "out": plan["model"], "champion": plan["champion"], "ds": plan["ds"],
                "model_version": plan["model_version"], "factors": params["factors"], "sweeps": params["sweeps"],
                "threads": settings.threads}
    common = {"table": plan["table"], "ttl_days": settings.ttl_days}
    if module == "tasks.score":
        return {**common, "model": plan["model"], "ratings": plan["snapshot"], "model_version": plan["model_version"],
                "top_n": plan["top_n"], "min_ratings": settings.min_ratings, "threads": settings.threads}
    if command == "finalize":
        return {**common, "model": plan["model"], "ratings": plan["snapshot"], "model_version": plan["model_version"],
                "top_n": plan["top_n"], "shards": plan["shards"], "min_ratings": settings.min_ratings}
    if command == "retain":
        return {**common, "versions": [plan["retain"]]}  # one templated argument, split by the stage
    return {"command": "versions", "root": settings.s3(), "table": settings.table}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, monkeypatch):
    if request.param == "docker":
        pytest.importorskip("airflow.providers.docker")  # MWAA ships no docker provider (make test-compat)
    monkeypatch.setenv("RECSYS_COMPUTE", request.param)
    for name, value in BACKENDS[request.param].items():
        monkeypatch.setenv(name, value)
    return request.param


def stage_fields(dag, backend: str) -> dict[str, object]:
    """task id -> its templated command field, for every stage task of ``dag`` (not the mapped score)."""
    field = compute._FIELD[backend]
    return {t.task_id: getattr(t, field) for t in dag.tasks
            if hasattr(t, field) and not hasattr(t, "partial_kwargs") and t.task_id != "deploy"}


def test_every_argv_the_dags_build_parses_with_the_stages_own_parser(backend):
    bag = DagBag(dag_folder="dags")
    assert bag.import_errors == {}
    settings = Settings()
    dag = bag.dags["recommender_pipeline"]
    fields = stage_fields(dag, backend)
    assert sorted(fields) == ["publish", "retain", "snapshot", "train", "versions"]
    render = Renderer(dag)
    shard_commands = dag.get_task("shard_commands").python_callable
    commands: dict[str, list] = {}  # by plan: combinations differing only in Params the plan lacks share it
    seen: dict[str, set] = {}
    parsed: dict[tuple, argparse.Namespace] = {}

    def check(argv: list[str], plan: dict, params: dict) -> argparse.Namespace:
        key = tuple(argv)
        if key not in parsed:
            parsed[key] = parse(argv)[1]
        args, module = parsed[key], argv[2]
        seen.setdefault(module, set()).add(getattr(args, "command", None))
        want = expected(module, getattr(args, "command", None), plan, params, settings)
        assert {k: getattr(args, k) for k in want} == want, argv
        return args

    combos = combinations(dag.params)
    assert len(combos) >= 3 ** 5 * 2 ** 2  # five numeric Params, two booleans
    for params, live in itertools.product(combos, (None, LIVE)):
        plan = {**pipeline.plan("2026-11-23", VERSION, params, settings, live),
                "jobs_task_definition": "arn:aws:ecs:eu-west-1:1:task-definition/recsys-jobs:7"}
        context = {"ti": xcom({"plan": plan}), "params": params}
        for field in fields.values():
            check(as_argv(render(field, context), backend, settings), plan, params)
        key = json.dumps(plan, sort_keys=True)
        shards = commands[key] if key in commands else commands.setdefault(key, shard_commands(plan))
        assert len(shards) == plan["shards"]
        for i in {0, len(shards) - 1}:  # every shard's argv is the same but for --shard I/N
            args = check(as_argv(shards[i], backend, settings), plan, params)
            assert args.shard == f"{i}/{plan['shards']}"
    assert seen == {"tasks.data": {"snapshot"}, "tasks.train": {None}, "tasks.score": {None},
                    "tasks.publish": {"finalize", "retain", "versions"}}

    # the rollback DAG's stages: retain the versions its roll task names, regenerate the versions page
    rollback = bag.dags["recommender_rollback"]
    fields = stage_fields(rollback, backend)
    assert sorted(fields) == ["retain", "versions"]
    render = Renderer(rollback)
    for retain in ("v2=s3://recsys/models/v2 v1=s3://recsys/models/v1", "v2=s3://recsys/models/v2"):
        context = {"ti": xcom({"roll": {"retain": retain}}), "params": {}}
        for field in fields.values():
            check(as_argv(render(field, context), backend, settings), {"retain": retain, "table": settings.table},
                  {})


def test_a_drifted_flag_is_rejected():
    """What the test above catches: an argv the stage's parser does not know (a flag renamed on one
    side only, a removed alias) or one missing a flag the stage requires."""
    settings = Settings()
    plan = pipeline.plan("2026-11-23", VERSION, {"shards": 2}, settings, LIVE)
    params = {"factors": 8, "sweeps": 150}
    train = stages.train(plan, params)
    assert parse(train)[1].sweeps == 150  # as built: accepted
    for old, new in (("--sweeps", "--epochs"),  # an alias the stage dropped (docs/changelog.md)
                     ("--model-version", "--version"),  # renamed on the Airflow side only
                     ("--sweeps", "--sweep"),  # a prefix of the stage's flag: argparse would take it
                     ("--ratings", "--ratings-uri")):  # a required flag missing
        with pytest.raises(SystemExit):
            parse([new if a == old else a for a in train])
    with pytest.raises(SystemExit):
        parse([a.replace("--top-n", "--topn") for a in stages.publish(plan)])
    with pytest.raises(SystemExit):
        parse([*stages.score(plan)[0], "--finalize"])  # the removed publish shim


def test_the_jinja_plan_has_exactly_the_run_plans_keys():
    """The DAG reads the plan through :data:`recsys.stages.PLAN`: a key RunPlan lacks fails at parse
    time, naming the keys it has; every key renders the plan task's XCom value."""
    from recsys.layout import RunPlan

    assert set(stages.PLAN) == RunPlan.__required_keys__ | RunPlan.__optional_keys__
    assert stages.PLAN["model"] == '{{ ti.xcom_pull(task_ids="plan")["model"] }}'
    with pytest.raises(KeyError, match="'modle' is not in the run plan.*model_version"):
        stages.PLAN["modle"]  # type: ignore[typeddict-unknown-key]
    plan = pipeline.plan("2026-11-23", VERSION, {}, Settings(), None)
    assert set(plan) == RunPlan.__required_keys__  # what plan() builds is what the record declares


def test_the_jinja_params_are_the_dags_params():
    dag = DagBag(dag_folder="dags").dags["recommender_pipeline"]
    assert set(stages.PARAMS) == set(dag.params)
    with pytest.raises(KeyError, match="'epochs' is not in the DAG's Params"):
        stages.PARAMS["epochs"]



def test_the_trigger_forms_defaults_are_the_stages_own():
    """A run with the form's defaults trains and scores as the stage's command line does with none of
    these flags, which is what ``bench/train_bench.py`` measures (the figures describe what ships)."""
    from tasks.train import TrainConfig

    params = DagBag(dag_folder="dags").dags["recommender_pipeline"].params
    defaults = TrainConfig()
    assert (params["factors"], params["sweeps"]) == (defaults.factors, defaults.sweeps)
    assert params["top_n"] == parser_of("tasks.score").get_default("top_n")
