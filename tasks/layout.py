"""Where everything lives, written once: S3 keys and file names, the table's schema and reserved
rows, defaults, and the records that cross the argv boundary (the run plan, the live pointer, a
score shard's manifest) with the one rule of which versions are protected.

Standard library only. The stages import it as ``tasks.layout``; the Airflow side as
``recsys.layout`` (``plugins/recsys/layout.py`` is a symlink to this file, and the MWAA and
Composer bundles carry its content), so both halves read the same contract.

Keys are relative to the bucket (``s3://<bucket>/<key>``).
"""

# No ``from __future__ import annotations``: the records' NotRequired keys must be known at run time.
from typing import Any, NotRequired, TypedDict

# -- S3: inputs, snapshots, models, run records -------------------------------------------
RAW_RATINGS = "raw/ratings"  # the raw ratings prefix the snapshot validates
RAW_ITEMS = "raw/items"  # the item catalogue prefix (optional)
MODELS = "models"
LIVE_POINTER = f"{MODELS}/_live.json"  # the served version and its rollback target (record_live, rollback)
SHARDS_DIR = "shards"  # below a model: one manifest per score shard
DATASETS = "datasets"  # the validated snapshots, one folder per run date
QUARANTINE = "quarantine"  # rejected input, one folder per run date
QUARANTINE_REASON = "_reason.json"  # beside the rejected files: the validation problems
RUNS = "runs"  # the Airflow side's records: per run (summary, gate verdict), the live history
SUMMARY_FILE = "summary.json"
GATE_FILE = "gate.json"


def snapshot_key(ds: str) -> str:
    """The run date's validated snapshot: ``datasets/ds=YYYY-MM-DD``."""
    return f"{DATASETS}/ds={ds}"


def quarantine_key(ds: str) -> str:
    """Where the run date's rejected input is copied."""
    return f"{QUARANTINE}/ds={ds}"


def model_key(version: str) -> str:
    """A model version's artifact prefix: ``models/<version>``."""
    return f"{MODELS}/{version}"


def shard_manifest_name(index: int, count: int) -> str:
    """Score shard ``index`` of ``count``'s manifest, below ``<model>/shards/``."""
    return f"{index:04d}-of-{count:04d}.json"


def shard_manifest_key(version: str, index: int, count: int) -> str:
    return f"{model_key(version)}/{SHARDS_DIR}/{shard_manifest_name(index, count)}"


def summary_key(ds: str, version: str) -> str:
    """One run's summary record."""
    return f"{RUNS}/ds={ds}/{version}/{SUMMARY_FILE}"


def gate_key(ds: str, version: str) -> str:
    """One run's gate verdict (promote or not, and why), written by the DAG's ``gate`` task."""
    return f"{RUNS}/ds={ds}/{version}/{GATE_FILE}"


# Every change of the live version (a deploying run's record_live, a rollback), one small
# record each, never rewritten: the versions page draws which version served when from them.
LIVE_HISTORY = f"{RUNS}/live"


def live_history_key(deployed_at: str, version: str) -> str:
    """``runs/live/<deployed_at in UTC, YYYYMMDDTHHMMSSffffffZ>-<version>.json``: keys sort by time."""
    import datetime as dt

    when = dt.datetime.fromisoformat(deployed_at.replace("Z", "+00:00"))
    when = when.astimezone(dt.timezone.utc) if when.tzinfo else when
    return f"{LIVE_HISTORY}/{when:%Y%m%dT%H%M%S%f}Z-{version}.json"


# The versions page (``python -m tasks.publish versions``), regenerated every night.
VERSIONS_PAGE = "versions/index.html"
VERSIONS_DATA = "versions/versions.json"


# snapshot files (below snapshot_key)
RATINGS_FILE = "ratings.parquet"
ITEMS_FILE = "items.parquet"
MANIFEST_FILE = "_manifest.json"  # written last: a snapshot without it is incomplete

# model files (below model_key)
WEIGHTS_FILE = "model.pt"
META_FILE = "meta.json"
METRICS_FILE = "metrics.json"
SEEN_FILE = "seen.npz"
REPORT_FILE = "report.html"
# Written last, listing every file with its size and SHA-256: a version without it
# (or whose files do not match it) is incomplete and never loaded.
ARTIFACT_MANIFEST = "_complete.json"

# -- DynamoDB: one table, a row per (user, version) -----------------------------------------
ATTR_USER = "user_id"  # partition key (S)
ATTR_VERSION = "model_version"  # sort key (S)
ATTR_ITEMS = "items"
ATTR_GENERATED_AT = "generated_at"
ATTR_EXPIRES_AT = "expires_at"  # the TTL attribute (epoch seconds)
ATTR_USERS = "users"
ATTR_TOP_N = "top_n"
KEY_SCHEMA = [{"AttributeName": ATTR_USER, "KeyType": "HASH"}, {"AttributeName": ATTR_VERSION, "KeyType": "RANGE"}]
ATTRIBUTE_DEFINITIONS = [{"AttributeName": ATTR_USER, "AttributeType": "S"},
                         {"AttributeName": ATTR_VERSION, "AttributeType": "S"}]
# Reserved partition keys, one row each per version: they cannot collide with real users
# because user ids are validated to not start with "__".
MARKER_USER = "__complete__"  # written last by publish: serving refuses a version without it
FALLBACK_USER = "__popular__"  # the popularity list for unknown users


def marker_key(version: str) -> dict:
    """The DynamoDB key of a version's completion marker."""
    return {ATTR_USER: {"S": MARKER_USER}, ATTR_VERSION: {"S": version}}


# -- records that cross the argv boundary ---------------------------------------------------
# Written by one side, read by the other (JSON in S3 or XCom): each has this one definition.


class RunPlan(TypedDict):
    """One run's every URI and value (the DAG's ``plan`` task, its XCom): data keyed by the run
    date, model and rows by the run's model version. The stages get these values as flags."""

    ds: str  # the run date, YYYY-MM-DD
    model_version: str  # v<YYYYMMDD>T<HHMMSS><type>-<run hash>
    bucket: str
    table: str  # the DynamoDB table the rows go to
    raw: str  # s3:// URIs from here on
    items: str
    snapshot: str
    quarantine: str
    model: str
    metrics: str
    report: str
    champion: str  # the live model's URI ("" when nothing is live)
    live_version: str  # "" when nothing is live
    retain: str  # "V=URI V=URI": the live and previous versions, whose rows must not expire
    top_n: int
    shards: int
    shard_manifests: list[str]  # one ShardManifest per score shard, in shard order
    summary: str
    jobs_image: NotRequired[str]  # RECSYS_COMPUTE=ecs: the jobs image by digest, pinned for the run
    jobs_task_definition: NotRequired[str]  # ... and the jobs task-definition revision running it
    run_id: NotRequired[str]  # added by the DAG's plan task
    run_type: NotRequired[str]


class VersionRef(TypedDict):
    """A version the live pointer names as its rollback target."""

    model_version: str
    model_uri: str
    table: NotRequired[str]


class LivePointer(TypedDict):
    """``models/_live.json``: the version being served, and the one it replaced (the rollback
    target). Written by the DAG's ``record_live`` and by a rollback; no stage writes either's
    artifacts or rows (:func:`protected_versions`)."""

    model_version: str
    model_uri: str
    ds: str | None  # None after a rollback
    table: str | None
    deployed: dict[str, Any]  # what the deploy returned (revision, URL, rollback_from)
    deployed_at: str  # ISO 8601
    previous: VersionRef | None


class ShardManifest(TypedDict):
    """What one score shard wrote (below ``<model>/shards/``): publish checks every shard's
    against its run, the deploy smoke-tests the first user, the summary counts the users."""

    model_version: str
    shard: str  # "I/N"
    users: int
    ratings_uri: str
    min_ratings: int
    first_user: str | None  # None for a shard without users
    top_n: int
    score_seconds: float
    total_seconds: float
    generated_at: str  # ISO 8601


class GateVerdict(TypedDict):
    """The gate's verdict on a run's version (the DAG's ``gate`` task, :func:`gate_key`); the
    versions page shows it."""

    model_version: str
    ds: str
    promote: bool
    reasons: list[str]  # why not (or, forced, what was overridden)
    forced: bool  # promoted by the run's force_deploy despite ``reasons``


class RunSummary(TypedDict):
    """One run's summary (the DAG's ``summary`` task, :func:`summary_key`); the versions page reads
    ``users_written`` from it where the rows' completion marker has expired."""

    ds: str
    model_version: str
    run_id: str | None
    run_type: str | None
    users_written: int
    holdout: dict[str, Any]  # the candidate's holdout metrics (metrics.json)
    champion: dict[str, Any] | None  # the live model's on the same holdout
    live_version: str | None
    deployed: bool
    report: str
    versions_page: str


# Who rolled back and why (the ``recommender_rollback`` DAG, ``python -m recsys.rollback``).
RollbackRecord = TypedDict("RollbackRecord", {"from": str, "reason": str, "by": str})


class LiveHistoryEntry(TypedDict):
    """One change of the live version (:func:`live_history_key`), never rewritten."""

    model_version: str
    model_uri: str
    ds: str | None
    table: str | None
    deployed_at: str
    previous: str | None  # the version it replaced
    rollback: NotRequired[RollbackRecord]  # only for a rollback


def live_history_entry(pointer: LivePointer, rollback: RollbackRecord | None = None) -> LiveHistoryEntry:
    """The history record of ``pointer`` becoming live."""
    previous = pointer.get("previous")
    entry: LiveHistoryEntry = {"model_version": pointer["model_version"], "model_uri": pointer["model_uri"],
                               "ds": pointer.get("ds"), "table": pointer.get("table"),
                               "deployed_at": pointer["deployed_at"],
                               "previous": previous.get("model_version") if previous else None}
    if rollback:
        entry["rollback"] = rollback
    return entry


def protected_versions(live: LivePointer | dict | None) -> dict[str, str]:
    """{version: role} of the versions nothing may write: the live one and its rollback target.

    Both sides refuse them with this one rule: the DAG's ``plan`` (a cleared re-run of the run that
    wrote the live version) and every stage writing artifacts or rows (``tasks.live``)."""
    out: dict[str, str] = {}
    if live and live.get("model_version"):
        out[live["model_version"]] = "live"
    prev = (live or {}).get("previous") or {}
    if prev.get("model_version"):
        out.setdefault(prev["model_version"], "the rollback target")
    return out


def retain_arg(live: LivePointer | dict | None) -> str:
    """``"V=URI V=URI"``: the protected versions (:func:`protected_versions`) with their artifacts,
    whose rows every night's (and every rollback's) ``retain`` extends. :func:`parse_retain` reads it."""
    refs = [live, (live or {}).get("previous")]
    return " ".join(f"{v['model_version']}={v['model_uri']}" for v in refs
                    if v and v.get("model_version") and v.get("model_uri"))


def parse_retain(tokens: str) -> dict[str, str]:
    """``{version: uri}`` of a :func:`retain_arg` string; ValueError naming a token without ``=``."""
    bad = [t for t in tokens.split() if "=" not in t]
    if bad:
        raise ValueError(f"retain takes VERSION=URI pairs, got {bad}")
    return dict(t.split("=", 1) for t in tokens.split())


def next_live_pointer(model_version: str, model_uri: str, ds: str | None, table: str | None,
                      deployed: dict[str, Any], previous: LivePointer | dict | None, now: str) -> LivePointer:
    """The live pointer once ``model_version`` serves: the version it replaced becomes the rollback
    target (re-deploying the live version keeps the target it had)."""
    prev: VersionRef | None = None
    if previous and previous.get("model_version") and previous["model_version"] != model_version:
        prev = {"model_version": previous["model_version"], "model_uri": previous["model_uri"]}
        if table_before := previous.get("table"):
            prev["table"] = table_before
    elif previous:
        prev = previous.get("previous")
    return {"model_version": model_version, "model_uri": model_uri, "ds": ds, "table": table,
            "deployed": deployed, "deployed_at": now, "previous": prev}


# -- how a stage ends ------------------------------------------------------------------------
# Exit code 3: a retry cannot fix this (bad input, a refused write); the operators fail the
# task at once. The stage's own message is its last line on stderr, after this prefix.
EXIT_NO_RETRY = 3
ERROR_PREFIX = "RECSYS-ERROR: "

# -- defaults (each overridable: docs/configuration.md) --------------------------------------
DEFAULT_TABLE = "recommendations"
DEFAULT_TOP_N = 10
DEFAULT_TTL_DAYS = 30
