"""Every stage's command line, built from the run's plan: the one place the Airflow side spells a
stage's flags.

Each function takes the run's :class:`~recsys.layout.RunPlan` (and the DAG's Params where a stage
takes one) and returns the argv that :mod:`recsys.compute` runs on the configured backend, with
the stage's settings appended (:data:`STAGE_FLAGS`, :func:`with_settings`). The DAG passes :data:`PLAN` and
:data:`PARAMS`, whose values are Jinja that Airflow renders when the task runs (only a key the
plan has, or a Param the DAG declares, renders: any other raises ``KeyError`` at parse time);
``shard_commands`` passes the plan itself. ``tests/test_stage_argv.py`` builds every argv with
concrete plans for every backend and every Param combination the DAG allows, and parses each with
the stage's own parser (``build_parser()`` of its ``__main__``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from recsys.layout import RunPlan
from recsys.settings import Settings

PARAM_NAMES = frozenset({"top_n", "factors", "sweeps", "shards", "tolerance", "force_promote", "deploy"})


class _Templated(Mapping[str, str]):
    """A read-only mapping whose values are Jinja reading ``keys`` at render time."""

    def __init__(self, keys: frozenset[str], template: str, what: str):
        self._keys, self._template, self._what = keys, template, what

    def __getitem__(self, key: str) -> str:
        if key not in self._keys:
            raise KeyError(f"{key!r} is not in {self._what} (it has {', '.join(sorted(self._keys))})")
        return self._template.replace("KEY", key)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._keys))

    def __len__(self) -> int:
        return len(self._keys)


# The plan task's XCom, one value at a time, as the templated fields of the stages read it.
PLAN = cast(RunPlan, _Templated(RunPlan.__required_keys__ | RunPlan.__optional_keys__,
                                '{{ ti.xcom_pull(task_ids="plan")["KEY"] }}', "the run plan (recsys.layout.RunPlan)"))
# The DAG's Params (the trigger form), rendered the same way.
PARAMS: Mapping[str, Any] = _Templated(PARAM_NAMES, "{{ params.KEY }}", "the DAG's Params")


# The settings a stage takes from the Airflow side, always as flags on its command line (never
# through the worker's environment, which ECS does not pass on): added by
# :func:`with_settings` (which recsys.compute calls for every backend), so local, Docker and ECS
# runs get the same argv. (module, subcommand) -> (flag, setting).
STAGE_FLAGS: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("tasks.train", ""): (("--threads", "threads"),),
    ("tasks.score", ""): (("--threads", "threads"), ("--min-ratings", "min_ratings"), ("--ttl-days", "ttl_days")),
    ("tasks.publish", "finalize"): (("--min-ratings", "min_ratings"), ("--ttl-days", "ttl_days")),
    ("tasks.publish", "retain"): (("--ttl-days", "ttl_days"),),
}


def with_settings(argv: Sequence[str], settings: Settings) -> list[str]:
    """``argv`` with the stage's settings (:data:`STAGE_FLAGS`) appended where it does not set them."""
    argv = list(argv)
    module = argv[2] if len(argv) > 2 and argv[1] == "-m" else ""
    sub = argv[3] if len(argv) > 3 and not argv[3].startswith("-") else ""
    flags = STAGE_FLAGS.get((module, sub)) or STAGE_FLAGS.get((module, ""), ())
    return argv + [x for flag, name in flags if flag not in argv for x in (flag, str(getattr(settings, name)))]


def snapshot(p: RunPlan) -> list[str]:
    """Validate the raw ratings and write the run date's snapshot (rejected input to quarantine)."""
    return ["python", "-m", "tasks.data", "snapshot", "--raw", p["raw"], "--items", p["items"], "--ds", p["ds"],
            "--out", p["snapshot"], "--quarantine", p["quarantine"]]


def train(p: RunPlan, params: Mapping[str, Any]) -> list[str]:
    """Train the run's version on its snapshot, scored against the live model (the champion)."""
    return ["python", "-m", "tasks.train", "--ratings", p["snapshot"], "--out", p["model"],
            "--champion", p["champion"], "--ds", p["ds"], "--model-version", p["model_version"],
            "--factors", str(params["factors"]), "--sweeps", str(params["sweeps"])]


def score(p: RunPlan) -> list[list[str]]:
    """One command per shard, each writing its users' rows to the table."""
    return [["python", "-m", "tasks.score", "--model", p["model"], "--ratings", p["snapshot"],
             "--model-version", p["model_version"], "--top-n", str(p["top_n"]), "--shard", f"{i}/{p['shards']}",
             "--table", p["table"]] for i in range(p["shards"])]


def publish(p: RunPlan) -> list[str]:
    """Check every shard and user, write the fallback list, then the completion marker."""
    return ["python", "-m", "tasks.publish", "finalize", "--model", p["model"], "--ratings", p["snapshot"],
            "--model-version", p["model_version"], "--top-n", str(p["top_n"]), "--shards", str(p["shards"]),
            "--table", p["table"]]


def retain(settings: Settings, versions: str) -> list[str]:
    """Keep ``versions`` (``"V=URI V=URI"``: the live one and the rollback target) from expiring."""
    return ["python", "-m", "tasks.publish", "retain", "--table", settings.table, versions]


def versions(settings: Settings) -> list[str]:
    """Regenerate the versions page (``s3://<bucket>/versions/``)."""
    return ["python", "-m", "tasks.publish", "versions", "--root", settings.s3(), "--table", settings.table]
