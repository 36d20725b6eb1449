"""A real image registry on loopback for the embedded stack, with ECR's control plane on moto.

``python scripts/registry.py start|stop|running`` (state under ``.state/registry``).

ECR is two services: the registry that ``docker push`` talks to (the data plane) and the ECR API
(repositories, ``describe_images``, authorization tokens). The embedded stack has the API on the
moto server; this starts the data plane: Debian's ``docker-registry`` (CNCF distribution) on
``127.0.0.1:$RECSYS_REGISTRY_PORT`` (default 5001), and the link ECR itself has between the two: the
registry's push notifications go to a small listener here, which records each pushed tag in
moto's ECR with ``PutImage`` (the manifest as pushed). The pipeline then pushes to
``RECSYS_REGISTRY=127.0.0.1:5001`` and asks the ECR API about the image exactly as it would in AWS.
Nothing here contacts a non-loopback host.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("RECSYS_REGISTRY_STATE", ROOT / ".state" / "registry"))
PORT = int(os.environ.get("RECSYS_REGISTRY_PORT", "5001"))
SYNC_PORT = int(os.environ.get("RECSYS_REGISTRY_SYNC_PORT", str(PORT + 1)))
# docker-compose runs the listener as its own service: it binds all interfaces there and reads
# manifests from the registry service (``RECSYS_REGISTRY_URL=http://registry:5000``).
SYNC_HOST = os.environ.get("RECSYS_REGISTRY_SYNC_HOST", "127.0.0.1")
REGISTRY_URL = os.environ.get("RECSYS_REGISTRY_URL", f"http://127.0.0.1:{PORT}")
# a file holding user:password where the registry requires them (the compose stack's)
CREDENTIALS = os.environ.get("RECSYS_REGISTRY_CREDENTIALS", "")
BINARIES = ("docker-registry", "registry")
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
log = logging.getLogger("registry-sync")

CONFIG = """version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
notifications:
  events:
    includereferences: true
  endpoints:
    - name: ecr-sync
      url: http://127.0.0.1:{sync_port}/events
      timeout: 5s
      threshold: 1
      backoff: 1s
      ignoredmediatypes:
        - application/octet-stream
"""


def url(path: str = "/v2/") -> str:
    return f"{REGISTRY_URL.rstrip('/')}{path}"


def auth_headers() -> dict[str, str]:
    """Basic authentication with ``RECSYS_REGISTRY_CREDENTIALS``, where it is set."""
    if not CREDENTIALS:
        return {}
    import base64

    token = base64.b64encode(Path(CREDENTIALS).read_text().strip().encode()).decode()
    return {"Authorization": f"Basic {token}"}


def running() -> bool:
    try:
        req = urllib.request.Request(url(), headers=auth_headers())
        with urllib.request.urlopen(req, timeout=2) as res:  # noqa: S310 - the registry (loopback, or the compose service)
            return res.status == 200
    except Exception:
        return False


def binary() -> str | None:
    return next((b for b in map(shutil.which, BINARIES) if b), None)


def record_push(ecr, repository: str, tag: str, digest: str, media_type: str) -> str:
    """PutImage of one pushed tag into the ECR API (what ECR does on a push)."""
    req = urllib.request.Request(url(f"/v2/{repository}/manifests/{digest}"),
                                 headers={"Accept": ", ".join(MANIFEST_TYPES), **auth_headers()})
    with urllib.request.urlopen(req, timeout=10) as res:  # noqa: S310 - the registry (loopback, or the compose service)
        manifest = res.read().decode()
        media_type = res.headers.get("Content-Type", media_type)
    try:
        ecr.put_image(repositoryName=repository, imageManifest=manifest, imageManifestMediaType=media_type,
                      imageTag=tag)
    except ecr.exceptions.ImageAlreadyExistsException:
        return "already recorded"
    except ecr.exceptions.RepositoryNotFoundException:
        return f"no ECR repository {repository}: not recorded"
    return "recorded in ECR"


class Events(BaseHTTPRequestHandler):
    ecr = None

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.end_headers()
        try:
            events = json.loads(body or b"{}").get("events", [])
        except ValueError:
            return
        for event in events:
            target = event.get("target", {})
            if event.get("action") != "push" or not target.get("tag") or target.get("mediaType") not in MANIFEST_TYPES:
                continue
            try:
                what = record_push(self.ecr, target["repository"], target["tag"], target["digest"], target["mediaType"])
            except Exception as err:  # the registry retries the event; say why here
                log.error("%s:%s: %s", target.get("repository"), target.get("tag"), err)
                continue
            log.info("%s:%s (%s): %s", target["repository"], target["tag"], target["digest"], what)

    def log_message(self, *args) -> None:
        pass


def serve_sync() -> None:
    import boto3

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    Events.ecr = boto3.client("ecr")
    log.info("recording pushes to %s in ECR at %s (listening on %s:%d)", REGISTRY_URL,
             os.environ.get("AWS_ENDPOINT_URL") or "AWS", SYNC_HOST, SYNC_PORT)
    ThreadingHTTPServer((SYNC_HOST, SYNC_PORT), Events).serve_forever()


def start() -> None:
    if running():
        print(f"registry already answers on 127.0.0.1:{PORT}")
        return
    exe = binary()
    if exe is None:
        sys.exit("no registry binary (docker-registry): apt-get install docker-registry")
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "config.yml").write_text(CONFIG.format(root=STATE / "data", port=PORT, sync_port=SYNC_PORT))
    with open(STATE / "sync.log", "ab") as out:
        sync = subprocess.Popen([sys.executable, __file__, "serve-sync"], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    with open(STATE / "registry.log", "ab") as out:
        reg = subprocess.Popen([exe, "serve", str(STATE / "config.yml")], stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    (STATE / "pids.json").write_text(json.dumps({"registry": reg.pid, "sync": sync.pid}))
    for _ in range(100):
        if running():
            print(f"registry on 127.0.0.1:{PORT} (pushes recorded in ECR at {os.environ.get('AWS_ENDPOINT_URL')})")
            return
        time.sleep(0.1)
    sys.exit(f"registry did not answer on 127.0.0.1:{PORT}; see {STATE / 'registry.log'}")


def stop() -> None:
    try:
        pids = json.loads((STATE / "pids.json").read_text())
    except FileNotFoundError:
        return
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    (STATE / "pids.json").unlink(missing_ok=True)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "start":
        start()
    elif cmd == "stop":
        stop()
    elif cmd == "running":
        sys.exit(0 if running() else 1)
    elif cmd == "serve-sync":
        serve_sync()
    else:
        sys.exit(__doc__)
