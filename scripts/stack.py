"""Helpers of ``make run``: the moto server, the local serving app, the run summary."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".state"
ENDPOINT = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")


def moto_running() -> bool:
    try:
        urllib.request.urlopen(f"{ENDPOINT}/moto-api/", timeout=2)
        return True
    except Exception:
        return False


def start_moto() -> None:
    port = ENDPOINT.rsplit(":", 1)[-1].strip("/")
    STATE.mkdir(exist_ok=True)
    log = open(STATE / "moto.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    (STATE / "moto.pid").write_text(str(proc.pid))
    for _ in range(100):
        if moto_running():
            return
        time.sleep(0.1)
    sys.exit(f"moto server did not start on {ENDPOINT}; see {STATE / 'moto.log'}")


def stop_pidfile(path: Path, key: str | None = None) -> None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return
    pid = json.loads(text)[key] if key else int(text)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    path.unlink(missing_ok=True)


def task_states(log_file: str) -> None:
    """Final state of every task instance, read from the ``airflow dags test`` log."""
    text = Path(log_file).read_text(errors="replace")
    order, ti_of = [], {}
    pattern = r"\[DAG TEST\] starting task_id=(\w+) map_index=(-?\d+).*?\[DAG TEST\] running task .*? ti_id=([\w-]+)>"
    for m in re.finditer(pattern, text, flags=re.S):
        key = m.group(1) + ("" if m.group(2) == "-1" else f"[{m.group(2)}]")
        if key not in ti_of:
            order.append(key)
        ti_of[key] = m.group(3)
    states = {m.group(2): m.group(1) for m in re.finditer(r"new_state=(\w+) rows_affected=\d+ ti_id=([\w-]+)", text)}
    for key in order:
        print(f"   {key:<18} {states.get(ti_of[key], '?')}")
    for m in re.finditer(r"(serving image not built: [^\n\[]*?)'?\s*(?:\[|\n)", text):
        print(f"   note: {m.group(1).strip()}")


def summary(ds: str) -> None:
    """The newest run summary of ``ds`` (each run writes ``runs/ds=D/<version>/summary.json``)."""
    import boto3

    bucket = os.environ.get("RECSYS_BUCKET", "recsys")
    s3 = boto3.client("s3")
    found = s3.list_objects_v2(Bucket=bucket, Prefix=f"runs/ds={ds}/").get("Contents", [])
    found = [o for o in found if o["Key"].endswith("/summary.json")]
    if not found:
        sys.exit(f"no run summary under s3://{bucket}/runs/ds={ds}/")
    key = max(found, key=lambda o: o["LastModified"])["Key"]
    out = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    h = out["holdout"]
    print(f"== run summary for {ds} ({out.get('run_id')})")
    print(f"   model version   {out['model_version']} (live: {out['live_version']})")
    print(f"   holdout         RMSE {h['rmse']:.4f}  MAE {h['mae']:.4f}  precision@10 {h['precision@10']:.4f}  "
          f"NDCG@10 {h['ndcg@10']:.4f}  coverage {h['coverage']:.3f}")
    if out.get("champion"):
        c = out["champion"]
        print(f"   live model was  RMSE {c['rmse']:.4f}  NDCG@10 {c['ndcg@10']:.4f}")
    print(f"   users written   {out['users_written']} rows in DynamoDB")
    serve = json.loads((STATE / "serve.json").read_text())
    for user in ("1", "2"):
        with urllib.request.urlopen(f"{serve['url']}/recommendations/{user}?n=5", timeout=5) as resp:
            body = json.loads(resp.read())
        titles = "; ".join(f"{it['title']} ({it['score']:.2f})" for it in body["items"])
        print(f"   GET {serve['url']}/recommendations/{user}?n=5 -> "
              f"[{body['source']}, {body['model_version']}] {titles}")


def main() -> None:
    cmd = sys.argv[1]
    if cmd == "moto-running":
        sys.exit(0 if moto_running() else 1)
    elif cmd == "start-moto":
        start_moto()
    elif cmd == "stop-moto":
        stop_pidfile(STATE / "moto.pid")
    elif cmd == "stop-serve":
        stop_pidfile(STATE / "serve.json", "pid")
    elif cmd == "task-states":
        task_states(sys.argv[2])
    elif cmd == "summary":
        summary(sys.argv[2])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
