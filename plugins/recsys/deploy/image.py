"""The serving and jobs images: content tags, ECR lookups, ``docker build``/``push``.

:func:`image_tag` hashes what goes into an image, so an unchanged image is never rebuilt or pushed
twice. :func:`serving_image_tag` is the tag a worker deploys: ``RECSYS_IMAGE_TAG``, else the one
``make bundle`` recorded in ``recsys/_bundle.json`` (managed workers have no sources), else the hash
of the sources. :func:`resolve_jobs_image` pins the jobs image of a run by digest.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import json
import logging
import shlex
import shutil
import subprocess
from pathlib import Path

from recsys.settings import Settings

log = logging.getLogger(__name__)

IMAGE_INPUTS = ("tasks", "requirements/serve.lock")
SERVE_DOCKERFILE = "tasks/serve/Dockerfile"
# The jobs image (RECSYS_COMPUTE=ecs runs the stages from it): `python -m recsys.deploy push-jobs-image`
JOBS_IMAGE_INPUTS = ("tasks", "requirements/torch.txt", "requirements/jobs.lock")
JOBS_DOCKERFILE = "tasks/train/Dockerfile"


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


def registry_credentials(settings: Settings) -> tuple[str, str] | None:
    """``RECSYS_REGISTRY_CREDENTIALS``: the ``user:password`` of a registry that is not ECR's own
    endpoint (the compose stack's, generated on its first start), or None."""
    if not settings.registry_credentials:
        return None
    user, sep, password = Path(settings.registry_credentials).read_text().strip().partition(":")
    if not (sep and user and password):
        raise RuntimeError(f"{settings.registry_credentials}: expected one line user:password "
                           "(RECSYS_REGISTRY_CREDENTIALS)")
    return user, password


def login(ecr, settings: Settings) -> None:
    """docker login to the registry, as for ECR: the credentials (ECR's authorization token, or
    ``RECSYS_REGISTRY_CREDENTIALS`` for the compose stack's registry) go through ``docker login``
    into the client's auth config, which the push and the deploy's pull then use."""
    given = registry_credentials(settings)
    if given and settings.registry:
        (user, password), registry = given, settings.registry
    else:
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
