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
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from recsys import layout
from recsys.layout import LIVE_POINTER, LivePointer, RunPlan, ShardManifest
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


def plan(ds: str, version: str, params: dict, settings: Settings, live: LivePointer | None) -> RunPlan:
    """Every URI and value of one run: data keyed by its date, model and rows by its version."""
    dt.date.fromisoformat(ds)  # validates
    shards = int(params.get("shards", 1))
    if shards < 1:
        raise ValueError(f"param shards must be >= 1, got {shards}")
    protected = layout.protected_versions(live)
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
        "live_version": live.get("model_version", "") if live else "",
        "retain": layout.retain_arg(live),  # rows that must not expire: live and rollback target
        "top_n": int(params.get("top_n", layout.DEFAULT_TOP_N)), "shards": shards,
        # what the score shards will write (the deploy smoke-tests the first one's first user;
        # the summary counts their users)
        "shard_manifests": [settings.s3(layout.shard_manifest_key(version, i, shards)) for i in range(shards)],
        "summary": settings.s3(layout.summary_key(ds, version)),
    }


def plan_run(settings: Settings, params: dict, ds: str | None, dag_run: Any, dag_params: Any) -> RunPlan:
    """The DAG's ``plan`` task: this run's :class:`RunPlan`, or a failure without retries naming why
    (an unknown conf key, a version that is live, an unpushed jobs image)."""
    from recsys.compat import fail
    from recsys.deploy.image import ImageUnavailable

    try:  # a typo in the trigger form's JSON ({"topn": 3}) fails here, not silently
        check_conf(dag_run.conf, dag_params)
    except UnknownParams as err:
        raise fail(str(err)) from None
    when = dag_run.logical_date or dag_run.run_after
    run_ds = ds or when.strftime("%Y-%m-%d")
    version = model_version_for(dag_run.run_id, dag_run.run_type, when)
    try:
        p = plan(run_ds, version, params, settings, read_live(settings))
    except LiveVersionRefused as err:
        raise fail(str(err)) from None
    try:  # ECS: one jobs image (by digest) for every stage of this run
        pin = pin_jobs_image(settings)
    except ImageUnavailable as err:
        raise fail(str(err)) from None
    if pin:
        p["jobs_image"], p["jobs_task_definition"] = pin["jobs_image"], pin["jobs_task_definition"]
    p["run_id"], p["run_type"] = dag_run.run_id, run_type_name(dag_run.run_type)
    return p


def pin_jobs_image(settings: Settings) -> dict[str, str]:
    """With ECS stages: this code's jobs image by digest and the jobs task-definition revision running
    it, resolved once by ``plan`` so every stage of the run runs the same image (a push during the run
    changes nothing for it). ``{}`` for the other backends. Raises ``recsys.deploy.image.ImageUnavailable``
    when the image was never pushed."""
    if settings.compute != "ecs":
        return {}
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    from recsys import deploy

    def client(kind: str):
        return AwsBaseHook(aws_conn_id=settings.aws_conn_id, region_name=settings.region, client_type=kind).conn

    image = deploy.image.resolve_jobs_image(client("ecr"), settings)
    return {"jobs_image": image,
            "jobs_task_definition": deploy.ecs.jobs_task_definition(client("ecs"), settings, image)}


def check_gate(settings: Settings, p: RunPlan, tolerance: float, force: bool) -> dict:
    """The DAG's ``gate`` task: record the verdict; fail (without retries) a model that may not serve."""
    from recsys.compat import fail

    metrics = read_json(settings, p["metrics"])
    promote, reasons = gate(metrics, tolerance, force)
    record_gate(settings, p, promote, reasons, force)
    if not promote:
        raise fail(f"model {p['model_version']} rejected: " + "; ".join(reasons)
                   + f". The live model ({p['live_version'] or 'none'}) keeps serving.")
    return {"candidate": metrics["candidate"], "champion": metrics.get("champion"), "overridden": reasons}


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


def deploy_here(settings: Settings, p: RunPlan, image: Any) -> dict:
    """Roll the service onto the run's version without ECS: a container (``RECSYS_DEPLOY=docker``,
    ``image``) or the app on this machine (``local``), smoke-tested with the first scored user."""
    from recsys import deploy

    user = first_user(shard_manifests(settings, p["shard_manifests"]))
    if settings.deploy == "docker":
        return deploy.container.deploy_container(settings, image, p["model_version"], user, p["table"])
    return deploy.local.deploy_local(settings, p["model_version"], user, p["table"])


def record_live(settings: Settings, p: RunPlan, deployed: dict, now: str) -> LivePointer:
    """Point ``models/_live.json`` at the deployed version and record the change in its history."""
    pointer = live_pointer(p, deployed, read_live(settings), now)
    write_live(settings, pointer)
    record_history(settings, pointer)
    return pointer


def live_pointer(p: RunPlan, deployed: dict, previous: LivePointer | None, now: str) -> LivePointer:
    """The new ``models/_live.json`` once this run's version serves (:func:`layout.next_live_pointer`)."""
    return layout.next_live_pointer(p["model_version"], p["model"], p["ds"], p.get("table"), deployed, previous, now)


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


def read_json(settings: Settings, key_or_uri: str) -> Any:
    """The JSON object at an ``s3://`` URI (or a key in the pipeline's bucket); None if absent."""
    bucket, key = _where(settings, key_or_uri)
    hook = s3_hook(settings)
    if not hook.check_for_key(key, bucket_name=bucket):
        return None
    return json.loads(hook.read_key(key, bucket_name=bucket))


def write_json(settings: Settings, key_or_uri: str, obj: Mapping[str, Any]) -> None:
    bucket, key = _where(settings, key_or_uri)
    s3_hook(settings).load_string(json.dumps(obj, indent=2, sort_keys=True, default=str), key,
                                  bucket_name=bucket, replace=True)


def read_live(settings: Settings) -> LivePointer | None:
    """``models/_live.json``; None before anything was deployed."""
    return read_json(settings, LIVE_POINTER)


def write_live(settings: Settings, pointer: LivePointer) -> None:
    write_json(settings, LIVE_POINTER, pointer)


def shard_manifests(settings: Settings, uris: Iterable[str]) -> Iterator[ShardManifest | None]:
    """The score shards' manifests, in shard order, each read when it is needed (None for a shard
    that wrote none)."""
    return (read_json(settings, uri) for uri in uris)


def first_user(manifests: Iterable[ShardManifest | None]) -> str | None:
    """The first user of the first score shard with one (the deploy's smoke test asks for it)."""
    for m in manifests:
        if m and m.get("first_user"):
            return m["first_user"]
    return None


def summarize(settings: Settings, p: RunPlan, verdict: dict) -> layout.RunSummary:
    """Write the run's summary record (``p["summary"]``) and log it as one line."""
    users = sum(m.get("users", 0) for m in shard_manifests(settings, p["shard_manifests"]) if m)
    live: LivePointer | dict = read_live(settings) or {}
    out: layout.RunSummary = {"ds": p["ds"], "model_version": p["model_version"], "run_id": p.get("run_id"),
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


def record_gate(settings: Settings, p: RunPlan, promote: bool, reasons: list[str],
                forced: bool) -> layout.GateVerdict:
    """The gate's verdict on this run's version, for the versions page (``runs/ds=<ds>/<v>/gate.json``)."""
    verdict: layout.GateVerdict = {"model_version": p["model_version"], "ds": p["ds"], "promote": promote,
                                   "reasons": reasons, "forced": forced and bool(reasons)}
    write_json(settings, layout.gate_key(p["ds"], p["model_version"]), verdict)
    return verdict


def record_history(settings: Settings, pointer: LivePointer, rollback: layout.RollbackRecord | None = None) -> str:
    """One record of a change of the live version (``runs/live/<when>-<version>.json``, never
    rewritten: the key carries the time): the versions page draws which version served when."""
    key = layout.live_history_key(pointer["deployed_at"], pointer["model_version"])
    write_json(settings, key, layout.live_history_entry(pointer, rollback))
    return settings.s3(key)
