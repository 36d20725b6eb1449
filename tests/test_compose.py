"""docker-compose.yaml for real: `docker compose up --wait` on a Docker engine, every service
healthy, then a DAG run triggered through the REST API succeeds inside the stack: the stages in
the jobs image (DockerOperator), the serving image built and pushed to the registry service (the
ECR API on the stack's moto records it), and deployed as a container that serves the new version.

Base images a user pulls (postgres, apache/airflow, motoserver/moto, registry, docker:cli) are
used where they are present or can be pulled; elsewhere (here: no Docker Hub) stand-ins with the
same interface are built from tests/standins/ on the python:3.11-slim stand-in of
scripts/ensure_docker.sh, and handed to compose through its variables.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.docker_fixtures import build_flags, docker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from real_airflow import RestClient  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.e2e]

# compose variable, the image a user pulls, the stand-in's Dockerfile in tests/standins/
BASES = (
    ("POSTGRES_IMAGE", "postgres:16", "postgres"),
    ("MOTO_IMAGE", "motoserver/moto:5.2.5", "moto"),
    ("REGISTRY_IMAGE", "registry:2", "registry"),
    ("AIRFLOW_BASE_IMAGE", "apache/airflow:3.3.2-python3.11", "airflow"),
    ("DOCKER_CLI_IMAGE", "docker:28-cli", "docker-cli"),
)


def base_image(env, official: str, standin: str) -> str:
    if docker(env, "image", "inspect", official, check=False).returncode == 0:
        return official
    if docker(env, "pull", "-q", official, check=False, timeout=120).returncode == 0:
        return official
    tag = f"recsys-standin/{standin}:test"
    docker(env, "build", *build_flags(env), "-f", f"{standin}.Dockerfile", "-t", tag, ".",
           cwd=ROOT / "tests" / "standins")
    return tag


@pytest.fixture(scope="module")
def compose(engine, jobs_image, tmp_path_factory):
    """The stack under a project name, network, container name and ports of its own."""
    if docker(engine, "compose", "version", check=False).returncode:
        why = "no `docker compose` (Compose v2): scripts/ensure_docker.sh installs it"
        if os.environ.get("RECSYS_REQUIRE_DOCKER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    name = f"recsys-test-{os.getpid()}"
    sock = engine["DOCKER_HOST"].removeprefix("unix://")
    ca = build_flags(engine)
    env = {**engine, "COMPOSE_PROJECT_NAME": name, "RECSYS_COMPOSE_NETWORK": name,
           "RECSYS_SERVE_CONTAINER": f"{name}-serve", "AIRFLOW_IMAGE_NAME": f"recsys-airflow:{name}",
           "RECSYS_JOB_IMAGE": jobs_image, "DOCKER_SOCKET": sock, "DOCKER_GID": str(os.stat(sock).st_gid),
           "AIRFLOW_PORT": str(free_port()), "MOTO_PORT": str(free_port()),
           "RECSYS_REGISTRY_PORT": str(free_port()), "RECSYS_SERVE_PORT": str(free_port()),
           "AIRFLOW_USE_JOB_SCHEDULE": "false",  # only the run this test triggers
           "AIRFLOW_JWT_SECRET": os.urandom(16).hex(), "AIRFLOW_API_SECRET_KEY": os.urandom(16).hex(),
           "_AIRFLOW_WWW_USER_PASSWORD": os.urandom(12).hex(),  # no default password any more
           "REGISTRY_PASSWORD": os.urandom(12).hex()}  # the registry's (else generated)
    # the stack's own moto (compose's default), never AWS: `AWS_ENDPOINT_URL=` (empty) would mean AWS
    env.pop("AWS_ENDPOINT_URL", None)
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    env.pop("AWS_SESSION_TOKEN", None)
    if ca:  # "--secret id=pip-ca,src=FILE"
        env["PIP_CA_FILE"] = ca[1].split("src=", 1)[1]
    for key, official, standin in BASES:
        env[key] = base_image(engine, official, standin)

    def run(*args, timeout=1800, check=True):
        res = subprocess.run([engine["RECSYS_DOCKER_CLI"], "compose", *args], env=env, cwd=ROOT, text=True,
                             capture_output=True, timeout=timeout, check=False)
        if check and res.returncode:
            logs = subprocess.run([engine["RECSYS_DOCKER_CLI"], "compose", "logs", "--tail", "40"], env=env,
                                  cwd=ROOT, text=True, capture_output=True, timeout=120, check=False).stdout
            raise AssertionError(f"docker compose {' '.join(args)} failed ({res.returncode}):\n"
                                 f"{res.stderr[-4000:]}\n--- logs ---\n{logs[-8000:]}")
        return res

    build = run("build", "airflow-init")
    print(build.stderr[-500:])
    try:
        yield run, env
    finally:
        for suffix in ("", "-previous"):
            docker(engine, "rm", "-f", f"{env['RECSYS_SERVE_CONTAINER']}{suffix}", check=False)
        run("down", "--volumes", "--remove-orphans", check=False, timeout=300)
        docker(engine, "rmi", env["AIRFLOW_IMAGE_NAME"], check=False)


def test_compose_comes_up_healthy_and_a_rest_triggered_run_builds_pushes_and_deploys(compose, engine):
    run, env = compose
    started = time.monotonic()
    run("up", "--wait", "--no-build", "--wait-timeout", "600", timeout=900)
    print(f"compose up --wait: {time.monotonic() - started:.0f} s")
    states = [json.loads(line) for line in run("ps", "--all", "--format", "json").stdout.splitlines() if line.strip()]
    by_service = {s["Service"]: s for s in states}
    for service in ("postgres", "moto", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "ecr-sync"):
        assert by_service[service]["Health"] == "healthy", by_service[service]
    assert by_service["registry"]["State"] == "running"
    for one_shot in ("secrets-init", "airflow-init", "seed"):
        assert by_service[one_shot]["State"] == "exited" and by_service[one_shot]["ExitCode"] == 0

    rest = RestClient(f"http://127.0.0.1:{env['AIRFLOW_PORT']}", username="airflow",
                      password=env["_AIRFLOW_WWW_USER_PASSWORD"])
    for _ in range(120):  # the dag-processor parses the mounted DAG
        try:
            rest.dag()
            break
        except RuntimeError:
            time.sleep(2)
    rest.unpause()
    dag_run = rest.trigger()
    triggered = time.monotonic()
    final = rest.wait_run(dag_run["dag_run_id"], timeout=1500)
    print(f"REST-triggered run: {final['state']} in {time.monotonic() - triggered:.0f} s")
    tis = rest.task_instances(dag_run["dag_run_id"])
    assert final["state"] == "success", {k: v["state"] for k, v in tis.items()}
    for task in ("build_image", "deploy", "record_live"):
        assert tis[task]["state"] == "success", (task, tis[task])

    # what build_image pushed is in the registry and in the stack's ECR API
    image = rest.xcom(dag_run["dag_run_id"], "build_image")
    registry = f"127.0.0.1:{env['RECSYS_REGISTRY_PORT']}"
    assert image.startswith(f"{registry}/recsys-serve:"), image
    tag = image.rsplit(":", 1)[1]
    tags = f"http://{registry}/v2/recsys-serve/tags/list"
    with pytest.raises(urllib.error.HTTPError) as refused:  # the registry requires its credentials
        urllib.request.urlopen(tags, timeout=10)
    assert refused.value.code == 401
    basic = base64.b64encode(f"recsys:{env['REGISTRY_PASSWORD']}".encode()).decode()
    with urllib.request.urlopen(urllib.request.Request(tags, headers={"Authorization": f"Basic {basic}"}),
                                timeout=10) as res:
        assert tag in json.load(res)["tags"]
    import boto3

    ecr = boto3.client("ecr", endpoint_url=f"http://127.0.0.1:{env['MOTO_PORT']}", region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    details = ecr.describe_images(repositoryName="recsys-serve", imageIds=[{"imageTag": tag}])["imageDetails"]
    assert details, "the push was not recorded in ECR"

    # the deployed container runs that image and serves the run's version on the published port
    container = json.loads(docker(engine, "inspect", env["RECSYS_SERVE_CONTAINER"]).stdout)[0]
    assert container["Config"]["Image"] == image and container["State"]["Running"]
    # on a network of its own: not the registry's, the API server's or the database's
    assert set(container["NetworkSettings"]["Networks"]) == {f"{env['RECSYS_COMPOSE_NETWORK']}-serve"}
    version = rest.xcom(dag_run["dag_run_id"], "plan")["model_version"]
    with urllib.request.urlopen(f"http://127.0.0.1:{env['RECSYS_SERVE_PORT']}/readyz", timeout=10) as res:
        assert json.load(res)["model_version"] == version
