"""Where everything lives, written once: S3 keys and file names, the table's schema and reserved
rows, the live pointer, defaults.

Standard library only. The stages import it as ``tasks.layout``; the Airflow side as
``recsys.layout`` (``plugins/recsys/layout.py`` is a symlink to this file, and the MWAA and
Composer bundles carry its content), so both halves read the same contract.

Keys are relative to the bucket (``s3://<bucket>/<key>``).
"""

from __future__ import annotations

# -- S3: inputs, snapshots, models, run records -------------------------------------------
RAW_RATINGS = "raw/ratings"  # the raw ratings prefix the snapshot validates
RAW_ITEMS = "raw/items"  # the item catalogue prefix (optional)
MODELS = "models"
LIVE_POINTER = f"{MODELS}/_live.json"  # the served version and its rollback target (record_live, rollback)
SHARDS_DIR = "shards"  # below a model: one manifest per score shard


def snapshot_key(ds: str) -> str:
    """The run date's validated snapshot: ``datasets/ds=YYYY-MM-DD``."""
    return f"datasets/ds={ds}"


def quarantine_key(ds: str) -> str:
    """Where the run date's rejected input is copied."""
    return f"quarantine/ds={ds}"


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
    return f"runs/ds={ds}/{version}/summary.json"


def gate_key(ds: str, version: str) -> str:
    """One run's gate verdict (promote or not, and why), written by the DAG's ``gate`` task."""
    return f"runs/ds={ds}/{version}/gate.json"


# Every change of the live version (a deploying run's record_live, a rollback), one small
# record each, never rewritten: the versions page draws which version served when from them.
LIVE_HISTORY = "runs/live"


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


# -- how a stage ends ------------------------------------------------------------------------
# Exit code 3: a retry cannot fix this (bad input, a refused write); the operators fail the
# task at once. The stage's own message is its last line on stderr, after this prefix.
EXIT_NO_RETRY = 3
ERROR_PREFIX = "RECSYS-ERROR: "

# -- defaults (each overridable: docs/configuration.md) --------------------------------------
DEFAULT_TABLE = "recommendations"
DEFAULT_TOP_N = 10
DEFAULT_TTL_DAYS = 30
