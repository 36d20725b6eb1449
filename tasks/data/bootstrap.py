"""Seed the raw ratings prefix: MovieLens 100k when available, else synthetic data.

This is a one-off set-up step (``python -m tasks.data bootstrap``), never run by
the DAG. It looks for MovieLens 100k in ``--movielens DIR``, ``$RECSYS_MOVIELENS_DIR``
and scikit-surprise's cache (``~/.surprise_data/ml-100k``), then tries
scikit-surprise's downloader (short timeout), and otherwise writes a synthetic
data set with the same shape (943 users, 1682 items, 100 000 ratings).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import sys
from pathlib import Path

from tasks import storage
from tasks.data.synthetic import generate_preset

log = logging.getLogger(__name__)


def find_movielens_100k(explicit: str | None = None) -> Path | None:
    candidates = [explicit, os.environ.get("RECSYS_MOVIELENS_DIR"),
                  str(Path.home() / ".surprise_data" / "ml-100k" / "ml-100k")]
    for cand in filter(None, candidates):
        path = Path(cand).expanduser()
        for folder in (path, path / "ml-100k"):
            if (folder / "u.data").is_file():
                return folder
    return None


def download_movielens_100k(timeout: float = 15.0) -> Path | None:
    """Ask scikit-surprise to download MovieLens 100k into its cache."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        from surprise import Dataset

        with contextlib.redirect_stdout(sys.stderr):  # surprise prints progress to stdout
            Dataset.load_builtin("ml-100k", prompt=False)
    except Exception as err:  # offline, blocked, or a partial download
        log.warning("MovieLens 100k download failed (%s: %s)", type(err).__name__, err)
        return None
    finally:
        socket.setdefaulttimeout(previous)
    return find_movielens_100k()


def bootstrap(raw: str, items: str, movielens: str | None = None, download: bool = True,
              seed: int = 0) -> dict:
    """Write raw ratings and the item catalogue; returns what was used."""
    folder = find_movielens_100k(movielens) or (download_movielens_100k() if download else None)
    if folder is not None:
        ratings_uri = storage.join(raw, "movielens-100k", "u.data")
        items_uri = storage.join(items, "u.item")
        storage.write_bytes(ratings_uri, (folder / "u.data").read_bytes())
        storage.write_bytes(items_uri, (folder / "u.item").read_bytes())
        source = f"MovieLens 100k from {folder}"
    else:
        ratings, catalogue = generate_preset("ml-100k", seed=seed)
        ratings_uri = storage.join(raw, "synthetic-ml-100k", "ratings.csv")
        items_uri = storage.join(items, "items.csv")
        for uri, df in ((ratings_uri, ratings), (items_uri, catalogue)):
            buf = io.StringIO()
            df.to_csv(buf, index=False)
            storage.write_bytes(uri, buf.getvalue().encode())
        source = f"synthetic data shaped like MovieLens 100k (seed {seed}); MovieLens was not found"
    log.info("bootstrap used %s", source)
    return {"source": source, "ratings": ratings_uri, "items": items_uri}
