"""The images on a real Docker engine: built, run against the moto server, pushed to a real
registry on loopback (ECR's API on moto) and rolled onto the ECS service.

The engine and the images are session fixtures (tests/docker_fixtures.py). Without an engine
these tests skip with the reason, except under RECSYS_REQUIRE_DOCKER=1 (CI), where that is a
failure.
"""

from __future__ import annotations

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
from tests.docker_fixtures import DOCKER_KEYS, ROOT, docker, size_mb

pytestmark = pytest.mark.docker


def test_build_context_is_small(engine):
    """.dockerignore keeps venvs, state and git out: the context is what the images COPY."""
    res = docker(engine, "build", "--no-cache", "-f", "-", ".", cwd=ROOT,
                 input="FROM scratch\nCOPY . /ctx\n", check=False)
    sizes = [line for line in (res.stdout + res.stderr).splitlines() if "transferring context" in line]
    assert sizes, res.stderr[-2000:]
    total = sizes[-1].split("transferring context:")[-1].split()[0]
    value = float(total.rstrip("kMGB"))
    unit = total.lstrip("0123456789.")
    mb = value * {"B": 1e-6, "kB": 1e-3, "MB": 1, "GB": 1e3}[unit]
    print(f"build context: {total}")
    assert mb < 20, f"build context {total}: check .dockerignore"


def test_serving_image_is_small_non_root_and_serves_from_dynamodb(engine, serve_image, aws):
    from tasks import table

    name = aws["table"]
    table.write_items(name, [table.rec_item("42", "v1", table.encode_items(["7", "9"], [4.5, 4.1], ["Seven", "Nine"]),
                                            "t", 0)])
    table.put_marker(name, "v1", 1, 2, "t", 0)
    info = json.loads(docker(engine, "image", "inspect", serve_image).stdout)[0]
    base = docker(engine, "image", "inspect", "--format", "{{.Size}}", "python:3.11-slim").stdout
    added = size_mb(engine, serve_image) - int(base) / 1e6
    print(f"serving image {size_mb(engine, serve_image):.0f} MB ({added:.0f} MB above python:3.11-slim)")
    assert info["Config"]["User"] == "10001"
    assert added < 75, f"serving image adds {added:.0f} MB to its base (target: <= 200 MB in all)"
    # no compiler, no pip, no build secret in the final image
    probe = docker(engine, "run", "--rm", "--entrypoint", "sh", serve_image, "-c",
                   "command -v gcc cc pip; ls /run/secrets 2>/dev/null; ls /opt/venv/bin", check=False)
    assert "gcc" not in probe.stdout and "/run/secrets" not in probe.stdout and "pip" not in probe.stdout.split()
    port = free_port()
    cid = docker(engine, "run", "-d", "--network", "host", "-e", f"AWS_ENDPOINT_URL={aws['endpoint']}",
                 "-e", "AWS_ACCESS_KEY_ID=testing", "-e", "AWS_SECRET_ACCESS_KEY=testing",
                 "-e", "AWS_DEFAULT_REGION=us-east-1", "-e", f"RECSYS_TABLE={name}", "-e", "MODEL_VERSION=v1",
                 serve_image, "python", "-m", "tasks.serve", "--host", "127.0.0.1", "--port", str(port)).stdout.strip()
    try:
        body = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/recommendations/42?n=2", timeout=2) as r:
                    body = json.load(r)
                break
            except OSError:
                time.sleep(0.2)
        assert body is not None, docker(engine, "logs", cid, check=False).stderr[-2000:]
        assert [i["item_id"] for i in body["items"]] == ["7", "9"] and body["model_version"] == "v1"
        head = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/healthz", method="HEAD"))
        assert head.status == 200
    finally:
        docker(engine, "rm", "-f", cid, check=False)


def test_push_goes_to_the_loopback_registry_ecr_records_it_and_ecs_rolls_onto_it(engine, registry_stack, boto,
                                                                                monkeypatch):
    """The DAG's build_image path (deploy.image.ensure_image) with RECSYS_REGISTRY: build, login with
    ECR's token, push; ECR's describe_images then finds the tag (not rebuilt the second time),
    the image pulls back from the registry, and the ECS roll registers exactly that reference."""
    from recsys import deploy
    from recsys.settings import Settings

    registry = registry_stack
    settings = Settings()
    ecr, ecs = boto("ecr"), boto("ecs")
    image = deploy.image.ensure_image(ecr, settings)
    tag = deploy.image.serving_image_tag(settings)
    assert image == f"{registry}/{settings.ecr_repository}:{tag}"
    uri = ecr.describe_repositories(repositoryNames=[settings.ecr_repository])["repositories"][0]["repositoryUri"]
    assert uri.split("/", 1)[0].endswith("amazonaws.com")  # what a push without the override targets
    for _ in range(100):  # the registry notifies asynchronously
        if deploy.image.image_exists(ecr, settings.ecr_repository, tag):
            break
        time.sleep(0.1)
    assert deploy.image.image_exists(ecr, settings.ecr_repository, tag)
    monkeypatch.setattr(deploy.image, "build_and_push", lambda *a: pytest.fail("rebuilt an image ECR already has"))
    assert deploy.image.ensure_image(ecr, settings) == image
    docker(engine, "rmi", image)
    docker(engine, "pull", image)

    class Stable:
        def wait(self, **kwargs):
            pass

    monkeypatch.setattr(ecs, "get_waiter", lambda name: Stable())
    moto_describe = ecs.describe_services

    def as_ecs_reports_a_completed_roll(**kwargs):
        """moto never starts a new deployment on UpdateService (its PRIMARY keeps the old revision)
        nor runs tasks; ECS, once the roll is steady, answers with one PRIMARY deployment of the
        revision the service names, rolloutState COMPLETED (tests/ecs_responses.py has the rest)."""
        out = moto_describe(**kwargs)
        for svc in out["services"]:
            primary = next(d for d in svc["deployments"] if d["status"] == "PRIMARY")
            svc["deployments"] = [{**primary, "taskDefinition": svc["taskDefinition"], "rolloutState": "COMPLETED",
                                   "runningCount": primary["desiredCount"], "pendingCount": 0}]
        return out

    monkeypatch.setattr(ecs, "describe_services", as_ecs_reports_a_completed_roll)
    rolled = deploy.ecs.deploy_ecs(ecs, settings, image, "v20261203")
    new = ecs.describe_task_definition(taskDefinition=rolled["task_definition"])["taskDefinition"]
    assert new["containerDefinitions"][0]["image"] == image


def test_a_failed_docker_build_says_why_in_the_error(engine, aws, boto, monkeypatch, tmp_path):
    from recsys import deploy
    from recsys.settings import Settings

    (tmp_path / "tasks" / "serve").mkdir(parents=True)
    (tmp_path / "tasks" / "serve" / "Dockerfile").write_text("FROM python:3.11-slim\nRUN exit 7\n")
    monkeypatch.setenv("DOCKER_HOST", engine["DOCKER_HOST"])
    settings = Settings(docker_cli=engine["RECSYS_DOCKER_CLI"], project_root=str(tmp_path), registry="127.0.0.1:9")
    with pytest.raises(RuntimeError, match=r"docker build failed \(exit \d+\): .*(exit code: 7|non-zero code: 7)"):
        deploy.image.build_and_push(boto("ecr"), settings, "123456789012.dkr.ecr.us-east-1.amazonaws.com/r", "t1")


def test_jobs_image_runs_each_stage_against_moto_with_its_compiled_kernels(engine, jobs_image, aws):
    """snapshot, train, score and finalize in the jobs image, as user 10001, against the moto
    server; the train and score stages load numba's cache compiled into the image
    (NUMBA_DEBUG_CACHE says "data loaded", never "data saved")."""
    from tasks import storage
    from tasks.data import generate

    base = f"s3://{aws['bucket']}"
    ratings, _ = generate(40, 60, 900, seed=3)
    storage.write_bytes(f"{base}/raw/ratings/part.csv", ratings.to_csv(index=False).encode())
    snap, model = f"{base}/datasets/ds=2026-12-01", f"{base}/models/vdocker"
    env = ["-e", f"AWS_ENDPOINT_URL={aws['endpoint']}", "-e", "AWS_ACCESS_KEY_ID=testing",
           "-e", "AWS_SECRET_ACCESS_KEY=testing", "-e", "AWS_DEFAULT_REGION=us-east-1"]

    def stage(*args, extra=()):
        return docker(engine, "run", "--rm", "--network", "host", *env, *extra, jobs_image, "python", "-m", *args)

    stage("tasks.data", "snapshot", "--raw", f"{base}/raw/ratings", "--ds", "2026-12-01", "--out", snap,
          "--quarantine", f"{base}/quarantine/ds=2026-12-01")
    train = stage("tasks.train", "--ratings", snap, "--sweeps", "2", "--out", model,
                  extra=("-e", "NUMBA_DEBUG_CACHE=1"))  # the Gibbs sampler's kernels
    score = stage("tasks.score", "--model", model, "--ratings", snap, "--model-version", "vdocker", "--top-n", "5",
                  "--table", aws["table"], extra=("-e", "NUMBA_DEBUG_CACHE=1"))
    for run in (train, score):
        log = run.stdout + run.stderr
        assert "data loaded" in log, log[-3000:]
        assert "data saved" not in log, "a kernel was compiled at run time:\n" + "\n".join(
            line for line in log.splitlines() if "data saved" in line)[:3000]
    stage("tasks.publish", "finalize", "--model", model, "--ratings", snap, "--model-version", "vdocker",
          "--top-n", "5", "--shards", "1", "--table", aws["table"])
    from tasks import table

    assert table.get_marker(aws["table"], "vdocker") is not None
    user = docker(engine, "run", "--rm", jobs_image, "id", "-u").stdout.strip()
    assert user == "10001"
    print(f"jobs image {size_mb(engine, jobs_image):.0f} MB")


@pytest.mark.e2e
def test_dags_test_with_docker_compute_builds_pushes_and_deploys(engine, jobs_image, registry, aws, boto, tmp_path):
    """`airflow dags test` with RECSYS_COMPUTE=docker: every stage runs in the jobs image through
    the docker provider's DockerOperator; build_image pushes the serving image to the loopback
    registry (ECR's API on moto records it); the local app serves the new version."""
    from recsys import infra
    from recsys.deploy.local import LocalServer
    from recsys.settings import Settings

    infra.up(Settings(), ecs=True, default_subnets=True)
    docker_env = {k: engine[k] for k in DOCKER_KEYS if k in engine}
    env = {**os.environ, **docker_env,
           "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "RECSYS_STATE_DIR": str(tmp_path / "state"), "RECSYS_SERVE_PORT": str(free_port()),
           "RECSYS_RETRY_DELAY_SECONDS": "1", "RECSYS_PROJECT_ROOT": str(ROOT),
           "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}", "RECSYS_COMPUTE": "docker", "RECSYS_JOB_IMAGE": jobs_image,
           "RECSYS_DOCKER_URL": engine["DOCKER_HOST"], "RECSYS_REGISTRY": registry}
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "tasks.data", "bootstrap", "--no-download",
                    "--raw", f"s3://{aws['bucket']}/raw/ratings", "--items", f"s3://{aws['bucket']}/raw/items"],
                   env=env, check=True, capture_output=True, timeout=120)
    try:
        res = subprocess.run([airflow, "dags", "test", "recommender_pipeline", "2026-12-01"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=1500)
        log = res.stdout + res.stderr
        assert res.returncode == 0, log[-4000:]
        assert f"Starting docker container from image {jobs_image}" in log, log[-4000:]
        ecr = boto("ecr")
        images = ecr.describe_images(repositoryName=Settings().ecr_repository)["imageDetails"]
        assert images and images[0]["imageTags"], "build_image pushed nothing ECR knows of"
        live = json.loads(boto("s3").get_object(Bucket=aws["bucket"], Key="models/_live.json")["Body"].read())
        assert live["model_version"].startswith("v20261201")
    finally:
        LocalServer(Settings(state_dir=str(tmp_path / "state"))).stop()


def test_container_deploy_runs_the_pushed_image_and_puts_the_previous_one_back_on_failure(
        engine, registry_stack, aws, boto, tmp_path, monkeypatch):
    """RECSYS_DEPLOY=docker (deploy.container.deploy_container): the serving container runs exactly the
    pushed reference, pulled back from the registry; a second version replaces it and keeps the
    first as <name>-previous; a version that never becomes ready is removed and the running one
    is started again, serving what it served."""
    from recsys import deploy
    from recsys.settings import Settings
    from tasks import table

    name = f"recsys-serve-test-{os.getpid()}"
    # the serving container's own read-only credentials file: it gets none of the worker's keys
    creds = tmp_path / "serve-credentials"
    creds.mkdir(mode=0o755)
    (creds / "credentials").write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    (creds / "credentials").chmod(0o644)
    monkeypatch.setenv("RECSYS_SERVE_CREDENTIALS", str(creds))
    settings = Settings(serve_container=name, docker_network="host", serve_port=free_port(),
                        docker_url=engine["DOCKER_HOST"])
    image = deploy.image.ensure_image(boto("ecr"), settings)
    docker(engine, "rmi", image)  # the deploy must pull it from the registry
    for version in ("v1", "v2"):
        table.write_items(aws["table"], [table.rec_item("42", version, table.encode_items(["7"], [4.5], ["S"]),
                                                        "t", 0)])
        table.put_marker(aws["table"], version, 1, 1, "t", 0)

    def served() -> str:
        url = f"http://127.0.0.1:{settings.serve_port}/readyz"
        with urllib.request.urlopen(url, timeout=5) as res:
            return json.load(res)["model_version"]

    try:
        first = deploy.container.deploy_container(settings, image, "v1", "42")
        assert served() == "v1" and first["previous"] is None
        running = json.loads(docker(engine, "inspect", name).stdout)[0]
        assert running["Config"]["Image"] == image and running["Config"]["User"] == "10001"
        env = dict(e.split("=", 1) for e in running["Config"]["Env"])
        assert "AWS_SECRET_ACCESS_KEY" not in env and "AWS_ACCESS_KEY_ID" not in env
        assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/run/recsys-aws/credentials"
        assert [(m["Source"], m["RW"]) for m in running["Mounts"]] == [(str(creds), False)]
        second = deploy.container.deploy_container(settings, image, "v2", "42")
        assert served() == "v2" and second["previous"] == "v1"
        kept = json.loads(docker(engine, "inspect", f"{name}-previous").stdout)[0]
        assert kept["Config"]["Labels"]["recsys.model_version"] == "v1" and not kept["State"]["Running"]
        assert deploy.container.current_container_image(settings) == image
        with pytest.raises(RuntimeError, match="did not report v3-unpublished"):
            deploy.container.deploy_container(settings, image, "v3-unpublished", "42", smoke_timeout=8)
        assert served() == "v2"
        assert docker(engine, "ps", "-a", "--filter", f"name=^{name}$", "--format", "{{.Labels}}").stdout.count(
            "recsys.model_version=v2") == 1
    finally:
        docker(engine, "rm", "-f", name, f"{name}-previous", check=False)


def test_jobs_image_push_lands_in_ecr_as_the_ecs_job_task_definition_names_it(engine, jobs_image, registry_stack,
                                                                               boto):
    """`python -m recsys.deploy push-jobs-image --image LOCAL`: the jobs image goes to the registry
    under its content tag and ``latest``; ECR's API records both; the ECS job task definition
    ``recsys.infra`` registered runs that repository's ``latest``; the image pulls back and runs
    as uid 10001."""
    from recsys import deploy
    from recsys.settings import Settings

    registry = registry_stack
    settings = Settings()
    ecr = boto("ecr")
    refs = deploy.image.push_jobs_image(ecr, settings, jobs_image)
    tag = deploy.image.image_tag(settings.project_root, deploy.image.JOBS_IMAGE_INPUTS)
    repo = f"{registry}/{settings.ecr_jobs_repository}"
    assert refs == [f"{repo}:{tag}", f"{repo}:latest"]
    assert tag != deploy.image.image_tag(settings.project_root)  # not the serving image's tag
    for _ in range(200):  # the registry notifies asynchronously
        found = {t for d in ecr.describe_images(repositoryName=settings.ecr_jobs_repository)["imageDetails"]
                 for t in d.get("imageTags", [])}
        if {tag, "latest"} <= found:
            break
        time.sleep(0.1)
    assert {tag, "latest"} <= found
    job = boto("ecs").describe_task_definition(taskDefinition=settings.ecs_job_task_definition)["taskDefinition"]
    assert job["containerDefinitions"][0]["image"].split("/", 1)[1] == refs[1].split("/", 1)[1]
    for ref in refs:
        docker(engine, "rmi", ref)
    docker(engine, "pull", refs[0])
    assert docker(engine, "run", "--rm", refs[0], "id", "-u").stdout.strip() == "10001"
    docker(engine, "rmi", refs[0], check=False)


def test_the_compose_registry_refuses_pushes_without_the_credentials_secrets_init_generates(engine, tmp_path,
                                                                                            monkeypatch):
    """The compose stack's registry had no authentication. With deploy/compose/registry.yml's auth and
    the htpasswd secrets-init writes (Debian's build of the registry, as in the registry stand-in): a
    push without login is refused; the push path's login (RECSYS_REGISTRY_CREDENTIALS through `docker
    login`) pushes; ecr-sync's manifest read (scripts/registry.py) authenticates with the same file."""
    import importlib.util
    import shutil

    import yaml

    from recsys import deploy
    from recsys.settings import Settings
    from tests.conftest import free_port

    exe = shutil.which("docker-registry") or shutil.which("registry")
    if exe is None:
        pytest.skip("no registry binary (apt-get install docker-registry)")
    secrets_dir, auth_dir = tmp_path / "secrets", tmp_path / "auth"
    auth_dir.mkdir()
    for key, value in {"RECSYS_SECRETS_DIR": secrets_dir, "RECSYS_REGISTRY_AUTH_DIR": auth_dir,
                       "RECSYS_SERVE_CREDENTIALS_DIR": tmp_path / "none"}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("REGISTRY_PASSWORD", raising=False)
    spec = importlib.util.spec_from_file_location("compose_secrets", ROOT / "deploy" / "compose" / "secrets.py")
    secrets_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(secrets_mod)
    assert secrets_mod.main() == 0
    creds = secrets_dir / "registry_credentials"

    port = free_port()
    config = yaml.safe_load((ROOT / "deploy" / "compose" / "registry.yml").read_text())
    config.pop("notifications")  # no ecr-sync here
    config["storage"]["filesystem"]["rootdirectory"] = str(tmp_path / "data")
    config["http"]["addr"] = f"127.0.0.1:{port}"
    config["auth"]["htpasswd"]["path"] = str(auth_dir / "htpasswd")
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config))
    log = open(tmp_path / "registry.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([exe, "serve", str(tmp_path / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                pytest.fail("the registry answered /v2/ without credentials")
            except urllib.error.HTTPError as err:
                assert err.code == 401
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail((tmp_path / "registry.log").read_text()[-2000:])

        env = {**engine, "DOCKER_CONFIG": str(tmp_path / "docker-config")}
        ref = f"127.0.0.1:{port}/recsys-serve:t1"
        (tmp_path / "ctx").mkdir()
        (tmp_path / "ctx" / "x").write_text("x")
        docker(env, "build", "-t", ref, "-f", "-", str(tmp_path / "ctx"), input="FROM scratch\nCOPY x /x\n")
        refused = docker(env, "push", ref, check=False)
        assert refused.returncode and ("no basic auth credentials" in refused.stderr
                                       or "unauthorized" in refused.stderr.lower()), refused.stderr[-1000:]

        for key in ("DOCKER_HOST", "DOCKER_CONFIG"):
            monkeypatch.setenv(key, env[key])

        class NoEcr:
            def get_authorization_token(self):
                raise AssertionError("the registry's own credentials are given: no ECR token")

        settings = Settings(docker_cli=engine["RECSYS_DOCKER_CLI"], registry=f"127.0.0.1:{port}",
                            registry_credentials=str(creds))
        deploy.image.login(NoEcr(), settings)
        deploy.image._docker(settings, ["push", ref], "push")

        monkeypatch.setenv("RECSYS_REGISTRY_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("RECSYS_REGISTRY_CREDENTIALS", str(creds))
        spec = importlib.util.spec_from_file_location("registry_script", ROOT / "scripts" / "registry.py")
        registry = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(registry)
        assert registry.running()
        req = urllib.request.Request(registry.url("/v2/recsys-serve/tags/list"), headers=registry.auth_headers())
        with urllib.request.urlopen(req, timeout=5) as res:
            assert json.load(res)["tags"] == ["t1"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
