"""Train the biased MF model on a snapshot, evaluate it, write the artifact.

``main()`` reads top to bottom: data, split, model, optimiser, loop, evaluate,
save. Everything the run depends on is in :class:`TrainConfig`, whose defaults
are the tuned values; ``meta.json`` records the config actually used.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from tasks import storage
from tasks.constants import ITEM_ID, METRICS_FILE, RATING, RATINGS_FILE, REPORT_FILE, TIMESTAMP, USER_ID
from tasks.model import MF, Recommender, load, save, set_threads
from tasks.model import metrics as M

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    factors: int = 32  # k, the latent dimension
    epochs: int = 40  # upper bound; early stopping usually ends sooner
    lr: float = 0.01  # Adam step size
    batch_size: int = 4096  # ratings per step
    c_vector: float = 0.05  # L2 on user/item factors (per rating in the batch)
    c_bias: float = 0.005  # L2 on user/item biases
    patience: int = 3  # epochs without validation improvement before stopping
    val_fraction: float = 0.05  # random share of training ratings for early stopping
    holdout_fraction: float = 0.1  # last share of each user's ratings, for the gate
    holdout_min_ratings: int = 5  # users with fewer ratings keep all of them in train
    top_k: int = 10  # cut-off of the ranking metrics
    seed: int = 0


@dataclass
class Split:
    """Internal-index arrays of one train/validation/holdout split."""

    train: np.ndarray  # row positions into the ratings frame
    val: np.ndarray
    holdout: np.ndarray


def read_ratings(uri: str) -> pd.DataFrame:
    """A snapshot prefix, a Parquet file, or any file ``tasks.data`` can read."""
    if uri.endswith(".parquet"):
        return storage.read_parquet(uri)
    if not any(uri.endswith(ext) for ext in (".csv", ".tsv", ".dat", ".data", ".gz")):
        return storage.read_parquet(storage.join(uri, RATINGS_FILE))
    from tasks.data.schema import read_ratings as read_raw
    from tasks.data.schema import validate_ratings

    raw, first = read_raw(uri)
    return validate_ratings(uri, raw, first, rating_min=-np.inf, rating_max=np.inf, max_timestamp=None)


def temporal_split(df: pd.DataFrame, cfg: TrainConfig) -> Split:
    """Per user, the last ``holdout_fraction`` of ratings by time form the holdout."""
    rng = np.random.default_rng(cfg.seed)
    order = np.lexsort((df[TIMESTAMP].to_numpy(), df["_u"].to_numpy()))
    users = df["_u"].to_numpy()[order]
    counts = np.bincount(users)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(order)) - start[users]  # 0 = the user's oldest rating
    n_hold = np.where(counts >= cfg.holdout_min_ratings,
                      np.maximum(1, np.floor(counts * cfg.holdout_fraction)), 0).astype(np.int64)
    is_hold = rank >= counts[users] - n_hold[users]
    holdout = order[is_hold]
    rest = order[~is_hold]
    is_val = rng.random(len(rest)) < cfg.val_fraction
    return Split(train=np.sort(rest[~is_val]), val=np.sort(rest[is_val]), holdout=np.sort(holdout))


def csr(users: np.ndarray, items: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((items, users))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))])
    return indptr, items[order]


def fit(u: torch.Tensor, i: torch.Tensor, r: torch.Tensor, val: tuple, n_users: int, n_items: int,
        cfg: TrainConfig) -> tuple[MF, list[dict]]:
    """Mini-batch Adam on MSE + L2, early-stopped on validation RMSE."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = MF(n_users, n_items, k=cfg.factors, c_vector=cfg.c_vector, c_bias=cfg.c_bias)
    with torch.no_grad():
        model.user.weight.normal_(0, 0.01)
        model.item.weight.normal_(0, 0.01)
        model.user_bias.weight.zero_()
        model.item_bias.weight.zero_()
        model.bias.fill_(float(r.mean()))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    vu, vi, vr = val
    best, best_state, bad, history = np.inf, None, 0, []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(r), generator=gen)
        total = 0.0
        for start in range(0, len(r), cfg.batch_size):
            b = perm[start:start + cfg.batch_size]
            bu, bi, br = u[b], i[b], r[b]
            pred = model(bu, bi)
            mse = torch.mean((pred - br) ** 2)
            # L2 on the rows this batch touches, as in the seed's loss
            reg = (cfg.c_vector * (model.user(bu).pow(2).sum(1) + model.item(bi).pow(2).sum(1)).mean()
                   + cfg.c_bias * (model.user_bias(bu).pow(2) + model.item_bias(bi).pow(2)).mean())
            loss = mse + reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(mse.detach()) * len(b)
        model.eval()
        with torch.no_grad():
            val_rmse = float(torch.sqrt(torch.mean((model(vu, vi).clamp(0.5, 5.0) - vr) ** 2))) if len(vr) else np.nan
        history.append({"epoch": epoch, "train_rmse": (total / len(r)) ** 0.5, "val_rmse": val_rmse,
                        "seconds": time.perf_counter() - t0})
        log.info("epoch %d train_rmse %.4f val_rmse %.4f (%.2fs)", epoch, history[-1]["train_rmse"],
                 val_rmse, history[-1]["seconds"])
        if not len(vr):
            continue
        if val_rmse < best - 1e-4:
            best, bad = val_rmse, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                log.info("early stop at epoch %d (best val_rmse %.4f)", epoch, best)
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), history


def evaluate(rec: Recommender, u: np.ndarray, i: np.ndarray, r: np.ndarray,
             rel: tuple[np.ndarray, np.ndarray], cfg: TrainConfig) -> dict[str, float]:
    """Rating and ranking metrics of a recommender on holdout rows (internal indexes)."""
    pred = rec.predict_index(torch.from_numpy(u), torch.from_numpy(i))
    users = np.arange(len(rel[0]) - 1)
    items, _ = rec.recommend(rec.user_ids[users], cfg.top_k)
    recs = rec.item_index_of(items.ravel()).reshape(items.shape)
    return {"rmse": M.rmse(pred, r), "mae": M.mae(pred, r),
            **M.ranking_metrics(recs, rel[0], rel[1], rec.model.n_item, cfg.top_k)}


def baselines(train_u, train_i, train_r, hold_u, hold_i, hold_r, seen, rel, n_users, n_items,
              cfg: TrainConfig) -> dict[str, dict]:
    mu = float(train_r.mean())
    out = {"global_mean": {"rmse": M.rmse(np.full(len(hold_r), mu), hold_r),
                           "mae": M.mae(np.full(len(hold_r), mu), hold_r)}}
    # user + item biases, a few rounds of regularised alternating means
    bu, bi, lam = np.zeros(n_users), np.zeros(n_items), 10.0
    for _ in range(10):
        bi = np.bincount(train_i, train_r - mu - bu[train_u], n_items) / (np.bincount(train_i, minlength=n_items) + lam)
        bu = np.bincount(train_u, train_r - mu - bi[train_i], n_users) / (np.bincount(train_u, minlength=n_users) + lam)
    pred = np.clip(mu + bu[hold_u] + bi[hold_i], 0.5, 5.0)
    out["bias"] = {"rmse": M.rmse(pred, hold_r), "mae": M.mae(pred, hold_r)}
    pop = M.popularity_recs(train_i, n_items, seen[0], seen[1], cfg.top_k)
    out["popularity"] = M.ranking_metrics(pop, rel[0], rel[1], n_items, cfg.top_k)
    return out


def train(ratings_uri: str, out: str, cfg: TrainConfig, champion: str | None = None,
          ds: str | None = None, model_version: str | None = None) -> dict:
    set_threads()
    t_start = time.perf_counter()
    # -- data ---------------------------------------------------------------
    df = read_ratings(ratings_uri)
    if df.empty:
        raise ValueError(f"{ratings_uri}: no ratings to train on")
    user_ids = np.sort(df[USER_ID].astype(str).unique())
    item_ids = np.sort(df[ITEM_ID].astype(str).unique())
    df["_u"] = np.searchsorted(user_ids, df[USER_ID].astype(str))
    df["_i"] = np.searchsorted(item_ids, df[ITEM_ID].astype(str))
    n_users, n_items = len(user_ids), len(item_ids)
    split = temporal_split(df, cfg)
    uu, ii, rr = df["_u"].to_numpy(), df["_i"].to_numpy(), df[RATING].to_numpy(np.float32)
    log.info("%d ratings, %d users, %d items; train %d, val %d, holdout %d", len(df), n_users, n_items,
             len(split.train), len(split.val), len(split.holdout))

    # -- model and loop -----------------------------------------------------
    t = lambda a, dtype=torch.long: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    tr, va, ho = split.train, split.val, split.holdout
    model, history = fit(t(uu[tr]), t(ii[tr]), t(rr[tr], torch.float32),
                         (t(uu[va]), t(ii[va]), t(rr[va], torch.float32)), n_users, n_items, cfg)
    fit_seconds = time.perf_counter() - t_start

    # -- evaluate on the holdout: candidate, baselines, champion -------------
    fitted = np.concatenate([tr, va])
    seen_train = csr(uu[fitted], ii[fitted], n_users)
    rel = csr(uu[ho], ii[ho], n_users)
    rec = Recommender(model, user_ids, item_ids, seen_indptr=seen_train[0], seen_indices=seen_train[1])
    metrics = {"candidate": evaluate(rec, uu[ho], ii[ho], rr[ho], rel, cfg) if len(ho) else {}}
    if len(ho):
        metrics["baselines"] = baselines(uu[tr], ii[tr], rr[tr], uu[ho], ii[ho], rr[ho], seen_train, rel,
                                         n_users, n_items, cfg)
    if champion and len(ho):
        champ = load(champion)
        champ.set_seen_from_ratings(user_ids[uu[fitted]], item_ids[ii[fitted]])
        hold_users, hold_items = user_ids[uu[ho]], item_ids[ii[ho]]
        pred = champ.predict(hold_users, hold_items)
        items, _ = champ.recommend(user_ids, cfg.top_k)
        # the champion's raw ids onto this snapshot's indexes (the candidate shares them)
        recs = rec.item_index_of(items.ravel()).reshape(items.shape)
        metrics["champion"] = {"uri": champion, "rmse": M.rmse(pred, rr[ho]), "mae": M.mae(pred, rr[ho]),
                               **M.ranking_metrics(recs, rel[0], rel[1], n_items, cfg.top_k)}
    metrics["holdout"] = {"ratings": int(len(ho)), "users": int((np.diff(rel[0]) > 0).sum())}
    metrics["fit_seconds"] = fit_seconds
    metrics["history"] = history
    log.info("candidate %s", {k: round(v, 4) for k, v in metrics["candidate"].items()})

    # -- save: weights, id maps, every snapshot pair as "seen" ---------------
    seen_all = csr(uu, ii, n_users)
    meta = {
        "model_version": model_version, "ds": ds, "ratings": ratings_uri,
        "user_ids": user_ids.tolist(), "item_ids": item_ids.tolist(),
        "rating_range": [float(rr.min()), float(rr.max())],
        "config": dataclasses.asdict(cfg), "numpy": np.__version__, "pandas": pd.__version__,
        "trained_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "n_ratings": int(len(df)),
    }
    save(out, model, meta, *seen_all)
    storage.write_json(storage.join(out, METRICS_FILE), metrics)
    from tasks.train.report import render

    storage.write_bytes(storage.join(out, REPORT_FILE), render(model_version, metrics).encode())
    return metrics
