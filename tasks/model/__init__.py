"""The biased matrix-factorisation model, its artifact format and the batch API.

Artifact (a folder or S3 prefix; docs/pipeline.md, "Contracts"):

- ``model.pt``  -- the ``state_dict`` (the original MF model's parameter names, loads with
  ``weights_only=True``);
- ``meta.json`` -- constructor args, raw id maps, rating scale, data snapshot,
  hyper-parameters, library versions;
- ``seen.npz``  -- which items each user had rated in the snapshot (CSR), so
  ``recommend(..., exclude_seen=True)`` needs nothing else.

``load(uri)`` gives a :class:`Recommender` with ``predict`` and ``recommend``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os

import numpy as np
import torch
from torch import nn

from tasks import storage
from tasks.errors import IncompleteArtifactError
from tasks.layout import ARTIFACT_MANIFEST, META_FILE, SEEN_FILE, WEIGHTS_FILE
from tasks.model.scoring import Items, Seen, top_n

log = logging.getLogger(__name__)

PAD_INT_ID = np.iinfo(np.int64).min  # recommend()'s id for a padded slot, for integer ids


class MF(nn.Module):
    """Biased MF: ``bias + user_bias[u] + item_bias[i] + <user[u], item[i]>``.

    Parameter names match the PyTorch MF model this project started from (the users'
    own), so such a ``state_dict`` loads as is.

    With ``rank_k > 0`` the model also has a *ranking head*: a second pair of
    embeddings (``rank_user``, ``rank_item``) fitted to which items each user
    chose to rate, not to the rating values. ``forward`` (predicted ratings) never
    uses it; :meth:`Recommender.recommend` ranks by it when it is present,
    because a rating-trained MF ranks obscure items first over a full catalogue.
    A model without one (``rank_k=0``) ranks by its rating head.
    """

    def __init__(self, n_user: int, n_item: int, k: int = 10, c_vector: float = 1e-6,
                 c_bias: float = 1e-6, rank_k: int = 0):
        super().__init__()
        self.n_user, self.n_item, self.k = n_user, n_item, k
        self.c_vector, self.c_bias = c_vector, c_bias
        self.rank_k = rank_k
        self.user_bias = nn.Embedding(n_user, 1)
        self.item_bias = nn.Embedding(n_item, 1)
        self.user = nn.Embedding(n_user, k)
        self.item = nn.Embedding(n_item, k)
        self.bias = nn.Parameter(torch.ones(1))
        if rank_k:
            self.rank_user = nn.Embedding(n_user, rank_k)
            self.rank_item = nn.Embedding(n_item, rank_k)

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        # (B, k) * (B, k) -> (B,)
        dot = (self.user(u) * self.item(i)).sum(dim=1)
        return self.bias + self.user_bias(u).squeeze(1) + self.item_bias(i).squeeze(1) + dot

    def constructor_args(self) -> dict:
        return {"n_user": self.n_user, "n_item": self.n_item, "k": self.k,
                "c_vector": self.c_vector, "c_bias": self.c_bias, "rank_k": self.rank_k}


class IdLookup:
    """Raw id -> internal index, vectorised (a hash index, no per-id Python loop).

    Ids are strings in the artifact. When they are all canonical integers, an
    integer index answers integer input directly, which spares converting
    millions of ratings' ids to strings (about 10 s at 25M ratings).
    """

    def __init__(self, ids: np.ndarray):
        import pandas as pd

        self._by_str = pd.Index(np.asarray(ids, dtype=object))
        self._by_int = None
        try:
            as_int = np.asarray(ids).astype(np.int64)
        except (ValueError, OverflowError):
            return
        if (as_int.astype(str) == np.asarray(ids)).all():
            self._by_int = pd.Index(as_int)

    def __call__(self, values) -> np.ndarray:
        import pandas as pd

        values = np.asarray(values)
        if values.dtype.kind in "iu" and self._by_int is not None:
            return self._by_int.get_indexer(values).astype(np.int64)
        if values.dtype.kind == "O" and len(values) > 4 * len(self._by_str):
            # a ratings column (a snapshot's ids are strings): look up each distinct id once.
            # Converting 25M values to new str objects first peaked at several GB
            codes, uniques = pd.factorize(values)
            return np.append(self(np.asarray(uniques).astype(str)), -1)[codes]  # code -1 (missing): unknown
        if values.dtype.kind != "U":
            values = values.astype(str)
        return self._by_str.get_indexer(values.astype(object)).astype(np.int64)


class Recommender:
    """Raw-id API over a trained :class:`MF` (numpy/torch on CPU, batch first)."""

    def __init__(self, model: MF, user_ids, item_ids, *, seen_indptr=None, seen_indices=None,
                 rating_range=(0.5, 5.0), meta: dict | None = None):
        self.model = model.eval()
        self.meta = meta or {}
        self.user_ids = np.asarray(user_ids, dtype=object).astype(str)
        self.item_ids = np.asarray(item_ids, dtype=object).astype(str)
        if len(self.user_ids) != model.n_user or len(self.item_ids) != model.n_item:
            raise ValueError(
                f"id maps ({len(self.user_ids)} users, {len(self.item_ids)} items) do not match the "
                f"model ({model.n_user} users, {model.n_item} items)")
        self._user_lookup = IdLookup(self.user_ids)
        self._item_lookup = IdLookup(self.item_ids)
        # what recommend() returns: the ids as the model was trained on them (meta "id_kinds";
        # artifacts without it: strings, as before)
        self.item_ids_out = (self.item_ids.astype(np.int64)
                             if self.meta.get("id_kinds", {}).get("item") == "int" else self.item_ids)
        self.rating_range = rating_range
        with torch.no_grad():
            self._p = model.user.weight.detach().float()  # (U, k)
            self._q = model.item.weight.detach().float()  # (I, k)
            self._qt = self._q.T.contiguous()  # (k, I): contiguous, for item_scores' matmul
            self._bu = model.user_bias.weight.detach().float().squeeze(1)  # (U,)
            self._bi = model.item_bias.weight.detach().float().squeeze(1)  # (I,)
            self._mu = float(model.bias.detach().reshape(-1)[0])
            # every score as one dot product per (user, item), for tasks.model.scoring: the
            # ranking head's vectors, or the rating head's with a 1 matching the item bias.
            # An unknown user's vector: the average user's (ranking head: close to
            # popularity), or just the item bias (rating head)
            self._rank_p: torch.Tensor | None
            if model.rank_k:
                self._rank_p = model.rank_user.weight.detach().float()
                self._rank_qt = model.rank_item.weight.detach().float().T.contiguous()
                self._vectors = self._rank_p.numpy()
                self._default_vector = self._rank_p.mean(0).numpy()
                items_t = self._rank_qt
            else:
                self._rank_p = None
                self._vectors = torch.cat([self._p, torch.ones(len(self._p), 1)], 1).numpy()
                self._default_vector = np.zeros(self._vectors.shape[1], dtype=np.float32)
                self._default_vector[-1] = 1.0
                items_t = torch.cat([self._qt, self._bi[None, :]], 0)
            self._items = Items.from_vectors(items_t.T.numpy())
        if seen_indptr is None:
            seen_indptr = np.zeros(model.n_user + 1, dtype=np.int64)
            seen_indices = np.zeros(0, dtype=np.int64)
        self.set_seen(seen_indptr, seen_indices)

    # -- seen items ---------------------------------------------------------
    def set_seen(self, indptr, indices) -> None:
        indptr = np.asarray(indptr, dtype=np.int64)
        if indptr.shape != (self.model.n_user + 1,):
            raise ValueError(f"seen indptr must have shape ({self.model.n_user + 1},), got {indptr.shape}")
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) != indptr[-1]:
            raise ValueError(f"seen indptr ends at {indptr[-1]} but there are {len(indices)} indices")
        if len(indices) and not (indices.min() >= 0 and indices.max() < self.model.n_item):
            raise ValueError(f"seen item indexes must be in [0, {self.model.n_item}), got "
                             f"{indices.min()} .. {indices.max()}")  # the kernels index without bounds checks
        descending = np.flatnonzero(indices[1:] < indices[:-1]) + 1  # (no int64 temporary at 25M)
        if len(descending) and not np.isin(descending, indptr).all():  # the kernel wants each user's ascending
            users = np.repeat(np.arange(self.model.n_user), np.diff(indptr))
            indices = indices[np.lexsort((indices, users))]
        self._seen_indptr = indptr
        self._seen_indices = np.ascontiguousarray(indices)

    def set_seen_from_ratings(self, user_ids, item_ids) -> None:
        """Replace the seen sets by exactly these (user, item) pairs; unknown ids are ignored."""
        u = self.user_index_of(user_ids)
        i = self.item_index_of(item_ids)
        keep = (u >= 0) & (i >= 0)
        u, i = u[keep], i[keep]
        order = np.lexsort((i, u))
        counts = np.bincount(u, minlength=self.model.n_user)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        self.set_seen(indptr, i[order])

    # -- id mapping ---------------------------------------------------------
    def user_index_of(self, user_ids) -> np.ndarray:
        """Internal indexes of raw user ids (any dtype; compared as strings), -1 if unknown."""
        return self._user_lookup(user_ids)

    def item_index_of(self, item_ids) -> np.ndarray:
        return self._item_lookup(item_ids)

    # -- API ----------------------------------------------------------------
    def predict(self, user_ids, item_ids) -> np.ndarray:
        """Predicted ratings for pairs; unknown users or items fall back to the biases."""
        if len(user_ids) != len(item_ids):
            raise ValueError(f"user_ids and item_ids differ in length ({len(user_ids)} != {len(item_ids)})")
        u = torch.from_numpy(self.user_index_of(user_ids))
        i = torch.from_numpy(self.item_index_of(item_ids))
        return self.predict_index(u, i)

    def predict_index(self, u: torch.Tensor, i: torch.Tensor) -> np.ndarray:
        ku, ki = u >= 0, i >= 0
        uu, ii = u.clamp(min=0), i.clamp(min=0)
        with torch.no_grad():
            dot = (self._p[uu] * self._q[ii]).sum(1) * (ku & ki)  # (B,)
            pred = self._mu + self._bu[uu] * ku + self._bi[ii] * ki + dot
        lo, hi = self.rating_range
        return pred.clamp(lo, hi).numpy()

    @property
    def ranks_by_rating(self) -> bool:
        """True when ``recommend`` ranks by predicted rating (no ranking head)."""
        return self._rank_p is None

    def item_scores(self, users: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The part of the score that ranks items for a user, (B, I), into ``out`` if given.

        With a ranking head: its relevance, one matmul. Without: item bias +
        dot product in one fused ``addmm``; the user bias and global mean are
        constant per row, so they are added to the selected top-k only.
        """
        if self._rank_p is not None:
            return torch.mm(self._rank_p[users], self._rank_qt, out=out)
        # (B, k) @ (k, I) + (I,) -> (B, I)
        return torch.addmm(self._bi, self._p[users], self._qt, out=out)

    def score_moments(self, rows: np.ndarray) -> np.ndarray:
        """Exact mean and standard deviation of the :meth:`item_scores` row of each user
        index (``-1``: an unknown user's non-personal row), shape (B, 2), from the item
        vectors' mean and covariance: no score is read."""
        from tasks.model.scoring import row_moments

        return row_moments(self.scoring_vectors(rows), self._items.mean, self._items.cov)

    def scoring_vectors(self, rows: np.ndarray) -> np.ndarray:
        """Each user index's vector in the space :meth:`item_scores` is a dot product in
        (``-1``: the non-personal row), (B, F) float32: the ranking head's user vector, or
        the rating head's with a 1 for the item bias."""
        out = self._vectors[np.maximum(rows, 0)]
        out[rows < 0] = self._default_vector
        return out

    def recommend(self, user_ids, n: int = 10, exclude_seen: bool = True,
                  chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` raw item ids and scores per user, best first: shapes (U, n).

        Scores are the ranking head's relevance when the model has one (higher
        is better, not a rating: use :meth:`predict` for ratings), else the
        predicted rating. Item ids have the type the model was trained on:
        integers for an integer id column, else strings. Unknown users get the
        non-personal ranking (the average user's relevance, or the item bias).
        Rows shorter than ``n`` (a user who has seen nearly everything) are
        padded with score ``-inf`` and id ``""`` (strings) or :data:`PAD_INT_ID`
        (integers). Equal scores rank by the item's position in the model
        (deterministic).
        """
        top_i, top_s = self.recommend_index(self.user_index_of(user_ids), n, exclude_seen, chunk_size)
        padded = top_i < 0
        if padded.any():
            items = self.item_ids_out[np.where(padded, 0, top_i)]
            items[padded] = PAD_INT_ID if items.dtype.kind == "i" else ""
        else:
            items = self.item_ids_out[top_i]
        return items, top_s

    def recommend_index(self, idx: np.ndarray, n: int = 10, exclude_seen: bool = True,
                        chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`recommend` by internal indexes: user indexes in (``-1``: unknown user),
        item indexes (``-1``: padding) and scores out, shapes (U, n).

        Scoring and selection: :func:`tasks.model.scoring.top_n` (no score matrix is held by
        the fused implementation); ``chunk_size`` users at a time go to each of
        ``torch.get_num_threads()`` threads.
        """
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) and not (idx.min() >= -1 and idx.max() < self.model.n_user):
            raise ValueError(f"user indexes must be in [-1, {self.model.n_user}), got {idx.min()} .. {idx.max()}")
        rows = idx if exclude_seen else np.full(len(idx), -1, dtype=np.int64)
        top_i, top_s = top_n(self.scoring_vectors(idx), self._items, n,
                             Seen(rows, self._seen_indptr, self._seen_indices),
                             chunk_size=chunk_size, threads=torch.get_num_threads())
        if self._rank_p is None:  # back to predicted ratings: add user bias + mean per row
            offset = np.where(idx >= 0, self._bu.numpy()[np.maximum(idx, 0)], 0.0) + self._mu
            top_s += offset.astype(np.float32)[:, None]
        return top_i, top_s


def save(out: str, model: MF, meta: dict, seen_indptr: np.ndarray, seen_indices: np.ndarray,
         extra: dict[str, bytes] | None = None) -> None:
    """Write the artifact below ``out``, then its completion manifest.

    The manifest of an earlier attempt is deleted first, so a crash at any point
    leaves a version that :func:`load` refuses, never one whose files mix two attempts.
    ``extra`` files (metrics, report) are written and sealed with it.
    """
    manifest_uri = storage.join(out, ARTIFACT_MANIFEST)
    storage.delete(manifest_uri)
    files: dict[str, bytes] = {}
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    files[WEIGHTS_FILE] = buf.getvalue()
    buf = io.BytesIO()
    np.savez_compressed(buf, indptr=seen_indptr, indices=seen_indices)
    files[SEEN_FILE] = buf.getvalue()
    meta = {**meta, "constructor": model.constructor_args(), "torch": torch.__version__}
    files[META_FILE] = json.dumps(meta, indent=2, sort_keys=True, default=str).encode()
    files.update(extra or {})
    for name, data in files.items():
        storage.write_bytes(storage.join(out, name), data)
    storage.write_json(manifest_uri, {
        "model_version": meta.get("model_version"),
        "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                  for name, data in files.items()}})


def verified_files(uri: str, names: tuple[str, ...]) -> dict[str, bytes]:
    """The bytes of ``names`` below ``uri``, checked against the completion manifest.

    Raises :class:`IncompleteArtifactError` naming what is missing or does not match.
    """
    manifest_uri = storage.join(uri, ARTIFACT_MANIFEST)
    if not storage.exists(manifest_uri):
        present = sorted(storage.basename(f) for f in storage.list_files(uri))
        raise IncompleteArtifactError(
            f"model {uri} is incomplete: no {ARTIFACT_MANIFEST} (written last by a finished train); "
            f"files present: {present or 'none'}. Re-run train for this version.")
    listed = storage.read_json(manifest_uri).get("files", {})
    out = {}
    for name in names:
        if name not in listed:
            if name == SEEN_FILE:
                continue
            raise IncompleteArtifactError(f"model {uri} is incomplete: {manifest_uri} does not list {name}")
        file_uri = storage.join(uri, name)
        if not storage.exists(file_uri):
            raise IncompleteArtifactError(f"model {uri} is incomplete: {name} is missing")
        data = storage.read_bytes(file_uri)
        want = listed[name]
        if len(data) != want["bytes"] or hashlib.sha256(data).hexdigest() != want["sha256"]:
            raise IncompleteArtifactError(
                f"model {uri} is inconsistent: {name} ({len(data)} bytes) does not match {ARTIFACT_MANIFEST} "
                f"({want['bytes']} bytes, sha256 {want['sha256'][:12]}...): a later, unfinished write? "
                "Re-run train for this version.")
        out[name] = data
    return out


def load(uri: str) -> Recommender:
    """Load an artifact written by :func:`save` (no pickle: ``weights_only=True``); refuses
    an incomplete one (:class:`IncompleteArtifactError` names what is missing)."""
    files = verified_files(uri, (META_FILE, WEIGHTS_FILE, SEEN_FILE))
    meta = json.loads(files[META_FILE])
    state = torch.load(io.BytesIO(files[WEIGHTS_FILE]), weights_only=True, map_location="cpu")
    model = MF(**meta["constructor"])
    model.load_state_dict(state)
    indptr = indices = None
    if SEEN_FILE in files:
        with np.load(io.BytesIO(files[SEEN_FILE])) as npz:
            indptr, indices = npz["indptr"], npz["indices"]
    return Recommender(model, meta["user_ids"], meta["item_ids"], seen_indptr=indptr,
                       seen_indices=indices, rating_range=tuple(meta.get("rating_range", (0.5, 5.0))),
                       meta=meta)


def set_threads() -> None:
    """Use every core the container was given (torch defaults to physical cores)."""
    n = int(os.environ.get("RECSYS_THREADS", "0")) or os.cpu_count() or 1
    torch.set_num_threads(n)
    import numba  # the top-k kernel's thread pool (capped by NUMBA_NUM_THREADS)

    numba.set_num_threads(max(1, min(n, getattr(numba.config, "NUMBA_NUM_THREADS", n))))
