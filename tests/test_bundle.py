"""``make bundle``: the MWAA and Composer bundles work with nothing but themselves on the path."""

from __future__ import annotations

import json
import os
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
print(json.dumps({"dags": sorted(bag.dags), "errors": {k: str(v)[-500:] for k, v in bag.import_errors.items()},
                  "tag": deploy.serving_image_tag(s), "compute": s.compute, "deploy": s.deploy,
                  "has_tasks": has_tasks, "heavy": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    made = bundle.build(out, "3.0.6", environ={"RECSYS_TABLE": "recs-prod", "RECSYS_BUCKET": "my bucket",
                                               "RECSYS_PROJECT_ROOT": "/home/me/src", "OTHER": "x"})
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
    (home / "dags").mkdir()
    (home / "dags" / "recommender_pipeline.py").write_bytes((out / "mwaa" / "dags" / "recommender_pipeline.py")
                                                            .read_bytes())
    env = clean_env(PYTHONPATH=str(home / "plugins"), RECSYS_COMPUTE="ecs", RECSYS_DEPLOY="ecs",
                    RECSYS_ECS_SUBNETS="subnet-1")
    res = subprocess.run([sys.executable, "-c", PROBE], cwd=home, env=env, capture_output=True, text=True,
                         check=True)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["errors"] == {} and got["dags"] == ["recommender_pipeline"]
    assert got["has_tasks"] is False  # the sources are not there ...
    assert got["tag"] == made["serving_image_tag"] == deploy.image_tag(str(ROOT))  # ... the bundle's tag is
    assert not set(got["heavy"]) - {"boto3", "botocore"}  # the ECS operator's provider module loads botocore


def test_mwaa_requirements_carry_only_the_constraint_line(dist):
    out, _ = dist
    lines = [ln for ln in (out / "mwaa" / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines == ['--constraint "https://raw.githubusercontent.com/apache/airflow/constraints-3.0.6/'
                     'constraints-3.12.txt"']


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
    (fake / "gcloud").write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> {calls}\n'
                                 'case "$*" in *pypi*) echo "ERROR: No change in configuration." >&2; exit 1;; esac\n')
    (fake / "gcloud").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "ENVIRONMENT": "prod", "LOCATION": "europe-west1"}
    subprocess.run(["bash", str(out / "composer" / "deploy.sh")], env=env, check=True, capture_output=True)
    got = calls.read_text().splitlines()
    assert got[0] == ("composer environments update prod --location europe-west1 "
                      "--update-pypi-packages-from-file pypi-packages.txt")
    assert got[1].startswith("composer environments update prod --location europe-west1 --update-env-variables ^|^")
    assert "RECSYS_COMPUTE=ecs|" in got[1] and "RECSYS_TABLE=recs-prod" in got[1]
    assert got[2].endswith("--source plugins/recsys") and got[4].endswith("--source dags/recommender_pipeline.py")
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
