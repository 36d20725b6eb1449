"""What of the worker's environment reaches a process the pipeline starts: one allow-list.

The pipeline's code reads ``AWS_*`` (the SDK: region, endpoint, credentials) and ``RECSYS_*`` (its
settings) and nothing else of the worker's: its other variables (every ``AIRFLOW_*`` secret: the
database URL, the Fernet key, the JWT secret) never pass. Each destination takes a part of
:data:`PREFIXES`:

- a stage container (``RECSYS_COMPUTE=docker``): :data:`STAGE`, the SDK's region, endpoint and
  credentials and the settings a stage reads from its environment;
- the serving app on this machine: every allowed variable, with the interpreter's basics;
- the serving container: every allowed variable but the worker's credentials.
"""

from __future__ import annotations

from collections.abc import Mapping

PREFIXES = ("AWS_", "RECSYS_")
# A process on this machine (the local serving app) also needs its interpreter's basics.
PROCESS_BASICS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
                  "MODEL_VERSION", "VIRTUAL_ENV", "TMPDIR")
# The worker's credentials never reach the serving container: long-lived keys in a long-running,
# network-facing container would outlive any rotation and carry the worker's write scope.
WORKER_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                      "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
                      "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                      "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN")
# A stage container gets only what it reads (no profile or file paths of the worker's machine).
STAGE = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
         "AWS_SESSION_TOKEN", "RECSYS_BUCKET", "RECSYS_TABLE", "RECSYS_TTL_DAYS", "RECSYS_THREADS",
         "RECSYS_MIN_RATINGS")
assert all(name.startswith(PREFIXES) for name in STAGE)


def allowed(environ: Mapping[str, str], *, basics: bool = False, credentials: bool = True) -> dict[str, str]:
    """The allow-listed part of ``environ``: ``AWS_*`` and ``RECSYS_*`` (without the worker's
    credentials unless ``credentials``), and with ``basics`` the interpreter's basics."""
    return {k: v for k, v in environ.items()
            if (k.startswith(PREFIXES) and (credentials or k not in WORKER_CREDENTIALS))
            or (basics and k in PROCESS_BASICS)}


def for_stage(environ: Mapping[str, str]) -> dict[str, str]:
    """What a stage container gets of the worker's environment (:data:`STAGE`)."""
    return {k: environ[k] for k in STAGE if k in environ}
