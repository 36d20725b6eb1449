"""Serving under load: the app against a bare FastAPI endpoint measured in the same run.

    python bench/serve_bench.py [--clients 1,20,60] [--seconds 5] [--users 2000] [--stub-ms 2]
                                [--stall-seconds 5]

Every server is ``python -m tasks.serve``'s own ``main()`` (uvicorn, one worker, the options the
image runs with) in a subprocess; the load comes from another process (asyncio, one keep-alive
connection per client on asyncio streams, each client sending its next request when the last one
is answered).

1. bare: a FastAPI app with one ``async def`` route answering a fixed body of the app's size,
   served with the same uvicorn options, and the same route as a plain ``def`` (what a sync
   handler costs: a worker-thread hop per request);
2. stub: the app with its DynamoDB reads replaced in-process by a stub taking ``--stub-ms`` each,
   with a warm row cache and with the cache off: the app's own cost;
3. moto: ``python -m tasks.serve`` reading a moto server (its own process) seeded by the project's
   publish path (rows through tasks.table's batch writer, then ``python -m tasks.publish finalize``),
   warm cache and cache off;
4. stall: the moto server frozen (SIGSTOP) for ``--stall-seconds`` under the highest client count:
   how long each 503 takes (the promise: every one within 2 s) and what cache hits still answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSION = "vbench"
TOP_N = 10


# -- the servers (run as `serve_bench.py --serve KIND --port P`) ------------------------------------

def stub_items(user_id: str) -> list[dict] | None:
    if user_id.startswith("new"):  # users the model does not know: the fallback list
        return None
    return [{"item_id": str(1000 + i), "score": 4.5 - i / 10, "title": f"Movie number {i} (1999)"}
            for i in range(TOP_N)]


class StubReader:
    """The app's DynamoDB reads (tasks.serve.deps.Reader), blocking ``ms`` each as boto3 does."""

    def __init__(self, ms: float) -> None:
        self.delay = ms / 1000

    def marker(self, version: str) -> dict | None:
        time.sleep(self.delay)
        return {"users": 1, "top_n": TOP_N, "generated_at": "t", "expires_at": 0}

    def items(self, version: str, user_id: str) -> list[dict] | None:
        time.sleep(self.delay)
        return stub_items("" if user_id == "__popular__" else user_id)


def serve(kind: str, port: int, stub_ms: float) -> None:
    argv = ["--host", "127.0.0.1", "--port", str(port)]
    if kind == "stub":
        import tasks.serve
        from tasks.serve.__main__ import main

        create_app = tasks.serve.create_app
        tasks.serve.create_app = lambda settings=None, reader=None: create_app(settings, StubReader(stub_ms))
        sys.exit(main(argv))
    import uvicorn
    from fastapi import FastAPI

    from tasks import storage
    from tasks.serve.__main__ import uvicorn_options

    body = {"user_id": "u", "model_version": VERSION, "source": "personal", "items": stub_items("u")}
    app = FastAPI()
    if kind == "bare":
        @app.get("/recommendations/{user_id}")
        async def bare(user_id: str) -> dict:
            return {**body, "user_id": user_id}
    else:
        @app.get("/recommendations/{user_id}")
        def bare_sync(user_id: str) -> dict:
            return {**body, "user_id": user_id}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    storage.setup_logging()
    uvicorn.run(app, host="127.0.0.1", port=port, **uvicorn_options())


# -- the load (run as `serve_bench.py --client URL ...`) -------------------------------------------

class Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams. Not httpx: on this machine its client
    was the bottleneck (bare endpoint, 20 clients: httpx 220-400 req/s at p99 360-420 ms, one shared
    or one client per connection; these streams 1,000-1,860 req/s at p99 15-42 ms, same server)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        try:
            self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
            await self.writer.drain()
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
            await self.reader.readexactly(int(headers.get("content-length", "0")))
        except (OSError, asyncio.IncompleteReadError):
            self.close()
            raise
        if headers.get("connection") == "close":
            self.close()
        return int(lines[0].split(" ", 2)[1])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(url: str, clients: int, seconds: float, users: list[str], warm: bool) -> dict:
    host, port = url.removeprefix("http://").split(":")
    conns = [Connection(host, int(port)) for _ in range(clients)]
    if warm:  # one read of every user first: the cache holds them all
        async def warm_up(i: int) -> None:
            for u in users[i::clients]:
                await conns[i].get(f"/recommendations/{u}")
        await asyncio.gather(*(warm_up(i) for i in range(clients)))
    samples: list[tuple[float, int]] = []
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        rng = random.Random(i)
        while time.perf_counter() < deadline:
            u = users[rng.randrange(len(users))]
            t0 = time.perf_counter()
            try:
                status = await conns[i].get(f"/recommendations/{u}")
            except (OSError, asyncio.IncompleteReadError):
                status = 0
            samples.append((time.perf_counter() - t0, status))
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    wall = time.perf_counter() - t0
    for c in conns:
        c.close()
    lat = sorted(s for s, _ in samples)
    shed = sorted(s for s, st in samples if st == 503)
    by_status: dict[str, int] = {}
    for _, st in samples:
        by_status[str(st)] = by_status.get(str(st), 0) + 1
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3  # noqa: E731
    return {"requests": len(lat), "rps": len(lat) / wall, "p50": pct(0.50), "p99": pct(0.99), "max": lat[-1] * 1e3,
            "errors": sum(1 for _, st in samples if st != 200), "status": by_status,
            "max_503": shed[-1] * 1e3 if shed else None, "over_2s_503": sum(1 for s in shed if s > 2.0)}


# -- orchestration ----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1)
            return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def server(cmd: list[str], env: dict, log: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "ab") as out:
        proc = subprocess.Popen([*cmd, "--port", str(port)], env={**os.environ, **env}, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_up(url, proc, log)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_client(url: str, clients: int, seconds: float, users: list[str], warm: bool) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(users, f)
    try:
        res = subprocess.run([sys.executable, __file__, "--client", url, "--clients", str(clients),
                              "--seconds", str(seconds), "--users-file", f.name, *(["--warm"] if warm else [])],
                             capture_output=True, text=True, check=False, env=child_env())
    finally:
        os.unlink(f.name)
    if res.returncode:
        raise SystemExit(f"load client failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def child_env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}", "RECSYS_LOG_LEVEL": "WARNING", **extra}


def row(name: str, clients: int, r: dict) -> None:
    errors = f"{r['errors']}" + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(r['status'].items()) if k != '200')})"
                                 if r["errors"] else "")
    print(f"  {name:<22} {clients:>3} clients  p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms  "
          f"max {r['max']:8.2f} ms  {r['rps']:7.0f} req/s  errors {errors}", flush=True)


class MotoProcess:
    """``python -m moto.server`` in its own process, as ``make run`` starts it."""

    def __enter__(self) -> MotoProcess:
        port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
                return self
            except OSError:
                time.sleep(0.1)
        self.proc.kill()
        raise SystemExit("moto server did not start")

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        self.proc.wait(timeout=30)


def seed(aws: dict, tmp: Path, users: list[str]) -> None:
    """A complete version, published as the pipeline publishes one: the rows through the batch
    writer tasks.score uses, a shard manifest, then ``python -m tasks.publish finalize`` (it checks
    every user's row, writes the fallback list, then the completion marker)."""
    import boto3
    import pandas as pd

    from tasks import layout, storage, table
    from tasks.shards import manifest_uri

    ddb = boto3.client("dynamodb", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="x")
    ddb.create_table(TableName="recs", BillingMode="PAY_PER_REQUEST", KeySchema=layout.KEY_SCHEMA,
                     AttributeDefinitions=layout.ATTRIBUTE_DEFINITIONS)
    snap, model = tmp / "snapshot", tmp / "models" / VERSION
    snap.mkdir(parents=True)
    rng = random.Random(0)
    ratings = pd.DataFrame({"user_id": users, "item_id": [str(rng.randrange(500)) for _ in users],
                            "rating": 4.0, "timestamp": 1})
    ratings.to_parquet(snap / "ratings.parquet")
    pd.DataFrame({"item_id": [str(i) for i in range(500)], "title": [f"Movie {i}" for i in range(500)]}
                 ).to_parquet(snap / "items.parquet")
    rows = [table.rec_item(u, VERSION, table.encode_items(
        [str(rng.randrange(500)) for _ in range(TOP_N)], sorted((rng.random() * 5 for _ in range(TOP_N)), reverse=True),
        [f"Movie number {i} (1999)" for i in range(TOP_N)]), "t", int(time.time()) + 86400) for u in users]
    table.write_items("recs", rows, client=ddb)
    storage.write_json(manifest_uri(str(model), 0, 1), {
        "model_version": VERSION, "shard": "0/1", "users": len(users), "ratings_uri": str(snap), "top_n": TOP_N,
        "min_ratings": 1})
    res = subprocess.run([sys.executable, "-m", "tasks.publish", "finalize", "--model", str(model),
                          "--ratings", str(snap), "--model-version", VERSION, "--top-n", str(TOP_N),
                          "--shards", "1", "--table", "recs"], capture_output=True, text=True, cwd=ROOT,
                         env=child_env(**aws), check=False)
    if res.returncode:
        raise SystemExit(f"tasks.publish finalize failed:\n{res.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,20,60", help="comma-separated client counts")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    parser.add_argument("--users", type=int, default=2000, help="distinct users requested")
    parser.add_argument("--stub-ms", type=float, default=2.0, help="the stub's time per DynamoDB read")
    parser.add_argument("--stall-seconds", type=float, default=5.0, help="how long DynamoDB stalls (0: skip)")
    parser.add_argument("--serve", choices=["bare", "bare-sync", "stub"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--users-file", help=argparse.SUPPRESS)
    parser.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.stub_ms)
        return
    if args.client:
        users = json.loads(Path(args.users_file).read_text())
        print(json.dumps(asyncio.run(load(args.client, int(args.clients), args.seconds, users, args.warm))))
        return

    levels = [int(c) for c in args.clients.split(",")]
    users = [f"u{i}" for i in range(args.users)]
    # a tenth of requests are for users the model does not know (the fallback list)
    asked = users + [f"new{i}" for i in range(args.users // 10)]
    me = [sys.executable, __file__]
    app = {"MODEL_VERSION": VERSION, "RECSYS_TABLE": "recs"}
    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        log = tmp / "servers.log"
        print(f"[serving: {args.seconds:g} s per row, {len(asked)} distinct users, one uvicorn worker each, "
              f"load from another process]", flush=True)
        stub = [*me, "--serve", "stub", "--stub-ms", str(args.stub_ms)]
        runs = [("bare async def", [*me, "--serve", "bare"], {}, False),
                ("bare def (threads)", [*me, "--serve", "bare-sync"], {}, False),
                (f"stub {args.stub_ms:g} ms, warm", stub, app, True),
                (f"stub {args.stub_ms:g} ms, no cache", stub, {**app, "RECSYS_SERVE_CACHE_BYTES": "0"}, False)]
        for name, cmd, env, warm in runs:
            with server(cmd, child_env(**env), log) as url:
                for c in levels:
                    results[name, c] = r = run_client(url, c, args.seconds, asked, warm)
                    row(name, c, r)
        with MotoProcess() as moto:
            aws = {"AWS_ENDPOINT_URL": moto.endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
            t0 = time.perf_counter()
            seed(aws, tmp, users)
            print(f"  (moto seeded with {len(users)} users through tasks.publish finalize in "
                  f"{time.perf_counter() - t0:.1f} s)", flush=True)
            serve_cmd = [sys.executable, "-m", "tasks.serve", "--host", "127.0.0.1"]
            for name, env, warm in [("moto, warm", {**app, **aws}, True),
                                    ("moto, no cache", {**app, **aws, "RECSYS_SERVE_CACHE_BYTES": "0"}, False)]:
                with server(serve_cmd, child_env(**env), log) as url:
                    for c in levels:
                        results[name, c] = r = run_client(url, c, args.seconds, asked, warm)
                        row(name, c, r)
            if args.stall_seconds:
                stall(serve_cmd, {**app, **aws}, log, moto, max(levels), args.stall_seconds, users)
        summary(results, levels, args.stub_ms)


def stall(cmd: list[str], env: dict, log: Path, moto: MotoProcess, clients: int, seconds: float,
          users: list[str]) -> None:
    """Half the users cached, then DynamoDB frozen for ``seconds`` under ``clients`` clients."""
    with server(cmd, child_env(**env), log) as url:
        warm = users[: len(users) // 2]
        run_client(url, 1, 0.01, warm, True)
        moto.proc.send_signal(signal.SIGSTOP)
        try:
            r = run_client(url, clients, seconds, users, False)
        finally:
            moto.proc.send_signal(signal.SIGCONT)
        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    shed = next(line.split()[-1] for line in metrics.splitlines() if line.startswith("recsys_requests_shed_total"))
    print(f"[DynamoDB stalled {seconds:g} s (moto SIGSTOP), {clients} clients, half the users cached]")
    row("stalled", clients, r)
    n503 = r["status"].get("503", 0)
    print(f"  {r['status'].get('200', 0)} answered 200 from the cache; {n503} got 503 ({float(shed):.0f} of them shed "
          f"at once), the slowest 503 in {(r['max_503'] or 0) / 1e3:.2f} s; {r['over_2s_503']} took over 2 s "
          f"(target: every 503 <= 2 s: {'met' if n503 and r['over_2s_503'] == 0 else 'NOT met'})")


def summary(results: dict, levels: list[int], stub_ms: float) -> None:
    print("[ratios to the bare async endpoint, same run]")
    warm = f"stub {stub_ms:g} ms, warm"
    for c in levels:
        bare, app = results["bare async def", c], results[warm, c]
        sync = results["bare def (threads)", c]
        print(f"  {c:>3} clients: app (warm) overhead p99 {app['p99'] - bare['p99']:+6.2f} ms, throughput "
              f"{app['rps'] / bare['rps']:.2f}x bare; a sync handler alone: p99 {sync['p99'] - bare['p99']:+6.2f} ms, "
              f"{sync['rps'] / bare['rps']:.2f}x")
    if 20 in levels:
        bare, app, moto = results["bare async def", 20], results[warm, 20], results["moto, warm", 20]
        over, ratio = app["p99"] - bare["p99"], app["rps"] / bare["rps"]
        print(f"  targets at 20 clients: app overhead p99 {over:.2f} ms <= 5 ms: {'met' if over <= 5 else 'NOT met'}; "
              f"throughput {ratio:.2f}x >= 0.5x bare: {'met' if ratio >= 0.5 else 'NOT met'}; "
              f"moto warm p99 {moto['p99']:.1f} ms <= 50 ms: {'met' if moto['p99'] <= 50 else 'NOT met'}")


if __name__ == "__main__":
    main()
