"""``RECSYS_DEPLOY=local``: (re)start ``python -m tasks.serve`` on this machine with the new
``MODEL_VERSION`` and smoke-test it, restarting the previous version on failure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time

from recsys import environment
from recsys.deploy import smoke
from recsys.settings import Settings

log = logging.getLogger(__name__)


def serving_env(environ) -> dict[str, str]:
    """What the local serving app sees of the worker's environment (:mod:`recsys.environment`)."""
    return environment.allowed(environ, basics=True)


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
        smoke.smoke_test(server.url, model_version, smoke_user)
    except Exception:
        log.exception("local deploy of %s failed; see %s", model_version, server.dir / "serve.log")
        server.stop()
        if previous:
            log.warning("restarting the previous version %s", previous["model_version"])
            server.start(previous["model_version"], previous.get("table"))
        raise
    log.info("serving %s at %s (pid %s)", model_version, server.url, state["pid"])
    return {**state, "previous": previous and previous["model_version"]}
