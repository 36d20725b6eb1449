"""``make bundle``: the MWAA and Composer bundles work with nothing but themselves on the path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bundle  # noqa: E402

from recsys import deploy  # noqa: E402

HEAVY = ("boto3", "botocore", "pandas", "numpy", "torch", "tasks")

# Runs in a fresh interpreter inside the unpacked bundle, as a dag-processor and worker would.
PROBE = """
import json, sys
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder="dags")
from recsys import deploy
from recsys.settings import Settings
s = Settings()
try:
    import tasks  # noqa: F401
    has_tasks = True
except ImportError:
    has_tasks = False
print(json.dumps({"dags": sorted(bag.dags), "errors": {k: str(v)[-1500:] for k, v in bag.import_errors.items()},
                  "tag": deploy.image.serving_image_tag(s), "compute": s.compute, "deploy": s.deploy,
                  "has_tasks": has_tasks, "heavy": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    made = bundle.build(out, "3.0.6", environ={"RECSYS_TABLE": "recs-prod", "RECSYS_BUCKET": "my bucket",
                                               "RECSYS_PROJECT_ROOT": "/home/me/src", "OTHER": "x",
                                               "AWS_DEFAULT_REGION": "eu-west-1"})
    return out, made


def clean_env(**extra) -> dict:
    """What a managed worker has: no project on the path, no RECSYS_* but what it is given."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "PYTHONPATH", "AIRFLOW__ENV__"))}
    return {**keep, **extra}


def test_mwaa_bundle_imports_with_only_itself_on_the_path(dist, tmp_path):
    out, made = dist
    home = tmp_path / "airflow"
    (home / "plugins").mkdir(parents=True)
    with zipfile.ZipFile(out / "mwaa" / "plugins.zip") as zf:
        names = zf.namelist()
        zf.extractall(home / "plugins")  # what MWAA does with plugins.zip
    assert "recsys/__init__.py" in names and "recsys/_bundle.json" in names and ".airflowignore" in names
    assert not any("__pycache__" in n or n.startswith(("tasks/", "plugins/")) for n in names)
    shutil.copytree(out / "mwaa" / "dags", home / "dags")
    env = clean_env(PYTHONPATH=str(home / "plugins"), RECSYS_COMPUTE="ecs", RECSYS_DEPLOY="ecs",
                    RECSYS_ECS_SUBNETS="subnet-1")
    res = subprocess.run([sys.executable, "-c", PROBE], cwd=home, env=env, capture_output=True, text=True,
                         check=True)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["errors"] == {} and got["dags"] == ["recommender_pipeline", "recommender_rollback"]
    assert got["has_tasks"] is False  # the sources are not there ...
    assert got["tag"] == made["serving_image_tag"] == deploy.image.image_tag(str(ROOT))  # ... the bundle's tag is
    assert not set(got["heavy"]) - {"boto3", "botocore"}  # the ECS operator's provider module loads botocore


def test_mwaa_bundle_fetches_nothing_at_worker_start(dist):
    """No requirements.txt: MWAA would fetch and install it at every worker start (the old one's
    constraint URL fails in a private network without NAT)."""
    out, made = dist
    assert sorted(p.name for p in (out / "mwaa").iterdir()) == ["dags", "plugins.zip", "startup.sh"]
    assert "https://" not in (out / "mwaa" / "startup.sh").read_text()
    assert made["settings"]["RECSYS_REGION"] == "eu-west-1"  # baked: Composer workers have no region


def test_startup_script_exports_the_settings_the_dag_reads(dist, tmp_path):
    out, _ = dist
    with zipfile.ZipFile(out / "mwaa" / "plugins.zip") as zf:
        zf.extractall(tmp_path / "plugins")
    code = "import json; from recsys.settings import Settings; s = Settings(); " \
           "print(json.dumps([s.bucket, s.table, s.compute, s.deploy, s.alert_topic, s.project_root]))"
    # a clean shell: only what MWAA itself sets, plus two configuration options
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(tmp_path / "plugins"),
           "AIRFLOW__ENV__RECSYS_ALERT_TOPIC": "ops-pager", "AIRFLOW__ENV__recsys_table": "recs-override",
           "AIRFLOW__ENV__RECSYS_ECS_SUBNETS": "subnet-a,subnet-b"}
    res = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "bash", "-c",
                          f". {out / 'mwaa' / 'startup.sh'} && exec {sys.executable} -c '{code}'"],
                         capture_output=True, text=True, check=True)
    bucket, table, compute, deploy_to, topic, project_root = json.loads(res.stdout)
    assert bucket == "my bucket"  # baked in from the shell that ran make bundle
    assert table == "recs-override" and topic == "ops-pager"  # configuration options win
    assert (compute, deploy_to) == ("ecs", "ecs")  # managed workers: no Docker, no torch
    assert project_root != "/home/me/src"  # machine-local settings are never baked


def test_composer_script_runs_the_gcloud_commands(dist, tmp_path):
    out, made = dist
    calls = tmp_path / "calls"
    fake = tmp_path / "bin"
    fake.mkdir()
    # the environment's bucket holds a DAG file an older bundle shipped and another team's DAG
    (fake / "gcloud").write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> {calls}\n'
                                 'case "$*" in *pypi*) echo "ERROR: No change in configuration." >&2; exit 1;;\n'
                                 '  "composer environments describe"*) echo gs://bkt/dags;;\n'
                                 '  "storage ls"*) printf "gs://bkt/dags/recommender_pipeline.py\\n'
                                 'gs://bkt/dags/recommender_old.py\\n";;\n'
                                 'esac\n')
    (fake / "gcloud").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "ENVIRONMENT": "prod", "LOCATION": "europe-west1"}
    subprocess.run(["bash", str(out / "composer" / "deploy.sh")], env=env, check=True, capture_output=True)
    got = calls.read_text().splitlines()
    assert got[0] == ("composer environments update prod --location europe-west1 "
                      "--update-pypi-packages-from-file pypi-packages.txt")
    assert got[1].startswith("composer environments update prod --location europe-west1 --update-env-variables ^|^")
    assert "RECSYS_COMPUTE=ecs|" in got[1] and "RECSYS_TABLE=recs-prod" in got[1]
    assert "RECSYS_REGION=eu-west-1|" in got[1]
    assert got[2] == "composer environments describe prod --location europe-west1 --format=value(config.dagGcsPrefix)"
    assert got[3:] == [
        "storage rsync plugins/recsys gs://bkt/plugins/recsys --recursive --delete-unmatched-destination-objects",
        "storage cp plugins/.airflowignore gs://bkt/plugins/.airflowignore",
        "storage cp dags/recommender_pipeline.py dags/recommender_rollback.py gs://bkt/dags/",
        "storage ls gs://bkt/dags/recommender_*.py",
        "storage rm gs://bkt/dags/recommender_old.py"]  # what the new bundle no longer has, nothing else
    assert json.loads((out / "composer" / "plugins" / "recsys" / "_bundle.json").read_text())["serving_image_tag"] \
        == made["serving_image_tag"]
    assert "apache-airflow-providers-amazon>=" in (out / "composer" / "pypi-packages.txt").read_text()
    missing = subprocess.run(["bash", str(out / "composer" / "deploy.sh")], env={**env, "ENVIRONMENT": ""},
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "set ENVIRONMENT" in missing.stderr


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.split()[0]
    return pins


def _ranges(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith(("#", "-"))]


def test_airflow_side_requirements_fit_the_oldest_managed_airflow_and_the_dev_pins():
    """Ranges, never pins the platforms' constraints would refuse (MWAA's 3.0.6 set; the versions
    this venv runs, i.e. the newest we test)."""
    from importlib.metadata import version

    from packaging.requirements import Requirement

    mwaa = _pins(ROOT / "tests" / "compat" / "airflow-3.0.6-mwaa.txt")
    for file in ("airflow.txt", "composer.txt"):
        for spec in _ranges(ROOT / "requirements" / file):
            req = Requirement(spec)
            assert "==" not in str(req.specifier), f"{file}: {spec} pins a version"
            assert req.specifier.contains(mwaa[req.name], prereleases=False), f"{file}: {spec} vs MWAA 3.0.6"
            assert req.specifier.contains(version(req.name), prereleases=False), f"{file}: {spec} vs this venv"


def test_a_dag_runs_only_with_its_own_releases_recsys(tmp_path, monkeypatch):
    """An upgrade in flight: the DAG files of one bundle beside the plugins of another. Only matching
    pairs import; a mismatch is an import error naming both releases (no task of it can run)."""
    built = {}
    for name, commit in (("old", "1111111111111111"), ("new", "2222222222222222")):
        monkeypatch.setattr(bundle, "git_commit", lambda commit=commit: commit)
        built[name] = bundle.build(tmp_path / name, "3.0.6", environ={})["release"]
    assert built["old"] != built["new"]
    results = {}
    for dags_from in ("old", "new"):
        for plugins_from in ("old", "new"):
            home = tmp_path / f"{dags_from}-dags-{plugins_from}-plugins"
            with zipfile.ZipFile(tmp_path / plugins_from / "mwaa" / "plugins.zip") as zf:
                zf.extractall(home / "plugins")
            shutil.copytree(tmp_path / dags_from / "mwaa" / "dags", home / "dags")
            env = clean_env(PYTHONPATH=str(home / "plugins"), RECSYS_COMPUTE="ecs", RECSYS_DEPLOY="ecs",
                            RECSYS_ECS_SUBNETS="subnet-1")
            res = subprocess.run([sys.executable, "-c", PROBE], cwd=home, env=env, capture_output=True, text=True,
                                 check=True)
            results[dags_from, plugins_from] = json.loads(res.stdout.strip().splitlines()[-1])
    for same in ("old", "new"):
        assert results[same, same]["errors"] == {}
        assert results[same, same]["dags"] == ["recommender_pipeline", "recommender_rollback"]
    for dags_from, plugins_from in (("new", "old"), ("old", "new")):
        got = results[dags_from, plugins_from]
        assert got["dags"] == [] and len(got["errors"]) == 2
        for error in got["errors"].values():
            assert f"is release {built[dags_from]} but the recsys package" in error
            assert f"is release {built[plugins_from]}: the DAG file and the plugins" in error


def test_supported_versions_come_from_the_platform_table():
    import platforms

    table = platforms.load()
    assert bundle.MWAA_VERSIONS == platforms.versions("mwaa", table) == ("3.0.6", "3.2.1", "3.3.1")
    assert platforms.versions("composer", table)[-1] == "3.3.1"
    rows = {(r["platform"], r["airflow"]): r for r in platforms.rows(table)}
    assert rows["mwaa", "3.0.6"]["pins"] == "tests/compat/airflow-3.0.6-mwaa.txt"
    assert (ROOT / rows["mwaa", "3.0.6"]["pins"]).exists()
    assert rows["composer", "3.1.7"]["python"] == "3.11" and rows["mwaa", "3.3.1"]["python"] == "3.12"
    for (platform, airflow), row in rows.items():  # every MWAA row installs MWAA's own pins of its Airflow
        if platform == "mwaa":
            assert _pins(ROOT / row["pins"])["apache-airflow"] == airflow, row
    # the matrix runs everything on the oldest Airflow (make test does on the newest), less on the others
    assert platforms.oldest(table) == "mwaa-3.0.6"
    assert {f"{p}-{a}" for (p, a), r in rows.items() if r["matrix"] == "full"} == {"mwaa-3.0.6"}
    with pytest.raises(ValueError, match="matrix = 'some'"):
        platforms.rows({"mwaa": {"python": "3.12", "versions": [{"airflow": "3.0.6", "matrix": "some"}]}})
