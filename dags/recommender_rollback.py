"""
### Roll the recommender back

Manual only: **Trigger** this DAG in the UI (or `POST /api/v2/dags/recommender_rollback/dagRuns`)
to serve another complete version: by default the rollback target that `models/_live.json` names
(the version the live one replaced), or the `target` you type. `reason` is required and goes into
the alert and the versions page with the user who triggered the run.

`check` → `roll` → `retain` → `versions` → `alert`:

* `check` refuses, before anything changes, a target whose model artifact is incomplete (no
  completion manifest), whose rows have no completion marker, or whose rows have expired or will
  within `min_hours`; or a target that is already live. With `RECSYS_COMPUTE=ecs` it pins the
  jobs task-definition revision the two stages below run, as a pipeline run's `plan` does.
* `roll` re-points serving with the same roll code as `python -m recsys.rollback` and the
  pipeline's deploy (`RECSYS_DEPLOY` = `ecs` | `docker` | `local`: a new task-definition revision
  with `MODEL_VERSION` = the target and the service's current image, waited for, verified and
  smoke-tested; a container; the local app), then moves `models/_live.json` (the version it
  replaced becomes the new rollback target, so a second rollback undoes the first) and records
  the change in `runs/live/`.
* `retain` extends the new live and previous versions' rows (DynamoDB TTL), as every night does.
* `versions` regenerates the versions page; `alert` sends who, why, from and to to the SNS topic.

See docs/operations.md.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from recsys.release import require

# `make bundle` stamps its release id here and into recsys/_bundle.json: before anything else of
# recsys loads, this file refuses to import beside another release's package (an upgrade whose
# plugins are not live yet), naming both releases in the UI's import errors.
RELEASE = "source"
require(RELEASE, __file__)

from recsys import stages  # noqa: E402
from recsys.compute import compute_task  # noqa: E402
from recsys.notifiers import failure_notifier  # noqa: E402
from recsys.settings import Settings  # noqa: E402

settings = Settings()


@dag(
    dag_id="recommender_rollback",
    schedule=None,  # an operator's action, never a schedule
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["recsys", "ops", "rollback"],
    default_args={
        "owner": "recsys",
        "retries": 2,
        "retry_delay": timedelta(seconds=settings.retry_delay_seconds),
        "on_failure_callback": failure_notifier(settings),
    },
    params={
        "target": Param("", type="string", pattern=r"^(|v[0-9A-Za-z-]+)$",
                        description="Version to serve; empty: the rollback target named in models/_live.json "
                                    "(the version the live one replaced)"),
        "reason": Param(type="string", minLength=3,
                        description="Why: it goes into the alert, the live history and the versions page"),
        "min_hours": Param(24, type="number", minimum=0,
                           description="Refuse a target whose rows expire within this many hours"),
    },
)
def recommender_rollback():
    @task(multiple_outputs=False)
    def check(params=None, dag_run=None) -> dict:
        """The target and who/why, or a failure saying why it cannot serve (nothing changed)."""
        from recsys import rollback
        from recsys.compat import fail

        try:
            return dict(rollback.check(settings, params["target"] or None, float(params["min_hours"]),
                                       params["reason"], rollback.triggered_by(dag_run)))
        except rollback.RollbackRefused as err:
            raise fail(f"rollback refused: {err}") from None

    @task(multiple_outputs=False)
    def roll(plan: dict, params=None) -> dict:
        from recsys import rollback

        return dict(rollback.apply(settings, plan, float(params["min_hours"])))  # type: ignore[arg-type]

    # the stages run the jobs revision `check` pinned (RECSYS_COMPUTE=ecs), as a run's stages run plan's
    retain = compute_task("retain", stages.retain(settings, '{{ ti.xcom_pull(task_ids="roll")["retain"] }}'),
                          settings, plan_task="check")
    versions = compute_task("versions", stages.versions(settings), settings, plan_task="check")

    @task(multiple_outputs=False)
    def alert(plan: dict, rolled: dict) -> dict:
        """Everyone on the alert topic hears of it: who, why, from and to."""
        from recsys import rollback

        return rollback.alert(settings, plan, rolled)  # type: ignore[arg-type]

    plan = check()
    rolled = roll(plan)
    rolled >> retain >> versions >> alert(plan, rolled)


recommender_rollback()
