"""The Airflow side's settings: one typed object (pydantic), parsed one way, checked at
parse time; and the stage settings that travel on the command line alike on every backend."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from recsys import compute, stages
from recsys.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("true", True), ("True", True), ("yes", True),
                                            ("on", True), ("0", False), ("false", False), ("False", False),
                                            ("no", False), ("off", False)])
def test_booleans_are_parsed_one_way(monkeypatch, raw, value):
    """Before: RECSYS_BUILD_IMAGE=False meant on (only 0/false/no were off)."""
    monkeypatch.setenv("RECSYS_BUILD_IMAGE", raw)
    monkeypatch.setenv("RECSYS_NOTIFY_SUCCESS", raw)
    s = Settings()
    assert s.build_image is value and s.notify_success is value


def test_a_value_that_is_no_boolean_fails_at_parse_time_naming_the_variable(monkeypatch):
    monkeypatch.setenv("RECSYS_BUILD_IMAGE", "sometimes")
    with pytest.raises(ValueError, match=r"RECSYS_BUILD_IMAGE='sometimes': Input should be a valid boolean"):
        Settings()


@pytest.mark.parametrize(("name", "raw", "error"), [
    ("RECSYS_DEPLOY", "ecs2", "RECSYS_DEPLOY must be local, docker or ecs, got 'ecs2'"),
    ("RECSYS_SERVE_PORT", "80a", "RECSYS_SERVE_PORT='80a': Input should be a valid integer"),
    ("RECSYS_TTL_DAYS", "0", "RECSYS_TTL_DAYS must be at least 1, got 0"),
    ("RECSYS_MIN_RATINGS", "-1", "RECSYS_MIN_RATINGS must be 0 or more, got -1"),
])
def test_bad_values_fail_at_parse_time_naming_the_variable(monkeypatch, name, raw, error):
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValueError, match=error):
        Settings()


def test_region_is_its_own_setting_falling_back_to_the_aws_variables(monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert Settings().region == "eu-west-1"
    monkeypatch.setenv("RECSYS_REGION", "eu-central-1")
    assert Settings().region == "eu-central-1"  # MWAA protects AWS_DEFAULT_REGION: this one wins
    monkeypatch.delenv("RECSYS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert Settings().region == "us-east-1"  # outside Composer: the AWS SDKs' usual default


def test_on_composer_an_unset_region_is_an_error_not_us_east_1(monkeypatch):
    """Composer's workers set COMPOSER_ENVIRONMENT and no AWS region: a DAG file without
    RECSYS_REGION fails to import naming the fix, instead of sending every call to us-east-1."""
    for name in ("RECSYS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COMPOSER_ENVIRONMENT", "recsys-prod")
    with pytest.raises(ValueError, match="RECSYS_REGION is unset on Cloud Composer .*recsys-prod"):
        Settings()
    monkeypatch.setenv("RECSYS_REGION", "eu-west-1")
    assert Settings().region == "eu-west-1"
    monkeypatch.delenv("RECSYS_REGION")
    assert Settings(region="eu-north-1").region == "eu-north-1"


def test_mwaa_form_and_lists_and_empty_values(monkeypatch):
    monkeypatch.setenv("AIRFLOW__ENV__RECSYS_BUCKET", "from-mwaa")
    monkeypatch.setenv("RECSYS_ECS_SUBNETS", " subnet-1, subnet-2 ,")
    monkeypatch.setenv("RECSYS_TTL_DAYS", "")  # empty counts as unset
    s = Settings()
    assert (s.bucket, s.ecs_subnets, s.ttl_days) == ("from-mwaa", ["subnet-1", "subnet-2"], 30)


def test_every_stage_setting_travels_on_the_command_line_alike_on_every_backend(monkeypatch):
    """Before: RECSYS_MIN_RATINGS and RECSYS_THREADS reached local stages through the inherited
    environment, Docker ones through a pass-through list, and ECS ones not at all."""
    monkeypatch.setenv("RECSYS_MIN_RATINGS", "5")
    monkeypatch.setenv("RECSYS_THREADS", "3")
    monkeypatch.setenv("RECSYS_TTL_DAYS", "9")
    argvs = {
        "score": ["python", "-m", "tasks.score", "--model", "s3://b/m", "--ratings", "s3://b/d",
                  "--model-version", "v1", "--shard", "0/2", "--table", "t"],
        "publish": ["python", "-m", "tasks.publish", "finalize", "--model", "s3://b/m", "--ratings", "s3://b/d",
                    "--model-version", "v1", "--shards", "2", "--table", "t"],
        "train": ["python", "-m", "tasks.train", "--ratings", "s3://b/d", "--out", "s3://b/m"],
    }
    expected = {"score": ["--threads", "3", "--min-ratings", "5", "--ttl-days", "9"],
                "publish": ["--min-ratings", "5", "--ttl-days", "9"], "train": ["--threads", "3"]}
    for stage, argv in argvs.items():
        local = shlex.split(compute.field_value(argv, Settings(compute="local", python="python")))
        docker = compute.field_value(argv, Settings(compute="docker"))
        ecs = compute.field_value(argv, Settings(compute="ecs", ecs_subnets=["subnet-1"]))
        assert local[0] == "exec" and local[1:] == docker == ecs["containerOverrides"][0]["command"], stage
        assert docker == argv + expected[stage], stage


def test_the_stages_accept_the_flags_they_are_given():
    """Every flag STAGE_FLAGS adds is one the stage's own parser knows."""
    for (module, sub), flags in stages.STAGE_FLAGS.items():
        source = (ROOT / module.replace(".", "/") / "__main__.py").read_text()
        for flag, _ in flags:
            assert f'"{flag}"' in source, (module, sub, flag)
