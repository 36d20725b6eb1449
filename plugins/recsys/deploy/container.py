"""``RECSYS_DEPLOY=docker`` (the docker-compose stack): run the pushed serving image as the container
``RECSYS_SERVE_CONTAINER`` on a Docker engine, pulled from the registry it was pushed to, and put
the previous container back on failure.
"""

from __future__ import annotations

import logging
import os

from recsys import environment
from recsys.deploy import smoke
from recsys.deploy.image import registry_credentials
from recsys.settings import Settings

log = logging.getLogger(__name__)


def _engine(settings: Settings):
    """The docker provider's API client for ``RECSYS_DOCKER_URL``."""
    from airflow.providers.docker.hooks.docker import DockerHook

    return DockerHook(docker_conn_id=None, base_url=settings.docker_url).api_client


def _split_image(image: str) -> tuple[str, str]:
    repository, _, tag = image.rpartition(":")
    if not repository or "/" in tag:
        raise ValueError(f"image reference without a tag: {image!r}")
    return repository, tag


SERVE_CREDENTIALS_DIR = "/run/recsys-aws"  # where the container reads RECSYS_SERVE_CREDENTIALS


def container_env(environ, model_version: str, table: str) -> dict[str, str]:
    """What the serving container sees: the worker's AWS settings (region, endpoint) and RECSYS
    variables and its version. Never the worker's credentials
    (:data:`recsys.environment.WORKER_CREDENTIALS`) nor
    anything else (no PATH, no AIRFLOW_* secrets): the image sets its own environment. With
    ``RECSYS_SERVE_CREDENTIALS`` (a credentials file for the serving role's read-only scope, see
    :func:`credentials_mount`) the SDK reads that file; without it, the engine host's role."""
    env = environment.allowed(environ, credentials=False)
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
    ``RECSYS_SERVE_NETWORK`` (else ``RECSYS_DOCKER_NETWORK``), published on
    ``RECSYS_SERVE_HOST:RECSYS_SERVE_PORT``. If it does not report ``model_version`` on
    ``/readyz`` (at ``RECSYS_SMOKE_URL``, default the published address), it is removed and the
    previous container started again.
    """
    client = _engine(settings) if client is None else client
    import docker.errors

    name = settings.serve_container
    backup = f"{name}-previous"
    table = table or settings.table
    repository, tag = _split_image(image)
    given = registry_credentials(settings)  # else the engine client's auth config (docker login)
    auth = {"username": given[0], "password": given[1]} if given else None
    for line in client.pull(repository, tag=tag, stream=True, decode=True, auth_config=auth):
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
    # its own network where one is set: not the one of the registry, the API server and the database
    network = settings.serve_network or settings.docker_network
    host_net = network == "host"
    # on its own network the image's CMD serves on :8080, published on RECSYS_SERVE_HOST only;
    # on the host's network it listens where the published port would have been
    command = (["python", "-m", "tasks.serve", "--host", settings.serve_host, "--port", str(settings.serve_port)]
               if host_net else None)
    host_config = client.create_host_config(
        network_mode=network, restart_policy={"Name": "unless-stopped"},
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
        smoke.smoke_test(url, model_version, smoke_user, timeout=smoke_timeout)
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
                    smoke.smoke_test(url, before, timeout=smoke_timeout)
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
