"""Scoring and publishing benchmarks; every figure is a ratio to a baseline measured in this run.

    python bench/score_bench.py [--preset ml-100k|ml-1m|ml-25m] [--top-n 100] [--publish-users 6040]
                                [--end-to-end ml-25m]

1. all-users top-N (seen items masked), with each implementation of tasks.model.scoring (the
   fused accelerator and the portable reference), vs the bare matrix multiply of the same shapes;
2. per-user time vs the seed's per-request loop (one model call per (user, item) pair);
3. publishing rows to DynamoDB with the batch writer vs a sequential ``put_item`` loop, both
   against a local moto server, read back to count lost and duplicated rows;
4. with ``--end-to-end PRESET``: synthetic data, ``python -m tasks.train``, then ``python -m
   tasks.score`` for every user into DynamoDB on a local moto server, each under
   ``/usr/bin/time -v`` (wall time and peak memory of the real commands).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from timed import run_timed

from tasks.data.synthetic import PRESETS
from tasks.model import MF, Recommender, scoring, set_threads
from tasks.model.scoring import fused
from tasks.train import TrainConfig


def random_model(n_users: int, n_items: int, k: int, rank_k: int = 0, seed: int = 0) -> MF:
    """A model of the trained model's shape (both heads) with random weights."""
    torch.manual_seed(seed)
    model = MF(n_users, n_items, k=k, rank_k=rank_k)
    with torch.no_grad():
        for p in (model.user.weight, model.item.weight, *((model.rank_user.weight, model.rank_item.weight)
                                                          if rank_k else ())):
            p.normal_(0, 0.3)
        model.user_bias.weight.normal_(0, 0.2)
        model.item_bias.weight.normal_(0, 0.2)
        model.bias.fill_(3.5)
    return model


def seen_pairs(n_users: int, n_items: int, n_ratings: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_ratings)
    items = (rng.zipf(1.3, n_ratings) - 1) % n_items
    keys = np.unique(users.astype(np.int64) * n_items + items)
    return keys // n_items, keys % n_items


SETTLE = 0.05  # seconds of pause before each timing


def timed(fn) -> float:
    """Seconds ``fn()`` takes, started after a short pause: torch's OpenMP threads keep spinning
    for a while after a parallel region and steal the cores from whatever runs next (measured:
    all-users top-100 at ML-1M shape 23.9 ms right after a multiply, 19.4 ms after a 50 ms pause),
    so each measurement, baseline or ours, starts on idle cores."""
    time.sleep(SETTLE)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_scoring(preset: str, top_n: int, k: int, rank_k: int, chunk: int | None,
                  topk_users: int, repeat: int) -> None:
    p = PRESETS[preset]
    model = random_model(p.users, p.items, k, rank_k)
    rec = Recommender(model, np.arange(p.users).astype(str), np.arange(p.items).astype(str))
    u, i = seen_pairs(p.users, p.items, p.ratings)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(u, minlength=p.users))])
    rec.set_seen(indptr, i[np.lexsort((i, u))])
    users = rec.user_ids

    # the matmul that scores the same pairs (the ranking head's when there is one), at its
    # fastest: into a preallocated buffer (a fresh (B, I) tensor per chunk costs page faults),
    # best of several chunk sizes, with torch's own threads or a Python thread per core
    P, Q = (rec._p, rec._q) if rank_k == 0 else (rec._rank_p, rec._rank_qt.T)
    Qt = Q.T.contiguous()
    chunk = chunk or scoring.CHUNK

    def matmul(c: int, starts) -> None:
        """Multiply chunks of c users into one reused buffer."""
        buf = torch.empty(min(c, p.users), p.items)
        for s in starts:
            e = min(s + c, p.users)
            torch.mm(P[s:e], Qt, out=buf[:e - s])  # (B, k) @ (k, I) -> (B, I)

    threads = torch.get_num_threads()

    def one_thread_per_core(c: int) -> None:  # torch single-threaded, a Python thread per core
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda i: matmul(c, range(i * c, p.users, threads * c)), range(threads)))
        finally:
            torch.set_num_threads(threads)

    # the fused kernel's scoring alone: thresholds at +inf, so every score is computed and compared
    # but nothing is selected (every row comes back "short", nothing is ordered)
    vectors = rec.scoring_vectors(np.arange(p.users))
    none_s, none_i = np.empty((p.users, top_n), np.float32), np.empty((p.users, top_n), np.int64)
    no_rows, above_all = np.full(p.users, -1), np.full(p.users, np.inf, dtype=np.float32)

    def score_only() -> None:
        def part(i: int) -> None:
            s = slice(i * p.users // threads, (i + 1) * p.users // threads)
            fused.select(vectors[s], rec._items.t, p.items, no_rows[s], rec._seen_indptr, rec._seen_indices, top_n,
                       above_all[s], none_s[s], none_i[s], np.zeros(s.stop - s.start, dtype=np.bool_))
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(part, range(threads)))

    rec.recommend(users[:64], top_n)  # compile the kernels (cached on disk after the first run)
    everyone = rec.user_index_of(users)
    configs = {}  # every way of running the baseline: chunk size x torch threads / a Python thread per core
    for c in sorted({16, 64, 256, 1024, max(8, min(4096, (1 << 20) // p.items))}):  # last: 4 MB of scores
        configs[f"{c} users, torch threads"] = lambda c=c: matmul(c, range(0, p.users, c))
        configs[f"{c} users, a Python thread per core"] = lambda c=c: one_thread_per_core(c)
    def with_scorer(name: str, fn):
        """``fn`` run with RECSYS_SCORER=name (how a deployment picks the implementation)."""
        def run():
            before = os.environ.get(scoring.ENV)
            os.environ[scoring.ENV] = name
            try:
                fn()
            finally:
                os.environ.pop(scoring.ENV) if before is None else os.environ.__setitem__(scoring.ENV, before)
        return run

    with_scorer("reference", lambda: rec.recommend(users[:64], top_n))()  # compile the reference too
    t_score = t_only = t_ids = t_matmul = t_ref = float("inf")
    ratios = []
    with torch.no_grad():
        # 1. find the baseline's fastest way (best of a few rounds over every config), so that
        # 2. it and ours are then timed alike: `repeat` interleaved rounds each (the machine is shared;
        #    a best-of over many more baseline samples than ours would bias the ratio)
        calibration = {name: min(timed(run) for _ in range(max(1, repeat // 3))) for name, run in configs.items()}
        best_chunk = min(calibration, key=calibration.get)
        baseline = configs[best_chunk]
        for _ in range(repeat):
            t_base = timed(baseline)
            t_matmul = min(t_matmul, t_base)
            # what python -m tasks.score times: user indexes in, item indexes and scores out
            t = timed(with_scorer("fused", lambda: rec.recommend_index(everyone, top_n, chunk_size=chunk)))
            t_score = min(t_score, t)
            ratios.append(t / t_base)
            t_only = min(t_only, timed(score_only))
            t_ids = min(t_ids, timed(lambda: rec.recommend(users, top_n, chunk_size=chunk)))  # raw ids in and out
            t_ref = min(t_ref, timed(with_scorer("reference",
                                                 lambda: rec.recommend_index(everyone, top_n, chunk_size=chunk))))
    print(f"[scoring {preset}: {p.users} users x {p.items} items, ranked by "
          f"{'the ranking head, k=' + str(rank_k) if rank_k else 'predicted rating, k=' + str(k)}, top-{top_n}, "
          f"{len(u)} seen pairs, "
          f"{torch.get_num_threads()} threads]")
    print(f"  bare matmul           {t_matmul:8.3f} s   (fastest of {len(configs)} ways: {best_chunk}; "
          f"best of {repeat} runs, as below)")
    print(f"  all users top-{top_n}     {t_score:8.3f} s   ratio to matmul {t_score / t_matmul:5.2f}x  "
          "(target <= 1.5x; "
          f"the fused accelerator; recommend_index, as python -m tasks.score; chunk {chunk} users)")
    print(f"  same, reference impl. {t_ref:8.3f} s   ratio to matmul {t_ref / t_matmul:5.2f}x  "
          f"({t_ref / t_score:.1f}x the fused time; RECSYS_SCORER=reference, the portable path)")
    print(f"  median of the {repeat} paired ratios (each run of ours / the baseline's run just before it): "
          f"{float(np.median(ratios)):.2f}x")
    print(f"  of which scoring alone (the fused kernel, nothing selected) {t_only:.3f} s = {t_only / t_matmul:.2f}x "
          f"matmul; selecting, masking and ordering the rest")
    print(f"  recommend with raw ids in and out {t_ids:.3f} s = {t_ids / t_matmul:.2f}x matmul "
          f"(+ id lookups: tasks.score does them once per shard and in its encoding loop)")
    keys = torch.rand(p.users, top_n)
    t_sort = min(timed(lambda: torch.sort(keys, dim=1, descending=True)) for _ in range(repeat))
    print(f"  sorting {top_n} scores per user alone (torch.sort) {t_sort:.3f} s = {t_sort / t_matmul:.2f}x matmul")
    # for reference: torch.topk on the same chunks (what recommend used before the kernel)
    t0 = time.perf_counter()
    with torch.no_grad():
        buf = torch.empty(min(chunk, p.users), p.items)
        for s in range(0, min(p.users, topk_users), chunk):
            e = min(s + chunk, p.users)
            torch.topk(torch.mm(P[s:e], Qt, out=buf[:e - s]), top_n + 1, dim=1)
    t_torch = (time.perf_counter() - t0) * p.users / min(p.users, topk_users)
    print(f"  matmul + torch.topk   {t_torch:8.3f} s   ratio to matmul {t_torch / t_matmul:5.2f}x  "
          f"(no masking, no tie order; {'all' if topk_users >= p.users else topk_users} users, scaled)")

    # the seed's per-request path: one forward call per unseen (user, item) pair, for a few users
    sample = users[:3]
    t0 = time.perf_counter()
    with torch.no_grad():
        for user in sample:
            uidx = int(rec.user_index_of([user])[0])
            seen = set(rec._seen_indices[indptr[uidx]:indptr[uidx + 1]].tolist())
            preds = []
            for item in range(p.items):
                if item not in seen:
                    preds.append((item, float(model(torch.tensor([uidx]), torch.tensor([item])))))
            preds.sort(key=lambda x: -x[1])
    t_seed = (time.perf_counter() - t0) / len(sample)
    per_user = t_score / p.users
    print(f"  seed per-request      {t_seed * 1e3:8.1f} ms/user   ours {per_user * 1e6:8.1f} us/user   "
          f"speed-up {t_seed / per_user:,.0f}x  (target >= 1000x)")


class MotoProcess:
    """``python -m moto.server`` in its own process, as ``make run`` starts it (its own GIL and core)."""

    def __enter__(self) -> str:
        import socket
        import urllib.request

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
                return self.endpoint
            except OSError:
                time.sleep(0.1)
        self.proc.kill()
        raise SystemExit("moto server did not start")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def bench_publish(n_users: int, top_n: int) -> None:
    import boto3

    with MotoProcess() as endpoint:
        ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="x")
        _publish(ddb, n_users, top_n)


def _publish(ddb, n_users: int, top_n: int) -> None:
    from tasks import layout, table

    for name in ("batch", "sequential"):
        ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", KeySchema=layout.KEY_SCHEMA,
                         AttributeDefinitions=layout.ATTRIBUTE_DEFINITIONS)
    rng = np.random.default_rng(0)
    rows = [table.rec_item(str(u), "v1", table.encode_items([str(x) for x in rng.integers(0, 4000, top_n)],
                                                             rng.random(top_n) * 5,
                                                             [f"Movie {x}" for x in range(top_n)]), "t", 0)
            for u in range(n_users)]
    t0 = time.perf_counter()
    table.write_items("batch", rows, client=ddb)
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    for row in rows:
        ddb.put_item(TableName="sequential", Item=row)
    t_seq = time.perf_counter() - t0
    got = []
    for page in ddb.get_paginator("scan").paginate(TableName="batch", ProjectionExpression="user_id"):
        got.extend(it["user_id"]["S"] for it in page["Items"])
    lost = n_users - len(set(got))
    dup = len(got) - len(set(got))
    print(f"[publish {n_users} users x top-{top_n} to a local moto server]")
    print(f"  sequential put_item   {t_seq:8.3f} s")
    print(f"  batch writer          {t_batch:8.3f} s   speed-up {t_seq / t_batch:5.1f}x (target >= 10x, <= 5 s)")
    print(f"  read back: {len(got)} rows, lost {lost}, duplicated {dup}")


def bench_end_to_end(preset: str, top_n: int) -> None:
    """``python -m tasks.score`` for all users of a trained model, writing to a local moto server."""
    import boto3

    from tasks import layout, table
    from tasks.data.synthetic import generate_preset

    with tempfile.TemporaryDirectory() as tmp:
        snap, model = Path(tmp) / "snapshot", Path(tmp) / "model"
        snap.mkdir()
        ratings, items = generate_preset(preset, seed=0)
        ratings.to_parquet(snap / "ratings.parquet")
        items.to_parquet(snap / "items.parquet")
        users = [str(u) for u in ratings["user_id"].unique()]
        del ratings, items
        trained, train_wall, train_rss = run_timed(["tasks.train", "--ratings", str(snap), "--out", str(model)], {})
        with MotoProcess() as endpoint:
            aws = {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
            ddb = boto3.client("dynamodb", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name="us-east-1",
                               aws_access_key_id="x", aws_secret_access_key="x")
            ddb.create_table(TableName="recs", BillingMode="PAY_PER_REQUEST", KeySchema=layout.KEY_SCHEMA,
                             AttributeDefinitions=layout.ATTRIBUTE_DEFINITIONS)
            result, wall, rss = run_timed(["tasks.score", "--model", str(model), "--ratings", str(snap),
                                        "--model-version", "v1", "--top-n", str(top_n), "--table", "recs"], aws)
            print(f"[end to end {preset}: python -m tasks.score, trained model "
                  f"(fit {trained['fit_seconds']:.0f} s, command {train_wall:.0f} s, {train_rss:.2f} GB), "
                  f"all users top-{top_n} to a local moto server]")
            print(f"  {result['users']} users: scoring {result['score_seconds']:.1f} s (target <= 60 s), "
                  f"whole command {wall:.1f} s with DynamoDB writes, peak RSS {rss:.2f} GB (target <= 4 GB)",
                  flush=True)
            # read back with BatchGetItem, as publish verifies (a scan of moto's table takes many minutes)
            found = table.existing_users("recs", "v1", users, client=ddb)
            print(f"  read back: {len(found)} of {len(users)} users have their row, "
                  f"{len(set(users) - found)} missing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="ml-1m", choices=sorted(PRESETS))
    parser.add_argument("--top-n", type=int, default=100)
    parser.add_argument("--factors", type=int, default=TrainConfig.factors, help="rating head k")
    parser.add_argument("--rank-factors", type=int, default=TrainConfig.rank_factors,
                        help="ranking head k (0: rank by predicted rating, as a tutorial model)")
    parser.add_argument("--chunk", type=int, default=None, help="users per score chunk (default: recommend's)")
    parser.add_argument("--topk-users", type=int, default=20000,
                        help="users timed for the torch.topk reference (scaled to all users)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="runs of the scoring and matmul timings (the best of each is reported)")
    parser.add_argument("--publish-users", type=int, default=6040)
    parser.add_argument("--end-to-end", metavar="PRESET", choices=sorted(PRESETS),
                        help="also generate, train and run python -m tasks.score on this preset (ml-25m: ~6 min)")
    parser.add_argument("--publish-top-n", type=int, default=10)
    args = parser.parse_args()
    set_threads()
    bench_scoring(args.preset, args.top_n, args.factors, args.rank_factors, args.chunk, args.topk_users,
                  args.repeat)
    if args.publish_users:
        bench_publish(args.publish_users, args.publish_top_n)
    if args.end_to_end:
        bench_end_to_end(args.end_to_end, args.top_n)


if __name__ == "__main__":
    main()
