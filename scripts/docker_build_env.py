"""How to run ``docker build`` on this machine: ``python scripts/docker_build_env.py`` prints
``export`` lines for RECSYS_DOCKER_CLI, DOCKER_BUILDKIT and RECSYS_DOCKER_BUILD_FLAGS.

- The Dockerfiles need BuildKit (``RUN --mount=type=secret``). A docker client with the buildx
  plugin has it; a client older than 23 (Debian's docker.io 20.10) has it built in with
  ``DOCKER_BUILDKIT=1``. Without either, nothing is exported and builds use plain ``docker``.
- Where pip here needs its own CA bundle (PIP_CERT or ``pip config``), it goes to the build
  stage as the BuildKit secret ``pip-ca``: it never lands in an image layer.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess


def _ok(cmd: list[str]) -> str | None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def buildkit_cli() -> tuple[str, dict[str, str]] | None:
    """A docker client that can build with BuildKit, and the environment it needs."""
    candidates = [c for c in dict.fromkeys([shutil.which("docker"), "/usr/bin/docker"]) if c and os.path.exists(c)]
    for cli in candidates:
        if _ok([cli, "buildx", "version"]) is not None:
            return cli, {}
    for cli in candidates:
        version = _ok([cli, "--version"]) or ""  # "Docker version 20.10.24+dfsg1, build 297e128"
        major = version.removeprefix("Docker version ").split(".", 1)[0]
        if major.isdigit() and int(major) < 23:
            return cli, {"DOCKER_BUILDKIT": "1"}
    return None


def pip_ca() -> str | None:
    cert = os.environ.get("PIP_CERT") or _ok(["pip", "config", "get", "global.cert"])
    return cert if cert and os.path.isfile(cert) else None


def build_flags() -> list[str]:
    ca = pip_ca()
    return ["--secret", f"id=pip-ca,src={ca}"] if ca else []


def environment() -> dict[str, str]:
    found = buildkit_cli()
    if found is None:
        return {}
    cli, env = found
    return {"RECSYS_DOCKER_CLI": cli, **env, "RECSYS_DOCKER_BUILD_FLAGS": shlex.join(build_flags())}


if __name__ == "__main__":
    for key, value in environment().items():
        print(f"export {key}={shlex.quote(value)}")
