"""Decisions and bookkeeping of the DAG's small Airflow-side tasks.

Everything here is a plain function of small values (params, URIs, metrics
dicts), so it is unit-tested without Airflow running. I/O goes through the
amazon provider's ``S3Hook``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import Any

from recsys import layout
from recsys.layout import LIVE_POINTER
from recsys.settings import Settings

log = logging.getLogger(__name__)


RUN_TYPE_LETTER = {"scheduled": "s", "manual": "m", "backfill": "b", "asset_triggered": "a",
                   "asset_materialization": "a"}


def run_type_name(run_type) -> str:
    """``DagRunType.BACKFILL_JOB`` or ``"backfill"`` -> ``"backfill"``."""
    return str(getattr(run_type, "value", run_type))


def model_version_for(run_id: str, run_type, when: dt.datetime) -> str:
    """The model version a DAG run writes: ``v<YYYYMMDD>T<HHMMSS><type>-<run hash>``.

    ``when`` is the run's logical date (its run-after time when it has none),
    ``type`` one letter of the run type (``s`` scheduled, ``m`` manual, ``b``
    backfill, ``a`` asset-triggered) and the hash the first 6 hex digits of
    SHA-256 of the run id. A retry or a cleared re-run of the same run gets the
    same version (it overwrites its own keys); two different runs never share one
    (run ids are unique per DAG). A backfill that reprocesses an existing run turns
    it into a backfill run, so it never rewrites the version that run wrote.
    """
    letter = RUN_TYPE_LETTER.get(run_type_name(run_type), "x")
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:6]
    return f"v{when.astimezone(dt.timezone.utc):%Y%m%dT%H%M%S}{letter}-{digest}"


class LiveVersionRefused(RuntimeError):
    """This run's version is live (or the rollback target): the run must not write it."""


class UnknownParams(ValueError):
    """The run's conf has keys the DAG has no Param for: a typo (``topn``) would otherwise run the
    whole pipeline with the default."""


def check_conf(conf: dict | None, known) -> None:
    """Refuse conf keys that are not the DAG's Params (``known``), naming them and the Params."""
    import difflib

    known = sorted(known)
    unknown = sorted(set(conf or {}) - set(known))
    if unknown:
        hints = [f"{close[0]!r} for {k!r}" for k in unknown if (close := difflib.get_close_matches(k, known, 1))]
        raise UnknownParams(
            f"unknown key(s) in the run's conf: {', '.join(map(repr, unknown))}"
            + (f" (did you mean {', '.join(hints)}?)" if hints else "")
            + f"; the DAG's Params are {', '.join(known)}. Trigger the run again with those names")


def plan(ds: str, version: str, params: dict, settings: Settings, live: dict | None) -> dict[str, Any]:
    """Every URI and value of one run: data keyed by its date, model and rows by its version."""
    dt.date.fromisoformat(ds)  # validates
    shards = int(params.get("shards", 1))
    if shards < 1:
        raise ValueError(f"param shards must be >= 1, got {shards}")
    roles = ((live or {}, "live"), ((live or {}).get("previous") or {}, "the rollback target"))
    protected = {v.get("model_version"): role for v, role in roles if v.get("model_version")}
    if version in protected:
        raise LiveVersionRefused(
            f"model version {version} is {protected[version]} ({settings.s3(LIVE_POINTER)}): a cleared re-run of "
            "the run that wrote it would rewrite artifacts and rows being served. Its artifacts are immutable; "
            "trigger a new run instead (every run writes its own version), or roll back first.")
    champion = live["model_uri"] if live and live.get("model_uri") else ""
    model = layout.model_key(version)
    return {
        "ds": ds, "model_version": version, "bucket": settings.bucket, "table": settings.table,
        "raw": settings.s3(layout.RAW_RATINGS), "items": settings.s3(layout.RAW_ITEMS),
        "snapshot": settings.s3(layout.snapshot_key(ds)), "quarantine": settings.s3(layout.quarantine_key(ds)),
        "model": settings.s3(model), "metrics": settings.s3(model, layout.METRICS_FILE),
        "report": settings.s3(model, layout.REPORT_FILE), "champion": champion,
        "live_version": (live or {}).get("model_version", ""),
        # versions whose rows must not expire: the live one and the one before it (rollback)
        "retain": " ".join(f"{v['model_version']}={v['model_uri']}" for v in (live, (live or {}).get("previous"))
                           if v and v.get("model_version")),
        "top_n": int(params.get("top_n", layout.DEFAULT_TOP_N)), "shards": shards,
        # what the score shards will write (the deploy smoke-tests the first one's first user;
        # the summary counts their users)
        "shard_manifests": [settings.s3(layout.shard_manifest_key(version, i, shards)) for i in range(shards)],
        "summary": settings.s3(layout.summary_key(ds, version)),
    }


def pin_jobs_image(settings: Settings) -> dict[str, str]:
    """With ECS stages: this code's jobs image by digest and the jobs task-definition revision running
    it, resolved once by ``plan`` so every stage of the run runs the same image (a push during the run
    changes nothing for it). ``{}`` for the other backends. Raises ``recsys.deploy.ImageUnavailable``
    when the image was never pushed."""
    if settings.compute != "ecs":
        return {}
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    from recsys import deploy

    def client(kind: str):
        return AwsBaseHook(aws_conn_id=settings.aws_conn_id, region_name=settings.region, client_type=kind).conn

    image = deploy.resolve_jobs_image(client("ecr"), settings)
    return {"jobs_image": image, "jobs_task_definition": deploy.jobs_task_definition(client("ecs"), settings, image)}


def should_deploy(run_type, deploy_param: bool) -> tuple[bool, str]:
    """Does this run roll the service? Backfills never; the ``deploy`` Param can switch it off.

    (Scheduled runs for old intervals are stopped before this by ``latest_only``.)
    """
    kind = run_type_name(run_type)
    if kind == "backfill":
        return False, "backfill runs never deploy (they re-create past versions; the live one stays)"
    if not deploy_param:
        return False, "the deploy Param is false"
    return True, f"{kind} run with deploy=true"


def live_pointer(p: dict, deployed: dict, previous: dict | None, now: str) -> dict:
    """The new ``models/_live.json``: this version, and the one it replaced (kept for rollback)."""
    prev = None
    if previous and previous.get("model_version") and previous["model_version"] != p["model_version"]:
        prev = {"model_version": previous["model_version"], "model_uri": previous["model_uri"]}
        if previous.get("table"):
            prev["table"] = previous["table"]
    elif previous:
        prev = previous.get("previous")
    return {"model_version": p["model_version"], "model_uri": p["model"], "ds": p["ds"], "table": p.get("table"),
            "deployed": deployed, "deployed_at": now, "previous": prev}


def score_argvs(p: dict, ttl_days: int) -> list[list[str]]:
    """One command per shard, each writing its users' rows to the table."""
    return [["python", "-m", "tasks.score", "--model", p["model"], "--ratings", p["snapshot"],
             "--model-version", p["model_version"], "--top-n", str(p["top_n"]), "--shard", f"{i}/{p['shards']}",
             "--table", p["table"], "--ttl-days", str(ttl_days)] for i in range(p["shards"])]


def gate(metrics: dict, tolerance: float, force: bool = False, ease_margin: float = 0.05) -> tuple[bool, list[str]]:
    """Promote the candidate? Returns (promote, reasons); reasons explain every failed check.

    On the holdout, the candidate must beat the baselines computed in the same
    run: the global mean, user+item biases and scikit-surprise's SVD on RMSE
    (``predict``), the most-popular list on NDCG@10 (``recommend``). Its
    NDCG@10 must not be below exact EASE^R's by more than ``ease_margin``
    (relative; the ranking head scores a rank-128 projection of it), and it must
    not be worse than the live model (champion), evaluated on the same holdout rows
    (those it never saw: ``champion.candidate`` holds the candidate's figures there),
    by more than ``tolerance`` in RMSE or NDCG@10; a champion entry ``skipped`` (no
    such rows) is not checked. A baseline that was not computed
    (SVD or EASE^R above its size cap) is not checked.
    """
    cand = metrics.get("candidate") or {}
    reasons = []
    if not cand:
        reasons.append("no holdout metrics for the candidate (holdout is empty)")
    else:
        base = metrics.get("baselines", {})
        for name, label in (("global_mean", "the global mean"), ("bias", "user+item biases"),
                            ("svd", "surprise SVD")):
            value = base.get(name, {}).get("rmse")
            if value is not None and not cand["rmse"] < value:
                reasons.append(f"RMSE {cand['rmse']:.4f} does not beat {label} ({value:.4f})")
        pop = base.get("popularity", {}).get("ndcg@10")
        if pop is not None and not cand["ndcg@10"] > pop:
            reasons.append(f"NDCG@10 {cand['ndcg@10']:.4f} does not beat the most-popular list ({pop:.4f})")
        ease = base.get("ease", {}).get("ndcg@10")
        if ease is not None and cand["ndcg@10"] < ease * (1 - ease_margin):
            reasons.append(f"NDCG@10 {cand['ndcg@10']:.4f} is below EASE^R's {ease:.4f} by more than "
                           f"{ease_margin:.0%}")
        champ = metrics.get("champion")
        if champ and "skipped" not in champ:
            # the candidate's figures on the rows the live model was scored on (train keeps only the
            # holdout ratings the live model never saw); older metrics: the whole holdout
            same = champ.get("candidate", cand)
            if same["rmse"] > champ["rmse"] * (1 + tolerance):
                reasons.append(f"RMSE {same['rmse']:.4f} is worse than the live model's {champ['rmse']:.4f} "
                               f"beyond tolerance {tolerance:.1%}")
            if same["ndcg@10"] < champ["ndcg@10"] * (1 - tolerance):
                reasons.append(f"NDCG@10 {same['ndcg@10']:.4f} is worse than the live model's "
                               f"{champ['ndcg@10']:.4f} beyond tolerance {tolerance:.1%}")
    if reasons and force:
        log.warning("force_promote is set: promoting despite: %s", "; ".join(reasons))
        return True, reasons
    return not reasons, reasons


def s3_hook(settings: Settings):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=settings.aws_conn_id, region_name=settings.region)


def _where(settings: Settings, key_or_uri: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key`` or of a key in the pipeline's bucket."""
    if key_or_uri.startswith("s3://"):
        bucket, _, key = key_or_uri[len("s3://"):].partition("/")
        return bucket, key
    return settings.bucket, key_or_uri


def read_json(settings: Settings, key_or_uri: str) -> dict | None:
    """The JSON object at an ``s3://`` URI (or a key in the pipeline's bucket); None if absent."""
    bucket, key = _where(settings, key_or_uri)
    hook = s3_hook(settings)
    if not hook.check_for_key(key, bucket_name=bucket):
        return None
    return json.loads(hook.read_key(key, bucket_name=bucket))


def write_json(settings: Settings, key_or_uri: str, obj: dict) -> None:
    bucket, key = _where(settings, key_or_uri)
    s3_hook(settings).load_string(json.dumps(obj, indent=2, sort_keys=True, default=str), key,
                                  bucket_name=bucket, replace=True)


def first_user(settings: Settings, p: dict) -> str | None:
    """The first user of the first score shard with one (the deploy's smoke test asks for it)."""
    for uri in p["shard_manifests"]:
        user = (read_json(settings, uri) or {}).get("first_user")
        if user:
            return user
    return None


def summarize(settings: Settings, p: dict, verdict: dict) -> dict:
    """Write the run's summary record (``p["summary"]``) and log it as one line."""
    users = sum((read_json(settings, uri) or {}).get("users", 0) for uri in p["shard_manifests"])
    live = read_json(settings, LIVE_POINTER) or {}
    out = {"ds": p["ds"], "model_version": p["model_version"], "run_id": p.get("run_id"),
           "run_type": p.get("run_type"), "users_written": users,
           "holdout": verdict["candidate"], "champion": verdict.get("champion"),
           "live_version": live.get("model_version"), "deployed": live.get("model_version") == p["model_version"],
           "report": p["report"], "versions_page": versions_page(settings)}
    write_json(settings, p["summary"], out)
    log.info("RUN SUMMARY %s", json.dumps(out, default=str))
    log.info("model report: %s", out["report"])
    log.info("versions page: %s", out["versions_page"])
    return out


def versions_page(settings: Settings) -> str:
    """The versions page's URI (``python -m tasks.publish versions`` regenerates it every night)."""
    return settings.s3(layout.VERSIONS_PAGE)


def record_gate(settings: Settings, p: dict, promote: bool, reasons: list[str], forced: bool) -> dict:
    """The gate's verdict on this run's version, for the versions page (``runs/ds=<ds>/<v>/gate.json``)."""
    verdict = {"model_version": p["model_version"], "ds": p["ds"], "promote": promote, "reasons": reasons,
               "forced": forced and bool(reasons)}
    write_json(settings, layout.gate_key(p["ds"], p["model_version"]), verdict)
    return verdict


def record_history(settings: Settings, pointer: dict, rollback: dict | None = None) -> str:
    """One record of a change of the live version (``runs/live/<when>-<version>.json``, never
    rewritten: the key carries the time): the versions page draws which version served when."""
    entry = {k: pointer.get(k) for k in ("model_version", "model_uri", "ds", "table", "deployed_at")}
    entry["previous"] = (pointer.get("previous") or {}).get("model_version")
    if rollback:
        entry["rollback"] = rollback
    key = layout.live_history_key(pointer["deployed_at"], pointer["model_version"])
    write_json(settings, key, entry)
    return settings.s3(key)
