"""The live version is immutable: every write keyed by a model version checks it first.

The pointer ``models/_live.json`` (written by the DAG's ``record_live`` task and by
``python -m recsys.rollback``) names the version being served and the one before
it (the rollback target). No stage may write under either's prefix or rows.
"""

from __future__ import annotations

import logging

from tasks import layout, storage
from tasks.errors import LiveVersionError
from tasks.layout import LIVE_POINTER, LivePointer

log = logging.getLogger(__name__)


def pointer_uri(model_uri: str) -> str:
    """``<root>/models/<version>`` -> ``<root>/models/_live.json``."""
    parent = model_uri.rstrip("/").rsplit("/", 1)[0]
    return storage.join(parent, LIVE_POINTER.rsplit("/", 1)[-1])


def read_pointer(model_uri: str) -> LivePointer | None:
    """The live pointer beside the model prefix ``model_uri``; None if nothing was deployed."""
    uri = pointer_uri(model_uri)
    return storage.read_json(uri) if storage.exists(uri) else None


def protected_versions(model_uri: str) -> dict[str, str]:
    """{version: role} of the live version and its rollback target ({} if there is no pointer)."""
    return layout.protected_versions(read_pointer(model_uri))


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
