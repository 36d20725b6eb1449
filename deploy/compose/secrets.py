"""The compose stack's secrets, made on its first start (the `secrets-init` service).

Writes, into the `recsys-secrets` volume (mounted read-only by the Airflow services):

- ``jwt_secret`` and ``api_secret_key``: what Airflow signs its API tokens and sessions with
  (read through ``AIRFLOW__API_AUTH__JWT_SECRET_CMD`` / ``AIRFLOW__API__SECRET_KEY_CMD``);
- ``admin_password``: the password of the UI/API user (``_AIRFLOW_WWW_USER_USERNAME``, default
  ``airflow``), printed once when generated: ``docker compose logs secrets-init``;

- ``registry_credentials``: ``user:password`` of the registry service (``REGISTRY_USER``, default
  ``recsys``; ``REGISTRY_PASSWORD``, else generated), which the push path logs in with
  (``RECSYS_REGISTRY_CREDENTIALS``: ``docker login``, as with ECR's authorization token);

into the `registry-auth` volume (mounted read-only by the registry) its bcrypt ``htpasswd``, written
on every start from those credentials; if this Python cannot make a bcrypt hash, it exits 1 and
the registry does not start (never without authentication);

and, into the `serve-credentials` volume (mounted read-only by the serving container only), an
AWS shared-credentials file for the serving app (``SERVE_AWS_ACCESS_KEY_ID`` /
``SERVE_AWS_SECRET_ACCESS_KEY``, default the moto server's dummy keys): the worker's own keys are
never copied into the serving container.

A value given in the environment (``AIRFLOW_JWT_SECRET``, ``AIRFLOW_API_SECRET_KEY``,
``_AIRFLOW_WWW_USER_PASSWORD``, ``REGISTRY_PASSWORD``) is written on every start; otherwise a value generated on an
earlier start is kept, so tokens and the password survive restarts. Standard library only.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

SECRETS = Path(os.environ.get("RECSYS_SECRETS_DIR", "/run/recsys-secrets"))
SERVE = Path(os.environ.get("RECSYS_SERVE_CREDENTIALS_DIR", "/run/recsys-serve-credentials"))
REGISTRY_AUTH = Path(os.environ.get("RECSYS_REGISTRY_AUTH_DIR", "/run/recsys-registry-auth"))
# (file, variable that sets it, generated length in bytes)
VALUES = (("jwt_secret", "AIRFLOW_JWT_SECRET", 32), ("api_secret_key", "AIRFLOW_API_SECRET_KEY", 32),
          ("admin_password", "_AIRFLOW_WWW_USER_PASSWORD", 12))


def write(path: Path, text: str, mode: int, owner: int | None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if owner is not None and os.geteuid() == 0:
        os.chown(tmp, owner, 0)
    os.chmod(tmp, mode)
    tmp.replace(path)


def bcrypt_hash(password: str) -> str:
    """The registry's htpasswd accepts bcrypt only; the standard library's crypt (libxcrypt, as in
    the Debian-based Airflow and Python images) makes it."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # crypt: deprecated in 3.11, present until 3.13
        try:
            import crypt
        except ImportError:
            crypt = None  # type: ignore[assignment]
        if crypt is None or crypt.METHOD_BLOWFISH not in crypt.methods:
            raise SystemExit("cannot make a bcrypt hash here (no crypt module with bcrypt): "
                             "the registry would start without authentication; not starting it")
        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))


def registry_credentials(owner: int) -> None:
    path = SECRETS / "registry_credentials"
    user = os.environ.get("REGISTRY_USER") or "recsys"
    given = os.environ.get("REGISTRY_PASSWORD", "")
    old = path.read_text().strip().partition(":") if path.exists() else ("", "", "")
    password = given or (old[2] if old[0] == user and old[2] else secrets.token_urlsafe(24))
    if password != old[2] or user != old[0]:
        write(path, f"{user}:{password}", 0o440, owner)
        print(f"{'wrote' if given else 'generated'} the registry's credentials (user {user!r})")
    if REGISTRY_AUTH.is_dir():
        write(REGISTRY_AUTH / "htpasswd", f"{user}:{bcrypt_hash(password)}\n", 0o444, None)


def main() -> int:
    owner = int(os.environ.get("AIRFLOW_UID", "50000"))
    SECRETS.mkdir(parents=True, exist_ok=True)
    for name, variable, size in VALUES:
        path, given = SECRETS / name, os.environ.get(variable, "")
        if given:
            write(path, given, 0o440, owner)
        elif not path.exists() or not path.read_text().strip():
            write(path, secrets.token_urlsafe(size), 0o440, owner)
            if name == "admin_password":
                user = os.environ.get("_AIRFLOW_WWW_USER_USERNAME", "airflow")
                print(f"generated the password of Airflow user {user!r}: {path.read_text()} "
                      "(kept in the recsys-secrets volume; set _AIRFLOW_WWW_USER_PASSWORD to choose one)")
            else:
                print(f"generated {name}")
    registry_credentials(owner)
    if SERVE.is_dir():
        key = os.environ.get("SERVE_AWS_ACCESS_KEY_ID", "testing")
        secret = os.environ.get("SERVE_AWS_SECRET_ACCESS_KEY", "testing")
        # the serving image runs as uid 10001 (tasks/serve/Dockerfile)
        write(SERVE / "credentials", f"[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n",
              0o400, int(os.environ.get("RECSYS_SERVE_UID", "10001")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
