"""One release at a time: a DAG file runs only with the ``recsys`` package of its own release.

``make bundle`` stamps one release id into every DAG file it ships (the ``RELEASE = "source"``
line) and into ``recsys/_bundle.json``. On MWAA, ``dags/`` syncs within seconds but a new
``plugins.zip`` takes effect only after the environment update restarts every component; on
Composer, DAG and plugin files sync separately. In between, a new DAG file would import the old
``recsys`` (or the reverse) and run code that was never tested together. :func:`require` turns
that window into an import error that names both releases, shown in the UI's import errors,
and no task of the mismatched DAG runs.

Standard library only: it runs at DAG parse time.
"""

from __future__ import annotations

import importlib.resources
import json

SOURCE = "source"  # a source checkout: DAG files and package from the same tree, no _bundle.json
BUNDLE_FILE = "_bundle.json"


class ReleaseMismatch(ImportError):
    """The DAG file and the ``recsys`` package on the path come from different releases."""


def package_release() -> str:
    """The release of the ``recsys`` package on the path (``source`` without a ``_bundle.json``)."""
    try:
        info = json.loads(importlib.resources.files("recsys").joinpath(BUNDLE_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return SOURCE
    return str(info.get("release") or info.get("commit") or "unknown (a bundle from before release ids)")


def require(dag_release: str, dag_file: str = "this DAG file") -> str:
    """Raise :class:`ReleaseMismatch` unless the package on the path is ``dag_release``."""
    have = package_release()
    if have != dag_release:
        where = str(importlib.resources.files("recsys"))
        raise ReleaseMismatch(
            f"{dag_file} is release {dag_release} but the recsys package at {where} is release {have}: "
            "the DAG file and the plugins come from different `make bundle` runs. On MWAA a new plugins.zip "
            "takes effect only when the environment update finishes: deploy both with "
            "`python scripts/deploy_mwaa.py` (one update, waits for AVAILABLE) and this error clears itself; "
            "on Composer run the bundle's deploy.sh to the end. Never upload dags/ alone.")
    return have
