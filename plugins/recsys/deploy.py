"""Build the serving image, roll it out, and roll back when the new version is unhealthy.

- :func:`image_tag` hashes what goes into the serving image, so an unchanged
  image is never rebuilt or pushed twice. :func:`serving_image_tag` is the tag a worker
  deploys: ``RECSYS_IMAGE_TAG``, else the one ``make bundle`` recorded in
  ``recsys/_bundle.json`` (managed workers have no sources), else the hash of the sources.
- :func:`deploy_ecs` registers a task-definition revision (new image + ``MODEL_VERSION``),
  updates the service, waits for steady state, verifies ECS's deployment record and restores the
  previous revision where ECS has not (:mod:`recsys.ecs_rollout`, shared with the DAG's operator).
- :func:`deploy_local` (re)starts ``python -m tasks.serve`` on this machine with
  the new ``MODEL_VERSION`` and smoke-tests it, restarting the previous version on failure.
- :func:`deploy_container` (``RECSYS_DEPLOY=docker``, the docker-compose stack) runs the pushed
  serving image as the container ``RECSYS_SERVE_CONTAINER`` on a Docker engine, pulled from the
  registry it was pushed to, and puts the previous container back on failure.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.resources
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recsys.settings import Settings

log = logging.getLogger(__name__)

IMAGE_INPUTS = ("tasks", "requirements/serve.lock")
SERVE_DOCKERFILE = "tasks/serve/Dockerfile"
# The jobs image (RECSYS_COMPUTE=ecs runs the stages from it): `python -m recsys.deploy push-jobs-image`
JOBS_IMAGE_INPUTS = ("tasks", "requirements/torch.txt", "requirements/jobs.lock")
JOBS_DOCKERFILE = "tasks/train/Dockerfile"
# Fields of a described task definition that register_task_definition accepts back.
TASKDEF_FIELDS = ("family", "taskRoleArn", "executionRoleArn", "networkMode", "volumes", "placementConstraints",
                  "requiresCompatibilities", "cpu", "memory", "pidMode", "ipcMode", "proxyConfiguration",
                  "inferenceAccelerators", "ephemeralStorage", "runtimePlatform")


def image_tag(root: str, inputs: tuple[str, ...] = IMAGE_INPUTS) -> str:
    """Content hash of an image's inputs (sources, Dockerfile, requirements): the serving image's
    by default."""
    digest = hashlib.sha256()
    base = Path(root)
    files = []
    for entry in inputs:
        path = base / entry
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    for path in files:
        if path.exists() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(base)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


BUNDLE_FILE = "_bundle.json"


def bundle_info() -> dict:
    """What ``make bundle`` recorded beside this package (``{}`` in a source checkout)."""
    try:
        return json.loads(importlib.resources.files("recsys").joinpath(BUNDLE_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return {}


class ImageUnavailable(RuntimeError):
    """The serving image is not in ECR and cannot be built here."""


class NoDockerEngine(ImageUnavailable):
    """The image must be built but no Docker engine is reachable."""


def missing_sources(root: str) -> list[str]:
    return [entry for entry in IMAGE_INPUTS if not (Path(root) / entry).exists()]


def serving_image_tag(settings: Settings) -> str:
    """The serving image tag this worker deploys (see the module docstring)."""
    if settings.image_tag:
        return settings.image_tag
    if bundle_info().get("serving_image_tag"):
        return bundle_info()["serving_image_tag"]
    missing = missing_sources(settings.project_root)
    if missing:
        raise ImageUnavailable(
            f"no serving image tag: RECSYS_IMAGE_TAG is unset, recsys/{BUNDLE_FILE} (written by `make bundle`) "
            f"is absent and the image's sources ({', '.join(missing)}) are not under RECSYS_PROJECT_ROOT="
            f"{settings.project_root}. Deploy the plugins from `make bundle`, or set RECSYS_IMAGE_TAG.")
    return image_tag(settings.project_root)


def docker_engine_available(timeout: float = 10.0, cli: str = "docker") -> tuple[bool, str]:
    if shutil.which(cli) is None:
        return False, f"no {cli} client on PATH"
    try:
        res = subprocess.run([cli, "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                             text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, "docker info timed out"
    if res.returncode != 0:
        why = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "docker info failed"
        return False, f"no Docker engine reachable ({why})"
    return True, f"Docker engine {res.stdout.strip()}"


def image_exists(ecr, repository: str, tag: str) -> bool:
    try:
        ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
    except ecr.exceptions.ImageNotFoundException:
        return False
    return True


PUSH_HINT = ("push it from a checkout of the bundled commit with a Docker engine: "
             "`make push-image` (or `RECSYS_IMAGE_TAG={tag} make push-image`)")


def ensure_image(ecr, settings: Settings) -> str:
    """The serving image URI in ECR for this deployment: built and pushed if its tag is new
    and this machine can (sources and a Docker engine), else :class:`ImageUnavailable`."""
    repo = ecr.describe_repositories(repositoryNames=[settings.ecr_repository])["repositories"][0]
    tag = serving_image_tag(settings)
    image = push_target(settings, repo["repositoryUri"], tag)
    if image_exists(ecr, settings.ecr_repository, tag):
        log.info("image %s already in ECR: not rebuilt", image)
        return image
    missing = missing_sources(settings.project_root)
    if missing:
        raise ImageUnavailable(f"serving image {image} is not in ECR, and this worker cannot build it (no "
                               f"{', '.join(missing)} under {settings.project_root}): "
                               + PUSH_HINT.format(tag=tag))
    if not settings.build_image:
        raise ImageUnavailable(f"serving image {image} is not in ECR and image builds are off here "
                               "(RECSYS_BUILD_IMAGE=0). " + PUSH_HINT.format(tag=tag))
    ok, why = docker_engine_available(cli=settings.docker_cli)
    if not ok:
        raise NoDockerEngine(f"serving image {image} is not in ECR and cannot be built here: {why}. "
                             + PUSH_HINT.format(tag=tag))
    return build_and_push(ecr, settings, repo["repositoryUri"], tag)


def _docker(settings: Settings, args: list[str], what: str, **kwargs) -> None:
    """Run a docker command; its output goes to the task log, its error output into the exception."""
    res = subprocess.run([settings.docker_cli, *args], text=True, capture_output=True, check=False, **kwargs)
    for line in ((res.stdout or "") + (res.stderr or "")).splitlines()[-40:]:
        log.info("docker %s: %s", what, line)
    if res.returncode:
        raise RuntimeError(f"docker {what} failed (exit {res.returncode}): {(res.stderr or '').strip()[-2000:]}")


def push_target(settings: Settings, repository_uri: str, tag: str) -> str:
    """The image reference to push and deploy: the ECR repository URI, or the same repository
    path in ``RECSYS_REGISTRY`` when that is set."""
    if not settings.registry:
        return f"{repository_uri}:{tag}"
    return f"{settings.registry.rstrip('/')}/{repository_uri.split('/', 1)[1]}:{tag}"


def _build(settings: Settings, dockerfile: str, image: str) -> None:
    """docker build of the project's ``dockerfile`` as ``image``, with ``RECSYS_DOCKER_BUILD_FLAGS``."""
    flags = shlex.split(settings.docker_build_flags)
    _docker(settings, ["build", *flags, "-f", dockerfile, "-t", image, "."], "build", cwd=settings.project_root)


def login(ecr, settings: Settings) -> None:
    """docker login to the registry with ECR's authorization token."""
    auth = ecr.get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(auth["authorizationToken"]).decode().split(":", 1)
    registry = settings.registry or auth["proxyEndpoint"]
    _docker(settings, ["login", "--username", user, "--password-stdin", registry], "login", input=password)


def build_and_push(ecr, settings: Settings, repository_uri: str, tag: str,
                   dockerfile: str = SERVE_DOCKERFILE) -> str:
    """docker build + login (ECR's authorization token) + push; the caller has checked that the
    tag is new. Returns the pushed reference."""
    image = push_target(settings, repository_uri, tag)
    _build(settings, dockerfile, image)
    login(ecr, settings)
    _docker(settings, ["push", image], "push")
    log.info("pushed %s", image)
    return image


def push_jobs_image(ecr, settings: Settings, local_image: str | None = None) -> list[str]:
    """The jobs image into ECR (``RECSYS_ECR_JOBS_REPOSITORY``) under its content tag and
    ``latest`` (what the ECS job task definition of ``recsys.infra`` runs). ``local_image``: an
    image built already (with your own build flags) is tagged and pushed instead of building."""
    repo = ecr.describe_repositories(repositoryNames=[settings.ecr_jobs_repository])["repositories"][0]
    tag = image_tag(settings.project_root, JOBS_IMAGE_INPUTS)
    refs = [push_target(settings, repo["repositoryUri"], t) for t in (tag, "latest")]
    if local_image is None:
        ok, why = docker_engine_available(cli=settings.docker_cli)
        if not ok:
            raise NoDockerEngine(f"cannot build the jobs image here: {why}")
        _build(settings, JOBS_DOCKERFILE, refs[0])
    else:
        _docker(settings, ["tag", local_image, refs[0]], "tag")
    _docker(settings, ["tag", refs[0], refs[1]], "tag")
    login(ecr, settings)
    for ref in refs:
        _docker(settings, ["push", ref], "push")
        log.info("pushed %s", ref)
    return refs


def jobs_image_tag(settings: Settings) -> str:
    """The jobs image tag a run's stages use: the one ``make bundle`` recorded in
    ``recsys/_bundle.json`` (managed workers have no sources), else the hash of the sources, the
    tag :func:`push_jobs_image` pushes."""
    if bundle_info().get("jobs_image_tag"):
        return bundle_info()["jobs_image_tag"]
    missing = [e for e in JOBS_IMAGE_INPUTS if not (Path(settings.project_root) / e).exists()]
    if missing:
        raise ImageUnavailable(
            f"no jobs image tag: recsys/{BUNDLE_FILE} (written by `make bundle`) has none and the jobs image's "
            f"sources ({', '.join(missing)}) are not under RECSYS_PROJECT_ROOT={settings.project_root}. "
            "Deploy the plugins from `make bundle`.")
    return image_tag(settings.project_root, JOBS_IMAGE_INPUTS)


def resolve_jobs_image(ecr, settings: Settings) -> str:
    """``<repository uri>@<digest>`` of the jobs image under this code's tag: a digest names one image
    for good, so a later push (of ``latest`` or of any tag) cannot change what a run's stages run."""
    name = settings.ecr_jobs_repository
    uri = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]["repositoryUri"]
    tag = jobs_image_tag(settings)
    try:
        details = ecr.describe_images(repositoryName=name, imageIds=[{"imageTag": tag}])["imageDetails"]
    except ecr.exceptions.ImageNotFoundException:
        details = []
    if not details:
        raise ImageUnavailable(
            f"jobs image {uri}:{tag} is not in ECR: the stages of this run would have no image of this code. "
            "Push it (`make push-jobs-image`, from the same commit as the deployed plugins), then trigger the run "
            "again.")
    return f"{uri}@{details[0]['imageDigest']}"


def jobs_task_definition(ecs, settings: Settings, image: str) -> str:
    """ARN (``family:revision``) of a jobs task-definition revision running ``image``: the latest
    revision when it already does, else a new revision copying it with only the image changed."""
    family = settings.ecs_job_task_definition
    try:
        current = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
    except ecs.exceptions.ClientException as err:
        raise ImageUnavailable(f"jobs task definition {family} not found ({err}): run `python -m recsys.infra up "
                               "--ecs` (or set RECSYS_ECS_JOB_TASK_DEFINITION)") from None
    images = {c["name"]: c["image"] for c in current["containerDefinitions"]}
    if settings.ecs_container not in images:
        raise ValueError(f"container {settings.ecs_container!r} not in task definition {family} ({list(images)}); "
                         "set RECSYS_ECS_CONTAINER")
    if images[settings.ecs_container] == image:
        return current["taskDefinitionArn"]
    args = {k: current[k] for k in TASKDEF_FIELDS if current.get(k)}
    args["containerDefinitions"] = [{**c, "image": image} if c["name"] == settings.ecs_container else c
                                    for c in current["containerDefinitions"]]
    arn = ecs.register_task_definition(**args)["taskDefinition"]["taskDefinitionArn"]
    log.info("registered jobs task definition %s (image %s)", arn, image)
    return arn


# -- ECS ---------------------------------------------------------------------

def new_task_definition(current: dict, container: str, image: str, model_version: str,
                        table: str | None = None) -> dict:
    """Arguments of register_task_definition: ``current`` with a new image and MODEL_VERSION
    (and RECSYS_TABLE when given: the table the version's rows are in)."""
    args = {k: current[k] for k in TASKDEF_FIELDS if current.get(k)}
    containers = []
    found = False
    for c in current["containerDefinitions"]:
        c = json.loads(json.dumps(c))  # deep copy
        if c["name"] == container:
            found = True
            c["image"] = image
            new_env = {"MODEL_VERSION": model_version, **({"RECSYS_TABLE": table} if table else {})}
            env = [e for e in c.get("environment", []) if e["name"] not in new_env]
            c["environment"] = [*env, *({"name": k, "value": v} for k, v in new_env.items())]
        containers.append(c)
    if not found:
        names = [c["name"] for c in current["containerDefinitions"]]
        raise ValueError(f"container {container!r} not in task definition {current.get('family')} ({names}); "
                         "set RECSYS_ECS_CONTAINER")
    args["containerDefinitions"] = containers
    return args


def register_revision(ecs, cluster: str, service: str, container: str, image: str, model_version: str,
                      table: str | None = None) -> tuple[str, str]:
    """Register a revision of the service's task definition with the new image and
    MODEL_VERSION and point the service at it. Returns (new revision, the one it replaced)."""
    described = ecs.describe_services(cluster=cluster, services=[service])["services"][0]
    previous = described["taskDefinition"]
    current = ecs.describe_task_definition(taskDefinition=previous)["taskDefinition"]
    registered = ecs.register_task_definition(**new_task_definition(current, container, image, model_version, table))
    new_arn = registered["taskDefinition"]["taskDefinitionArn"]
    log.info("registered %s (image %s, MODEL_VERSION=%s); rolling %s", new_arn, image, model_version, service)
    ecs.update_service(cluster=cluster, service=service, taskDefinition=new_arn)
    return new_arn, previous


def restore_revision(ecs, cluster: str, service: str, previous: str, failed: str) -> None:
    """Point the service back at ``previous`` (the rollback of :func:`register_revision`)."""
    log.error("deployment of %s failed; rolling %s back to %s", failed, service, previous)
    ecs.update_service(cluster=cluster, service=service, taskDefinition=previous)


def deploy_ecs(ecs, settings: Settings, image: str, model_version: str, *, table: str | None = None,
               wait_delay: int = 15, wait_attempts: int = 40, elbv2=None) -> dict:
    """The blocking roll of ``python -m recsys.rollback``: :func:`recsys.ecs_rollout.roll`, the same
    register, wait, verify and roll back as the DAG's
    :class:`recsys.operators.ecs_roll.EcsRollServiceOperator`."""
    from recsys import ecs_rollout

    return ecs_rollout.roll(ecs, settings.ecs_cluster, settings.ecs_service, settings.ecs_container, image,
                            model_version, table=table, elbv2=elbv2,
                            smoke=smoke_check(settings.smoke_url or None, model_version),
                            delay=wait_delay, attempts=wait_attempts)


# -- local -------------------------------------------------------------------

def http_json(url: str, timeout: float = 5.0) -> tuple[int, dict]:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # nosec B310 # scheme checked above
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def smoke_check(url: str | None, model_version: str, timeout: float = 60.0) -> Callable[[Callable[[], str | None]],
                                                                                          dict | None]:
    """The smoke test of an ECS roll: ``/readyz`` at ``url`` (``RECSYS_SMOKE_URL``), else at the
    endpoint of the service's load balancer (``endpoint()`` finds it); none without either."""
    def smoke(endpoint: Callable[[], str | None]) -> dict | None:
        base = url or endpoint()
        if not base:
            log.info("no smoke test: RECSYS_SMOKE_URL is unset and the service has no load balancer")
            return None
        return smoke_test(base, model_version, timeout=timeout)

    return smoke


def smoke_test(base_url: str, model_version: str, user_id: str | None = None, timeout: float = 60.0) -> dict:
    """Wait for /readyz to report ``model_version``, then fetch one user's recommendations."""
    deadline = time.monotonic() + timeout
    status, body = 0, dict[str, Any]()
    while time.monotonic() < deadline:
        try:
            status, body = http_json(f"{base_url}/readyz")
            if status == 200 and body.get("model_version") == model_version:
                break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    else:
        raise RuntimeError(f"{base_url}/readyz did not report {model_version} within {timeout:.0f}s "
                           f"(last: {status} {body})")
    if user_id is not None:
        status, recs = http_json(f"{base_url}/recommendations/{user_id}?n=5")
        if status != 200 or not recs.get("items"):
            raise RuntimeError(f"smoke test: /recommendations/{user_id} answered {status} {recs}")
        return recs
    return body


# What the local serving app may see of the worker's environment: AWS access, its own
# settings, the interpreter's basics. Never the worker's secrets (Airflow DB URL,
# Fernet key, JWT secret: every AIRFLOW_* variable).
SERVING_ENV_PREFIXES = ("AWS_", "RECSYS_")
SERVING_ENV_NAMES = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
                     "MODEL_VERSION", "VIRTUAL_ENV", "TMPDIR")


def serving_env(environ) -> dict[str, str]:
    """The allow-listed part of ``environ`` handed to the local serving app."""
    return {k: v for k, v in environ.items() if k in SERVING_ENV_NAMES or k.startswith(SERVING_ENV_PREFIXES)}


class LocalServer:
    """The serving app as a background process on this machine (pid + version in the state dir)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.dir = settings.state_path
        self.pid_file = self.dir / "serve.json"

    @property
    def url(self) -> str:
        return f"http://{self.settings.serve_host}:{self.settings.serve_port}"

    def current(self) -> dict | None:
        try:
            state = json.loads(self.pid_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        try:
            os.kill(state["pid"], 0)
        except ProcessLookupError:
            return None
        return state

    def stop(self) -> None:
        state = self.current()
        if state:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(state["pid"], signal.SIGTERM)
            for _ in range(50):
                try:
                    os.kill(state["pid"], 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)

    def start(self, model_version: str, table: str | None = None) -> dict:
        self.dir.mkdir(parents=True, exist_ok=True)
        table = table or self.settings.table
        env = {**serving_env(os.environ), "MODEL_VERSION": model_version, "RECSYS_TABLE": table,
               "PYTHONPATH": self.settings.project_root}
        with open(self.dir / "serve.log", "ab") as log_file:
            # Detached like a real service: its own session, no inherited stdin or
            # descriptors (the task's supervisor sockets would keep the task open).
            proc = subprocess.Popen(
                [self.settings.python, "-m", "tasks.serve", "--host", self.settings.serve_host,
                 "--port", str(self.settings.serve_port)],
                cwd=self.settings.project_root, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, close_fds=True, start_new_session=True)
        state = {"pid": proc.pid, "model_version": model_version, "table": table, "url": self.url,
                 "log": str(self.dir / "serve.log")}
        self.pid_file.write_text(json.dumps(state))
        return state


def deploy_local(settings: Settings, model_version: str, smoke_user: str | None,
                 table: str | None = None) -> dict:
    server = LocalServer(settings)
    previous = server.current()
    server.stop()
    state = server.start(model_version, table)
    try:
        smoke_test(server.url, model_version, smoke_user)
    except Exception:
        log.exception("local deploy of %s failed; see %s", model_version, server.dir / "serve.log")
        server.stop()
        if previous:
            log.warning("restarting the previous version %s", previous["model_version"])
            server.start(previous["model_version"], previous.get("table"))
        raise
    log.info("serving %s at %s (pid %s)", model_version, server.url, state["pid"])
    return {**state, "previous": previous and previous["model_version"]}


# -- a container on a Docker engine (RECSYS_DEPLOY=docker) --------------------

def _engine(settings: Settings):
    """The docker provider's API client for ``RECSYS_DOCKER_URL``."""
    from airflow.providers.docker.hooks.docker import DockerHook

    return DockerHook(docker_conn_id=None, base_url=settings.docker_url).api_client


def _split_image(image: str) -> tuple[str, str]:
    repository, _, tag = image.rpartition(":")
    if not repository or "/" in tag:
        raise ValueError(f"image reference without a tag: {image!r}")
    return repository, tag


# The worker's credentials never reach the serving container: long-lived keys in a long-running,
# network-facing container would outlive any rotation and carry the worker's write scope.
WORKER_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                      "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
                      "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                      "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN")
SERVE_CREDENTIALS_DIR = "/run/recsys-aws"  # where the container reads RECSYS_SERVE_CREDENTIALS


def container_env(environ, model_version: str, table: str) -> dict[str, str]:
    """What the serving container sees: the worker's AWS settings (region, endpoint) and RECSYS
    variables and its version. Never the worker's credentials (:data:`WORKER_CREDENTIALS`) nor
    anything else (no PATH, no AIRFLOW_* secrets): the image sets its own environment. With
    ``RECSYS_SERVE_CREDENTIALS`` (a credentials file for the serving role's read-only scope, see
    :func:`credentials_mount`) the SDK reads that file; without it, the engine host's role."""
    env = {k: v for k, v in environ.items() if k.startswith(SERVING_ENV_PREFIXES) and k not in WORKER_CREDENTIALS}
    if environ.get("RECSYS_SERVE_CREDENTIALS"):
        env["AWS_SHARED_CREDENTIALS_FILE"] = f"{SERVE_CREDENTIALS_DIR}/credentials"
    return {**env, "MODEL_VERSION": model_version, "RECSYS_TABLE": table}


def credentials_mount(environ) -> dict:
    """``RECSYS_SERVE_CREDENTIALS``, an AWS shared-credentials file (profile ``default``) for the
    serving app, as a read-only bind: a folder holding ``credentials`` (a path on the engine's
    host, starting with ``/``) or the name of a Docker volume holding it (the compose stack's)."""
    source = environ.get("RECSYS_SERVE_CREDENTIALS")
    return {source: {"bind": SERVE_CREDENTIALS_DIR, "mode": "ro"}} if source else {}


def deploy_container(settings: Settings, image: str, model_version: str, smoke_user: str | None,
                     table: str | None = None, *, client=None, smoke_timeout: float = 90.0) -> dict:
    """Run ``image`` (as pushed) as the serving container and smoke-test it.

    The running container ``RECSYS_SERVE_CONTAINER`` is stopped and kept as ``<name>-previous``
    (replacing an older one); the new one is pulled from its registry and started on
    ``RECSYS_DOCKER_NETWORK``, published on ``RECSYS_SERVE_HOST:RECSYS_SERVE_PORT``. If it does not
    report ``model_version`` on ``/readyz`` (at ``RECSYS_SMOKE_URL``, default the published
    address), it is removed and the previous container started again.
    """
    client = _engine(settings) if client is None else client
    import docker.errors

    name = settings.serve_container
    backup = f"{name}-previous"
    table = table or settings.table
    repository, tag = _split_image(image)
    for line in client.pull(repository, tag=tag, stream=True, decode=True):
        if line.get("error"):
            raise RuntimeError(f"docker pull {image}: {line['error']}")
    log.info("pulled %s", image)

    def inspect(ref: str) -> dict | None:
        try:
            return client.inspect_container(ref)
        except docker.errors.NotFound:
            return None

    previous = inspect(name)
    before = previous and (previous["Config"].get("Labels") or {}).get("recsys.model_version")
    if previous is not None:
        if inspect(backup) is not None:
            client.remove_container(backup, force=True)
        client.stop(name, timeout=10)
        client.rename(name, backup)
    host_net = settings.docker_network == "host"
    # on its own network the image's CMD serves on :8080, published on RECSYS_SERVE_HOST only;
    # on the host's network it listens where the published port would have been
    command = (["python", "-m", "tasks.serve", "--host", settings.serve_host, "--port", str(settings.serve_port)]
               if host_net else None)
    host_config = client.create_host_config(
        network_mode=settings.docker_network, restart_policy={"Name": "unless-stopped"},
        port_bindings=None if host_net else {8080: (settings.serve_host, settings.serve_port)},
        binds=credentials_mount(os.environ) or None)
    url = settings.smoke_url or f"http://{settings.serve_host}:{settings.serve_port}"
    created = None
    try:  # a container that cannot be created or started rolls back like one that is not ready
        created = client.create_container(
            image, command=command, name=name, environment=container_env(os.environ, model_version, table),
            host_config=host_config, labels={"recsys.model_version": model_version, "recsys.table": table},
            ports=None if host_net else [8080])
        client.start(created["Id"])
        smoke_test(url, model_version, smoke_user, timeout=smoke_timeout)
    except Exception:
        if created is not None:
            logs = client.logs(created["Id"], tail=40).decode(errors="replace")
            log.exception("container %s (%s, %s) failed its smoke test at %s; its last log lines:\n%s",
                          name, image, model_version, url, logs)
            client.remove_container(created["Id"], force=True)
        else:
            log.exception("container %s (%s, %s) could not be created", name, image, model_version)
        if previous is not None:
            client.rename(backup, name)
            client.start(name)
            log.warning("restarted the previous container (%s, %s)", previous["Config"]["Image"], before)
            if before:
                try:  # the error raised is the new version's; this only says whether the old one is back
                    smoke_test(url, before, timeout=smoke_timeout)
                    log.warning("the previous container serves %s again at %s", before, url)
                except Exception:
                    log.exception("the previous container did not become ready at %s", url)
        raise
    log.info("serving %s from %s at %s (container %s)", model_version, image, url, created["Id"][:12])
    return {"container": created["Id"], "image": image, "model_version": model_version, "table": table,
            "url": url, "previous": before}


def current_container_image(settings: Settings, *, client=None) -> str:
    """The image the serving container runs now (what a rollback keeps)."""
    client = _engine(settings) if client is None else client
    return client.inspect_container(settings.serve_container)["Config"]["Image"]


def main(argv: list[str] | None = None) -> int:
    """``python -m recsys.deploy push-image | push-jobs-image [--image LOCAL] | image-tag``: build and
    push the serving image the DAG will deploy, or the jobs image ECS runs the stages from."""
    import argparse

    import boto3

    parser = argparse.ArgumentParser(prog="python -m recsys.deploy")
    parser.add_argument("command", choices=["push-image", "push-jobs-image", "image-tag"])
    parser.add_argument("--image", help="push-jobs-image: push this local image instead of building one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if args.command == "image-tag":
        print(serving_image_tag(settings))
        return 0
    ecr = boto3.client("ecr", region_name=settings.region)
    try:
        if args.command == "push-jobs-image":
            print("\n".join(push_jobs_image(ecr, settings, args.image)))
            return 0
        print(ensure_image(ecr, settings))
    except (ImageUnavailable, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
