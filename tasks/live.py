"""The live version is immutable: every write keyed by a model version checks it first.

The pointer ``models/_live.json`` (written by the DAG's ``record_live`` task and by
``python -m recsys.rollback``) names the version being served and the one before
it (the rollback target). No stage may write under either's prefix or rows.
"""

from __future__ import annotations

import logging

from tasks import storage
from tasks.constants import LIVE_POINTER
from tasks.errors import LiveVersionError

log = logging.getLogger(__name__)


def pointer_uri(model_uri: str) -> str:
    """``<root>/models/<version>`` -> ``<root>/models/_live.json``."""
    parent = model_uri.rstrip("/").rsplit("/", 1)[0]
    return storage.join(parent, LIVE_POINTER.rsplit("/", 1)[-1])


def protected_versions(model_uri: str) -> dict[str, str]:
    """{version: role} of the live version and its rollback target ('' if there is no pointer)."""
    uri = pointer_uri(model_uri)
    if not storage.exists(uri):
        return {}
    live = storage.read_json(uri) or {}
    out = {}
    if live.get("model_version"):
        out[live["model_version"]] = "live"
    prev = live.get("previous") or {}
    if prev.get("model_version"):
        out.setdefault(prev["model_version"], "the rollback target")
    return out


def refuse_protected(model_uri: str, model_version: str | None, what: str) -> None:
    """Raise :class:`LiveVersionError` if ``model_version`` (or the version folder of
    ``model_uri``) is the live version or its rollback target."""
    versions = {v for v in (model_version, storage.basename(model_uri)) if v}
    protected = protected_versions(model_uri)
    for version in sorted(versions):
        if version in protected:
            raise LiveVersionError(
                f"refusing to {what} model version {version}: it is {protected[version]} "
                f"({pointer_uri(model_uri)}), and the live version's artifacts and rows are immutable. "
                "Trigger a new run (every run writes its own version) or roll back first.")
