"""Train the recommender on a snapshot, evaluate it, write the artifact.

``train()`` reads top to bottom: data, split, fit without the holdout, evaluate,
refit on every rating, save. The holdout estimate (what the gate, the report and
the alerts read) describes the configuration fitted without each user's latest
ratings; the artifact that is scored and served is the same configuration fitted
on every rating of the snapshot, its Gibbs chain warm-started from the first fit
(``metrics.json`` → ``fits`` says which fit each number describes). Everything the
run depends on is in :class:`TrainConfig`, whose defaults are the tuned values
(``bench/train_bench.py`` measures them); ``meta.json`` records the config
actually used.

The model has two heads (see :class:`tasks.model.MF`): a biased matrix factorisation
(``mu + b_u + b_i + <p_u, q_i>``) fitted to rating values as the posterior mean of a Gibbs sampler
(:mod:`tasks.train.bayes`) carries ``predict``; a ranking head fitted to which
items users rated (PureSVD, blended with EASE^R where the catalogue is small
enough: :mod:`tasks.train.ranking`) carries ``recommend``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from tasks import storage
from tasks.constants import ITEM_ID, RATING, TIMESTAMP, USER_ID
from tasks.layout import METRICS_FILE, RATINGS_FILE, REPORT_FILE
from tasks.live import refuse_protected
from tasks.model import MF, Recommender, load, save, set_threads
from tasks.model import metrics as M
from tasks.train import item_models as IM
from tasks.train.bayes import Chain, fit_bayes
from tasks.train.ranking import fit_ranking_head

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    factors: int = 8  # k of each Gibbs draw of the rating head
    keep_rank: int = 32  # rank of the draws' average that the artifact keeps (model.pt's k)
    # per-user and per-item noise levels (robust BPMF): their Gamma(a, a) prior's a; 0 = one noise level
    noise_prior: float = 15.0
    sweeps: int = 120  # Gibbs sweeps of the rating head fitted without the holdout (the estimate)
    burn_in: int = 20  # first sweeps not averaged (at most half of sweeps)
    thin: int = 1  # average every thin-th draw after burn-in
    # Gibbs sweeps of the shipped refit on every rating, warm-started from the estimate's chain;
    # 0 = ship the estimate's model (fitted without the holdout), as before issue 27
    refit_sweeps: int = 120
    refit_burn_in: int = 10  # the warm chain is already near the posterior: a short burn-in
    # cap on ratings x sweeps of both rating-head fits together: above it (about 10M ratings with the
    # defaults) both schedules shrink in proportion, so ML-25M's night fits its budget (docs/model.md)
    max_rating_sweeps: float = 2.5e9
    rank_factors: int = 16  # k of the ranking head's PureSVD part; 0 = rank by predicted rating
    ease_rank: int = 128  # rank of the ranking head's EASE^R part; 0 = PureSVD alone
    ease_max_items: int = 10_000  # above this catalogue size: no EASE^R part and no EASE^R baseline
    popularity_damping: float = 0.0  # ranking head: item columns scaled by n_i ** -beta
    # random share of training ratings the rating head leaves out to report a validation curve
    val_fraction: float = 0.0
    holdout_fraction: float = 0.1  # last share of each user's ratings, for the gate
    holdout_min_ratings: int = 5  # users with fewer ratings keep all of them in train
    top_k: int = 10  # cut-off of the ranking metrics
    svd_baseline_max_ratings: int = 2_000_000  # surprise SVD baseline above this size: skipped
    seed: int = 0


@dataclass
class Split:
    """Internal-index arrays of one train/validation/holdout split."""

    train: np.ndarray  # row positions into the ratings frame
    val: np.ndarray
    holdout: np.ndarray


def read_ratings(uri: str) -> pd.DataFrame:
    """A snapshot prefix (validated by ``tasks.data snapshot``), or one ratings file (``.csv``,
    ``.tsv``, ``.parquet``, ``u.data``, ``ratings.dat``, gzipped text) checked by the snapshot's own
    readers: typed columns, nulls, ids, timestamps; problems named with physical line numbers
    (:class:`tasks.schema.DataValidationError`, exit 3). Ratings need not be on the snapshot's scale."""
    if not uri.endswith((".parquet", ".csv", ".tsv", ".dat", ".data", ".gz")):
        return storage.read_parquet(storage.join(uri, RATINGS_FILE))
    from tasks.schema import DataValidationError, relocate, validate_ratings
    from tasks.schema import read_ratings as read_raw

    try:
        raw, first = read_raw(uri)
        return validate_ratings(uri, raw, first, rating_min=-np.inf, rating_max=np.inf, max_timestamp=None)
    except DataValidationError as err:
        err.problems = relocate(uri, err.problems)
        raise


def temporal_split(user_codes: np.ndarray, timestamps: np.ndarray, cfg: TrainConfig) -> Split:
    """Per user, the last ``holdout_fraction`` of ratings by time form the holdout."""
    rng = np.random.default_rng(cfg.seed)
    order = np.lexsort((timestamps, user_codes))
    users = user_codes[order]
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


CANONICAL_INT = r"-?(?:0|[1-9][0-9]{0,17})"  # what int64 -> str -> int64 gives back unchanged


def encode_ids(column: pd.Series) -> tuple[np.ndarray, np.ndarray, str]:
    """Dense codes 0..n-1, the raw ids (as strings) they stand for, and their kind.

    The kind is ``"int"`` when every id is a canonical integer (``50``, ``-3``; not
    ``"007"`` or ``"5.0"``), whether the column holds integers (Parquet, in-process) or
    their text (CSV, TSV, a snapshot's string dictionary): ``recommend`` then returns
    integers. Integer ids are sorted numerically, so a file and its Parquet copy give
    the same model. Only the distinct values are parsed: converting 25M values to
    strings costs about a minute at MovieLens-25M scale.
    """
    try:
        codes, uniques = pd.factorize(column, sort=True)
    except TypeError:  # mixed types: compare as strings
        codes, uniques = pd.factorize(column.astype(str), sort=True)
    values = pd.Series(np.asarray(uniques))
    if pd.api.types.is_integer_dtype(values.dtype):
        return codes.astype(np.int64), values.to_numpy().astype(str), "int"
    text = values.astype(str)
    if len(text) and text.str.fullmatch(CANONICAL_INT).all():
        numbers = text.astype(np.int64).to_numpy()
        order = np.argsort(numbers, kind="stable")
        if len(np.unique(numbers)) == len(numbers):  # e.g. 1 and "1" in one object column: strings
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))
            return rank[codes].astype(np.int64), numbers[order].astype(str), "int"
    ids = text.to_numpy().astype(str)
    if len(np.unique(ids)) != len(ids):  # e.g. 1 and "1" in one object column
        codes, uniques = pd.factorize(column.astype(str), sort=True)
        ids = np.asarray(uniques).astype(str)
    return codes.astype(np.int64), ids, "str"


def csr(users: np.ndarray, items: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((items, users))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))])
    return indptr, items[order]


@dataclass
class Schedule:
    """One Gibbs run of the rating head: sweeps, draws not averaged, every thin-th draw kept."""

    sweeps: int
    burn_in: int
    thin: int


def schedules(cfg: TrainConfig, n_ratings: int) -> tuple[Schedule, Schedule | None]:
    """The estimate's and the refit's schedules (``None``: no refit), both shrunk in
    proportion when ``n_ratings * (sweeps + refit_sweeps)`` exceeds ``max_rating_sweeps``:
    a sweep costs time linear in the ratings, and the night has a fixed budget."""
    total = cfg.sweeps + cfg.refit_sweeps
    shrink = min(1.0, cfg.max_rating_sweeps / max(1, n_ratings * total))

    def one(sweeps: int, burn_in: int) -> Schedule:
        sweeps = max(2, round(sweeps * shrink))
        burn_in = min(round(burn_in * shrink), sweeps // 2)
        return Schedule(sweeps, burn_in, max(1, min(cfg.thin, sweeps - burn_in)))

    return one(cfg.sweeps, cfg.burn_in), one(cfg.refit_sweeps, cfg.refit_burn_in) if cfg.refit_sweeps else None


@dataclass
class Fitted:
    """Both heads fitted on one set of ratings, and how."""

    model: MF
    history: list[dict]  # the rating head's, every 10 sweeps
    ranking: dict  # the ranking head's choices, size and seconds
    rating: dict  # the rating head's schedule, size, wall and CPU seconds
    chain: Chain  # where the rating head's Gibbs chain ended: a refit starts from it


def fit(u: np.ndarray, i: np.ndarray, r: np.ndarray, val: tuple, n_users: int, n_items: int,
        cfg: TrainConfig, rating_range: tuple[float, float] = (0.5, 5.0), *, schedule: Schedule | None = None,
        init: Chain | None = None, ranking_choice: dict | None = None, seed_offset: int = 0) -> Fitted:
    """Both heads on internal indexes.

    The rating head reports its RMSE on ``val`` (when not empty) and never fits
    it; the ranking head sees every training pair, ``val`` included (their ratings
    only as the weights of its rating-weighted EASE^R input). ``schedule``: the Gibbs run (default: ``cfg``'s
    estimate schedule, unshrunk); ``init``: a chain to start from; ``ranking_choice``:
    an earlier ranking head's EASE^R choices to reuse (see :func:`fit_ranking_head`);
    ``seed_offset``: a refit draws its own random numbers, not the estimate's again.
    """
    sched = schedule or schedules(dataclasses.replace(cfg, refit_sweeps=0, max_rating_sweeps=float("inf")), 1)[0]
    chain: list[Chain] = []
    t0, c0 = time.perf_counter(), time.process_time()
    params, history = fit_bayes(u, i, r, n_users, n_items, factors=cfg.factors, sweeps=sched.sweeps,
                                burn_in=sched.burn_in, thin=sched.thin, seed=cfg.seed + seed_offset,
                                keep_rank=cfg.keep_rank or None, noise_prior=cfg.noise_prior,
                                val=val if len(val[2]) else None, rating_range=rating_range, init=init, chain=chain)
    rating_info = {"factors": int(params["p"].shape[1]), **dataclasses.asdict(sched), "warm_start": init is not None,
                   "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
    rank_p = rank_q = None
    info: dict = {"factors": 0}
    if cfg.rank_factors:
        all_u, all_i = np.concatenate([u, val[0]]), np.concatenate([i, val[1]])
        rank_p, rank_q, info = fit_ranking_head(all_u, all_i, n_users, n_items, factors=cfg.rank_factors,
                                                ease_rank=cfg.ease_rank, ease_max_items=cfg.ease_max_items,
                                                popularity_damping=cfg.popularity_damping, top_k=cfg.top_k,
                                                seed=cfg.seed, choice=ranking_choice,
                                                r=np.concatenate([r, val[2]]) if cfg.ease_rank and
                                                n_items <= cfg.ease_max_items else None)  # PureSVD: no copy
    model = MF(n_users, n_items, k=params["p"].shape[1], rank_k=info["factors"])
    with torch.no_grad():
        model.bias.copy_(torch.from_numpy(params["mu"]))
        model.user.weight.copy_(torch.from_numpy(params["p"]))
        model.item.weight.copy_(torch.from_numpy(params["q"]))
        model.user_bias.weight.copy_(torch.from_numpy(params["bu"])[:, None])
        model.item_bias.weight.copy_(torch.from_numpy(params["bi"])[:, None])
        if rank_p is not None and rank_q is not None:
            model.rank_user.weight.copy_(rank_p)
            model.rank_item.weight.copy_(rank_q)
    return Fitted(model.eval(), history, info, rating_info, chain[0])


def evaluate(rec: Recommender, u: np.ndarray, i: np.ndarray, r: np.ndarray,
             rel: tuple[np.ndarray, np.ndarray], cfg: TrainConfig) -> dict[str, float]:
    """Rating and ranking metrics of a recommender on holdout rows (internal indexes)."""
    pred = rec.predict_index(torch.from_numpy(u), torch.from_numpy(i))
    users = np.arange(len(rel[0]) - 1)
    items, _ = rec.recommend(rec.user_ids[users], cfg.top_k)
    recs = rec.item_index_of(items.ravel()).reshape(items.shape)
    return {"rmse": M.rmse(pred, r), "mae": M.mae(pred, r),
            **M.ranking_metrics(recs, rel[0], rel[1], rec.model.n_item, cfg.top_k)}


def bias_baseline(u: np.ndarray, i: np.ndarray, r: np.ndarray, n_users: int, n_items: int,
                  lam: float = 10.0, rounds: int = 10) -> tuple[float, np.ndarray, np.ndarray]:
    """User + item biases by a few rounds of regularised alternating means."""
    mu = float(r.mean())
    bu, bi = np.zeros(n_users), np.zeros(n_items)
    for _ in range(rounds):
        bi = np.bincount(i, r - mu - bu[u], n_items) / (np.bincount(i, minlength=n_items) + lam)
        bu = np.bincount(u, r - mu - bi[i], n_users) / (np.bincount(u, minlength=n_users) + lam)
    return mu, bu, bi


def surprise_svd(u: np.ndarray, i: np.ndarray, r: np.ndarray, n_users: int, n_items: int,
                 rating_range: tuple[float, float], seed: int = 0) -> tuple[MF, float, float]:
    """scikit-surprise's ``SVD()`` with its defaults, as an :class:`MF` on our indexes,
    and the wall and CPU seconds ``SVD.fit`` took (data conversion excluded).

    Its fitted biases and factors are copied into the shipped model class (same
    parametrisation), so predictions and full-catalogue rankings are computed
    vectorised by the same code as the candidate's. Users or items absent from
    the training data keep zero factors and biases, as surprise treats them.
    """
    from surprise import SVD, Dataset, Reader

    frame = pd.DataFrame({"u": u, "i": i, "r": r})
    trainset = Dataset.load_from_df(frame, Reader(rating_scale=rating_range)).build_full_trainset()
    algo = SVD(random_state=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    algo.fit(trainset)
    fit_seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    users = np.array([trainset.to_raw_uid(x) for x in range(trainset.n_users)], dtype=np.int64)
    items = np.array([trainset.to_raw_iid(x) for x in range(trainset.n_items)], dtype=np.int64)
    model = MF(n_users, n_items, k=algo.n_factors)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.bias.fill_(trainset.global_mean)
        model.user.weight[users] = torch.from_numpy(algo.pu).float()
        model.item.weight[items] = torch.from_numpy(algo.qi).float()
        model.user_bias.weight[users, 0] = torch.from_numpy(algo.bu).float()
        model.item_bias.weight[items, 0] = torch.from_numpy(algo.bi).float()
    return model.eval(), fit_seconds, cpu_seconds


def _binary_lambda(ranking: dict) -> float | None:
    """The EASE^R ``lambda`` the ranking head validated on the binary input: the EASE^R baseline's."""
    ease = ranking.get("ease", {})
    return ease.get("binary_lambda", ease.get("lambda"))


def baselines(train_u, train_i, train_r, hold_u, hold_i, hold_r, seen, rel, user_ids, item_ids,
              rating_range, cfg: TrainConfig, ease_lambda: float | None = None) -> dict[str, dict]:
    """Global mean, biases, most popular, EASE^R and surprise's SVD on the same split.

    EASE^R uses ``ease_lambda`` (the ranking head's validation choice) when given,
    else tunes it on a validation split of the training pairs."""
    n_users, n_items = len(user_ids), len(item_ids)
    lo, hi = rating_range
    mu = float(train_r.mean())
    out: dict[str, Any] = {"global_mean": {"rmse": M.rmse(np.full(len(hold_r), mu), hold_r),
                           "mae": M.mae(np.full(len(hold_r), mu), hold_r)}}
    mu, bu, bi = bias_baseline(train_u, train_i, train_r, n_users, n_items)
    pred = np.clip(mu + bu[hold_u] + bi[hold_i], lo, hi)
    out["bias"] = {"rmse": M.rmse(pred, hold_r), "mae": M.mae(pred, hold_r)}
    pop = M.popularity_recs(train_i, n_items, seen[0], seen[1], cfg.top_k)
    out["popularity"] = M.ranking_metrics(pop, rel[0], rel[1], n_items, cfg.top_k)
    if n_items > cfg.ease_max_items:
        out["ease"] = {"skipped": f"{n_items} items > ease_max_items {cfg.ease_max_items}"}
    elif ease_lambda is None and not IM.validation_split(train_u, seed=cfg.seed).any():
        out["ease"] = {"skipped": "no user has 5+ training pairs to choose lambda on"}
    else:
        t0 = time.perf_counter()
        if ease_lambda is None:
            ease_lambda, _ = IM.tune_ease(train_u, train_i, n_users, n_items, cfg.top_k, cfg.seed)
        x = IM.binary(train_u, train_i, n_users, n_items)
        recs = IM.top_n(x, IM.ease(x, ease_lambda), cfg.top_k)
        out["ease"] = {**M.ranking_metrics(recs, rel[0], rel[1], n_items, cfg.top_k), "lambda": ease_lambda,
                       "fit_seconds": time.perf_counter() - t0}
    if len(train_r) > cfg.svd_baseline_max_ratings:
        out["svd"] = {"skipped": f"{len(train_r)} training ratings > svd_baseline_max_ratings "
                                 f"{cfg.svd_baseline_max_ratings}"}
        log.info("surprise SVD baseline skipped: %s", out["svd"]["skipped"])
    else:
        svd, fit_seconds, _ = surprise_svd(train_u, train_i, train_r, n_users, n_items, rating_range, cfg.seed)
        rec = Recommender(svd, user_ids, item_ids, seen_indptr=seen[0], seen_indices=seen[1],
                          rating_range=rating_range)
        out["svd"] = {**evaluate(rec, hold_u, hold_i, hold_r, rel, cfg), "fit_seconds": fit_seconds}
    return out


def train(ratings_uri: str, out: str, cfg: TrainConfig, champion: str | None = None,
          ds: str | None = None, model_version: str | None = None) -> dict:
    set_threads()
    t_start = time.perf_counter()
    refuse_protected(out, model_version, "train over")  # before any work: a refusal costs nothing
    # -- data ---------------------------------------------------------------
    df = read_ratings(ratings_uri)
    if df.empty:
        raise ValueError(f"{ratings_uri}: no ratings to train on")
    uu, user_ids, user_kind = encode_ids(df[USER_ID])
    ii, item_ids, item_kind = encode_ids(df[ITEM_ID])
    kinds = {"user": user_kind, "item": item_kind}
    n_users, n_items = len(user_ids), len(item_ids)
    ts = df[TIMESTAMP].to_numpy()
    split = temporal_split(uu, ts, cfg)
    rr = np.array(df[RATING].to_numpy(np.float32))
    n_ratings = len(df)
    max_timestamp = int(ts.max())
    ts_ho = ts[split.holdout]  # to find the holdout ratings the live model never saw
    del df, ts  # the raw id and timestamp columns (~600 MB at 25M ratings) are not needed past here
    storage.release_freed_memory()  # and Arrow's pool would keep the Parquet read's buffers
    log.info("%d ratings, %d users, %d items; train %d, val %d, holdout %d", n_ratings, n_users, n_items,
             len(split.train), len(split.val), len(split.holdout))

    # -- fit both heads without the holdout: the estimate ----------------------
    tr, va, ho = split.train, split.val, split.holdout
    rating_range = (float(rr.min()), float(rr.max()))
    est_schedule, refit_schedule = schedules(cfg, n_ratings)
    t_fit = time.perf_counter()
    estimate = fit(uu[tr], ii[tr], rr[tr], (uu[va], ii[va], rr[va]), n_users, n_items, cfg, rating_range,
                   schedule=est_schedule)
    estimate_seconds = time.perf_counter() - t_fit

    # -- evaluate the estimate on the holdout: candidate, baselines, champion --
    fitted = np.concatenate([tr, va])
    seen_train = csr(uu[fitted], ii[fitted], n_users)
    rel = csr(uu[ho], ii[ho], n_users)
    rec = Recommender(estimate.model, user_ids, item_ids, seen_indptr=seen_train[0], seen_indices=seen_train[1],
                      rating_range=rating_range, meta={"id_kinds": kinds})
    metrics: dict[str, Any] = {"candidate": evaluate(rec, uu[ho], ii[ho], rr[ho], rel, cfg) if len(ho) else {}}
    if len(ho):
        metrics["baselines"] = baselines(uu[fitted], ii[fitted], rr[fitted], uu[ho], ii[ho], rr[ho], seen_train,
                                         rel, user_ids, item_ids, rating_range, cfg,
                                         ease_lambda=_binary_lambda(estimate.ranking))
    if champion and len(ho):
        metrics["champion"] = champion_metrics(champion, rec, uu, ii, rr, fitted, ho, ts_ho, cfg)
    metrics["holdout"] = {"ratings": int(len(ho)), "users": int((np.diff(rel[0]) > 0).sum())}
    del rec, seen_train, rel
    log.info("candidate %s", {k: round(v, 4) for k, v in metrics["candidate"].items()})

    # -- refit on every rating: the artifact that is scored and served --------
    if refit_schedule is not None and len(ho):
        t_refit = time.perf_counter()
        none = np.empty(0, dtype=np.int64)
        shipped = fit(uu, ii, rr, (none, none, rr[:0]), n_users, n_items, cfg, rating_range,
                      schedule=refit_schedule, init=estimate.chain, ranking_choice=estimate.ranking.get("ease"),
                      seed_offset=1)
        refit_seconds = time.perf_counter() - t_refit
    else:  # no refit configured, or no holdout: the estimate's model saw every rating there is to see
        shipped, refit_seconds = estimate, 0.0
    saw_all = shipped is not estimate or not len(ho)  # no holdout: the estimate saw every rating
    metrics["fits"] = {
        "estimate": {"ratings": int(len(fitted)), "describes": "candidate, baselines, champion, history, "
                     "rating_head, ranking_head: fitted without the holdout, scored on it",
                     "seconds": estimate_seconds, "rating_head": estimate.rating},
        "shipped": {"ratings": int(n_ratings), "describes": "model.pt: fitted on every rating of the snapshot"
                    + (", warm-started from the estimate's chain" if shipped is not estimate
                       else " (the estimate itself: no holdout, nothing to refit)" if saw_all
                       else " minus the holdout (refit_sweeps 0: the estimate itself)"),
                    "seconds": refit_seconds, "rating_head": shipped.rating, "ranking_head": shipped.ranking},
    }
    metrics["fit_seconds"] = estimate_seconds + refit_seconds
    metrics["total_seconds"] = time.perf_counter() - t_start
    metrics["history"] = estimate.history
    metrics["ranking_head"] = estimate.ranking
    metrics["rating_head"] = estimate.rating

    # -- save: weights, id maps, every snapshot pair as "seen" ---------------
    seen_all = csr(uu, ii, n_users)
    meta = {
        "model_version": model_version, "ds": ds, "ratings": ratings_uri,
        "user_ids": user_ids.tolist(), "item_ids": item_ids.tolist(),
        "id_kinds": kinds,
        "rating_range": list(rating_range),
        "config": dataclasses.asdict(cfg), "numpy": np.__version__, "pandas": pd.__version__,
        "trained_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "n_ratings": int(n_ratings),
        # the weights saw every rating up to this time: a later run compares this model only on
        # holdout ratings newer than it (champion_metrics)
        "fitted_on": "every rating" if saw_all else "all but the holdout",
        "max_timestamp": max_timestamp if saw_all else None,
    }
    from tasks.train.report import render

    refuse_protected(out, model_version, "write")  # the live pointer may have moved while we trained
    save(out, shipped.model, meta, *seen_all, extra={
        METRICS_FILE: json.dumps(metrics, indent=2, sort_keys=True, default=str).encode(),
        REPORT_FILE: render(model_version, metrics).encode()})
    return metrics


def champion_metrics(uri: str, rec: Recommender, uu: np.ndarray, ii: np.ndarray, rr: np.ndarray,
                     fitted: np.ndarray, ho: np.ndarray, ts_ho: np.ndarray, cfg: TrainConfig) -> dict:
    """The live model against the candidate estimate, on the same holdout rows.

    A live model fitted on every rating of its snapshot has seen the older part of
    today's holdout (the latest ratings of users who have not rated since): scored
    there it would look better than it is. So it is scored only on holdout ratings
    newer than the newest it was fitted on (``meta.json`` → ``max_timestamp``), and
    ``candidate`` holds the candidate's figures on exactly those rows: the gate
    compares the two. An artifact fitted without its holdout (no ``max_timestamp``)
    is scored on the whole holdout, as before.
    """
    champ = load(uri)
    newest = champ.meta.get("max_timestamp")
    if newest is not None:
        rows = ho[ts_ho > newest]
        if not len(rows):
            return {"uri": uri, "skipped": f"no holdout rating is newer than the live model's data "
                                           f"(max_timestamp {newest}): nothing it has not seen to compare on"}
    else:
        rows = ho
    n_users = len(rec.user_ids)
    rel = csr(uu[rows], ii[rows], n_users)
    champ.set_seen_from_ratings(rec.user_ids[uu[fitted]], rec.item_ids[ii[fitted]])
    pred = champ.predict(rec.user_ids[uu[rows]], rec.item_ids[ii[rows]])
    items, _ = champ.recommend(rec.user_ids, cfg.top_k)
    # the champion's raw ids onto this snapshot's indexes (the candidate shares them)
    recs = rec.item_index_of(items.ravel()).reshape(items.shape)
    return {"uri": uri, "rmse": M.rmse(pred, rr[rows]), "mae": M.mae(pred, rr[rows]),
            **M.ranking_metrics(recs, rel[0], rel[1], rec.model.n_item, cfg.top_k),
            "holdout_ratings": int(len(rows)), "newer_than": newest,
            "candidate": evaluate(rec, uu[rows], ii[rows], rr[rows], rel, cfg)}
