"""Docker fixtures shared by the Docker tier (tests/test_docker.py, tests/test_compose.py), loaded
by tests/conftest.py so the session's images are built once.

The engine comes from ``make test`` (scripts/ensure_docker.sh, which installs and starts one
where it can) as RECSYS_TEST_DOCKER_HOST; every other test runs with DOCKER_HOST pointing at
nothing. Without an engine the tests that use it skip with the reason, except under
RECSYS_REQUIRE_DOCKER=1 (CI), where that is a failure.
"""

from __future__ import annotations

import functools
import glob
import http.server
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import docker_build_env  # noqa: E402

# what the engine fixture adds to the environment (the rest is taken from os.environ when used)
DOCKER_KEYS = ("DOCKER_HOST", "DOCKER_CONFIG", "RECSYS_DOCKER_CLI", "RECSYS_DOCKER_BUILD_FLAGS", "DOCKER_BUILDKIT")


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    """The environment docker commands run with: the engine, a private client config (logins do
    not touch ~/.docker), and the BuildKit client of scripts/docker_build_env.py."""
    host = os.environ.get("RECSYS_TEST_DOCKER_HOST")
    if not host:
        why = os.environ.get("RECSYS_TEST_DOCKER_WHY", "no Docker engine (RECSYS_TEST_DOCKER_HOST unset)")
        if os.environ.get("RECSYS_REQUIRE_DOCKER") == "1":
            pytest.fail(f"RECSYS_REQUIRE_DOCKER=1 but {why}")
        pytest.skip(why)
    build = docker_build_env.environment()
    if not build:
        pytest.fail("no docker client here can build with BuildKit (needs buildx, or a 20.10 client)")
    env = {**os.environ, "DOCKER_HOST": host, "DOCKER_CONFIG": str(tmp_path_factory.mktemp("docker-config")),
           **build}
    return env


def docker(env, *args, check=True, timeout=1800, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run([env["RECSYS_DOCKER_CLI"], *args], env=env, capture_output=True, text=True,
                         timeout=timeout, check=False, **kw)
    if check and res.returncode:
        raise AssertionError(f"docker {' '.join(args[:3])} failed ({res.returncode}):\n{res.stdout[-3000:]}\n"
                             f"{res.stderr[-3000:]}")
    return res


def size_mb(env, image: str) -> float:
    return int(docker(env, "image", "inspect", "--format", "{{.Size}}", image).stdout) / 1e6


@pytest.fixture(scope="session")
def wheel_server():
    """Loopback file server for pip's local find-links folder (the CPU torch wheel here), reached
    from the build with --network host; None where pip has no local folder."""
    links = os.environ.get("PIP_FIND_LINKS") or subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.find-links"], capture_output=True, text=True,
        check=False).stdout
    folder = next((f for f in links.split() if os.path.isdir(f)), None)
    if folder is None:
        yield None
        return
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", folder
    server.shutdown()


@pytest.fixture(scope="session")
def serve_image(engine):
    tag = "recsys-serve:test"
    docker(engine, "build", *build_flags(engine), "-f", "tasks/serve/Dockerfile", "-t", tag, ".", cwd=ROOT)
    return tag


def build_flags(env) -> list[str]:
    return shlex.split(env.get("RECSYS_DOCKER_BUILD_FLAGS", ""))


@pytest.fixture(scope="session")
def jobs_image(engine, wheel_server):
    tag = "recsys-jobs:test"
    extra = []
    if wheel_server:
        url, folder = wheel_server
        extra = ["--network", "host", "--build-arg", f"PIP_BUILD_FLAGS=--find-links {url}"]
        if glob.glob(os.path.join(folder, "torch-*+cpu-*.whl")):
            extra += ["--build-arg", f"TORCH_FIND_LINKS={url}"]  # the CPU wheel is local; its index is not reachable
    docker(engine, "build", *build_flags(engine), *extra, "-f", "tasks/train/Dockerfile", "-t", tag, ".", cwd=ROOT)
    return tag


@pytest.fixture
def registry(engine, aws, tmp_path):
    """scripts/registry.py on free ports: Debian's docker-registry, its pushes recorded in moto's ECR."""
    port = free_port()
    env = {**os.environ, "RECSYS_REGISTRY_PORT": str(port), "RECSYS_REGISTRY_SYNC_PORT": str(free_port()),
           "RECSYS_REGISTRY_STATE": str(tmp_path / "registry")}
    subprocess.run([sys.executable, str(ROOT / "scripts" / "registry.py"), "start"], env=env, check=True, timeout=60)
    yield f"127.0.0.1:{port}"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "registry.py"), "stop"], env=env, check=False, timeout=60)


@pytest.fixture
def registry_stack(engine, registry, aws, monkeypatch):
    """The engine's variables and ``RECSYS_REGISTRY`` in this process's environment, and the
    account's ECR repositories and ECS stack created: what build_image and the deploys need.
    Returns the registry (``host:port``)."""
    from recsys import infra
    from recsys.settings import Settings

    for key in DOCKER_KEYS:
        if key in engine:
            monkeypatch.setenv(key, engine[key])
    monkeypatch.setenv("RECSYS_REGISTRY", registry)
    infra.up(Settings(), ecs=True, default_subnets=True)
    return registry
