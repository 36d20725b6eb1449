"""
### Nightly recommender pipeline

Retrains the biased matrix-factorisation recommender on the run date's ratings,
gates it against baselines and the live model, precomputes top-N per user into
DynamoDB and rolls the serving service.

`plan` → `snapshot` → `train` → `gate` → `score` (one task per user shard) →
`publish` (verify + completion marker) → `latest_only` → `deploy_enabled` →
`build_image` → `deploy` → `record_live` → `retain` → `versions` → `summary`; `retain` and
`versions` run whatever happened (`retain` keeps the live and previous versions' rows from
expiring; `versions` regenerates the versions page, `s3://<bucket>/versions/index.html`).

**Every run writes its own model version**: `v<YYYYMMDD>T<HHMMSS><type>-<hash>` from the
run's logical date (its run-after time when it has none), one letter of its run type
(`s` scheduled, `m` manual, `b` backfill, `a` asset-triggered) and 6 hex digits of
SHA-256 of its run id. A retry or a cleared re-run of the same run rewrites the same
version; two runs never share one. The `plan` task's return value (XCom tab) shows it.
A run whose version is live (or the rollback target) is refused: the live version's
artifacts and rows are immutable.

* **Deploys**: manual runs and the latest scheduled run, unless the `deploy` Param is
  false. **Backfills never deploy**, whatever their dates; old scheduled runs stop at
  `latest_only`. `summary` and `retain` run either way.
* Container stages run on `RECSYS_COMPUTE` = `local` | `docker` | `ecs`, same command line.
  A stage that exits 3 (bad input, a refused write) fails at once, without retries.
* Heavy stages of all runs run one at a time (`RECSYS_STAGE_CONCURRENCY`), so a backfill
  trains one date after another.
* A run unfinished `RECSYS_RUN_DEADLINE_MINUTES` after it started is stopped and alerts once,
  naming the task it was stuck in.
* A failed run sends one alert to the SNS topic `RECSYS_ALERT_TOPIC`, with the stage's own
  reason, its last log lines, the run's version and the live version.

Roll back from the UI with the `recommender_rollback` DAG. See docs/configuration.md for settings
and Params, docs/pipeline.md for backfills, docs/operations.md for rollback and the versions page.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.latest_only import LatestOnlyOperator
from airflow.sdk import Asset, Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from recsys.release import require

# `make bundle` stamps its release id here and into recsys/_bundle.json: before anything else of
# recsys loads, this file refuses to import beside another release's package (an upgrade whose
# plugins are not live yet), naming both releases in the UI's import errors.
RELEASE = "source"
require(RELEASE, __file__)

from recsys import stages  # noqa: E402
from recsys.compat import ASSET_OUTLETS, outlets  # noqa: E402
from recsys.compute import compute_mapped, compute_task  # noqa: E402
from recsys.layout import DEFAULT_TOP_N  # noqa: E402
from recsys.notifiers import deadline_notifier, failure_notifier  # noqa: E402
from recsys.operators.image import ServingImageOperator  # noqa: E402
from recsys.settings import Settings  # noqa: E402
from recsys.stages import PARAMS, PLAN  # noqa: E402

settings = Settings()

# Lineage (the UI's Assets view): what each run produced. Identified by name, the
# location in ``extra``: any URI with a scheme (s3://, even dynamodb://) makes Airflow load
# every provider's URI normaliser at parse time, and the amazon one imports boto3.
SNAPSHOT = Asset(name="recsys_snapshot", extra={"location": settings.s3("datasets")})
MODEL = Asset(name="recsys_model", extra={"location": settings.s3("models")})
RECOMMENDATIONS = Asset(name="recsys_recommendations",
                        extra={"location": f"dynamodb://{settings.region}/{settings.table}"})
SERVING = Asset(name="recsys_serving", extra={"location": (f"ecs://{settings.ecs_cluster}/{settings.ecs_service}"
                                                           if settings.deploy == "ecs" else
                                                           settings.smoke_url or
                                                           f"http://{settings.serve_host}:{settings.serve_port}")})
HEAVY = {"max_active_tis_per_dag": settings.stage_concurrency}


@dag(
    dag_id="recommender_pipeline",
    # Data intervals (not Airflow 3's default CronTriggerTimetable): LatestOnlyOperator
    # needs them to tell the latest run from a backfill, which must never deploy.
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # RECSYS_RUN_DEADLINE_MINUTES: a hung run is stopped and alerts once, naming the task it hung in
    # (dagrun_timeout and a DAG-level callback: Airflow 3.0 has no Deadline Alerts)
    dagrun_timeout=timedelta(minutes=settings.run_deadline_minutes) if settings.run_deadline_minutes else None,
    on_failure_callback=deadline_notifier(settings),
    doc_md=__doc__,
    tags=["recsys", "ml", "nightly"],
    default_args={
        "owner": "recsys",
        "retries": 2,
        "retry_delay": timedelta(seconds=settings.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "on_failure_callback": failure_notifier(settings),
    },
    params={
        "top_n": Param(DEFAULT_TOP_N, type="integer", minimum=1, maximum=100,
                       description="Items stored per user"),
        "factors": Param(8, type="integer", minimum=1, maximum=512,
                         description="Latent factors (k) of each draw of the rating head"),
        "sweeps": Param(120, type="integer", minimum=2, maximum=5000,
                        description="Gibbs sweeps of the rating head's estimate (the first 20 are burn-in); "
                                    "every other training knob is a `python -m tasks.train --help` flag"),
        "shards": Param(2, type="integer", minimum=1, maximum=1000,
                        description="User shards scored in parallel (one score task each)"),
        "tolerance": Param(0.01, type="number", minimum=0, maximum=1,
                           description="How much worse than the live model a candidate may be (relative)"),
        "force_promote": Param(False, type="boolean", description="Promote even if the gate says no"),
        "deploy": Param(True, type="boolean",
                        description="Roll the serving service (manual runs and the latest scheduled run; "
                                    "backfills never deploy)"),
    },
)
def recommender_pipeline():
    @task(multiple_outputs=False)
    def plan(params=None, ds=None, dag_run=None, dag=None) -> dict:
        """Every URI and value of this run: data keyed by its date, model and rows by its version."""
        from recsys import pipeline

        return dict(pipeline.plan_run(settings, params, ds, dag_run, dag.params))

    snapshot = compute_task("snapshot", stages.snapshot(PLAN), settings, outlets=outlets(SNAPSHOT), **HEAVY)
    train = compute_task("train", stages.train(PLAN, PARAMS), settings, outlets=outlets(MODEL), **HEAVY)

    @task(multiple_outputs=False)
    def gate(p: dict, params=None) -> dict:
        """Stop a model that is worse than the baselines or the live model."""
        from recsys import pipeline

        return pipeline.check_gate(settings, p, float(params["tolerance"]), bool(params["force_promote"]))

    @task(multiple_outputs=False)
    def shard_commands(p: dict) -> list:
        from recsys import compute

        return compute.mapped_values(stages.score(p), settings)

    publish = compute_task("publish", stages.publish(PLAN), settings,
                           outlets=outlets(RECOMMENDATIONS), **HEAVY)

    # Old scheduled runs stop here (a manual run passes); deploy_enabled then stops backfills
    # (LatestOnlyOperator only compares time windows) and deploy=false.
    latest_only = LatestOnlyOperator(task_id="latest_only")

    # ignore_downstream_trigger_rules=False: skip the deploy path only; summary (none_failed)
    # and retain (all_done) still run.
    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def deploy_enabled(params=None, dag_run=None) -> bool:
        import logging

        from recsys import pipeline

        ok, why = pipeline.should_deploy(dag_run.run_type, bool(params["deploy"]))
        logging.getLogger(__name__).info("deploy: %s (%s)", "yes" if ok else "no", why)
        return ok

    # The serving image in ECR, built and pushed unless its tag is there already. ECS and
    # container deploys fail here when it is missing and cannot be built (a managed worker has
    # no engine and no sources): never a green run that did not deploy. The local app runs
    # from source, so there a missing engine is only logged (and None returned).
    image = ServingImageOperator(task_id="build_image", repository=settings.ecr_repository,
                                 require=settings.deploy in ("ecs", "docker"),
                                 aws_conn_id=settings.aws_conn_id, region_name=settings.region)

    if settings.deploy == "ecs":
        from recsys.operators.ecs_roll import EcsRollServiceOperator

        # register a revision, update the service, wait (in the triggerer when [operators]
        # default_deferrable), verify ECS's deployment record, roll back where ECS has not
        deployed = EcsRollServiceOperator(
            task_id="deploy", cluster=settings.ecs_cluster,
            service=settings.ecs_service, container_name=settings.ecs_container,
            image='{{ ti.xcom_pull(task_ids="build_image") }}', model_version=PLAN["model_version"],
            table=PLAN["table"], smoke_url=settings.smoke_url or None,
            aws_conn_id=settings.aws_conn_id, region_name=settings.region)
    else:
        @task(task_id="deploy", multiple_outputs=False)
        def deploy_here(p: dict, ti=None) -> dict:
            """Roll the service onto the new version: a container, or the app on this machine."""
            from recsys import pipeline

            return pipeline.deploy_here(settings, p, ti.xcom_pull(task_ids="build_image"))

    @task(multiple_outputs=False, outlets=outlets(SERVING))
    def record_live(p: dict, deployed: dict, outlet_events=None) -> dict:
        from recsys import pipeline

        pointer = pipeline.record_live(settings, p, deployed, pendulum.now("UTC").isoformat())
        if outlet_events is not None and ASSET_OUTLETS:
            outlet_events[SERVING].extra = {"model_version": p["model_version"],
                                            "revision": deployed.get("task_definition") or deployed.get("url")}
        return dict(pointer)

    @task(trigger_rule="none_failed", multiple_outputs=False)
    def summary(p: dict, verdict: dict) -> dict:
        """One record per run: what was trained, how good, how many users, what is live."""
        from recsys import notifiers, pipeline

        out = pipeline.summarize(settings, p, verdict)
        notifiers.notify_success(settings, out)
        return out

    p = plan()
    verdict = gate(p)
    commands = shard_commands(p)
    scores = compute_mapped("score", commands, settings, max_active_tis_per_dag=settings.score_concurrency)
    enabled = deploy_enabled()
    p >> snapshot >> train >> verdict >> commands >> scores >> publish >> latest_only >> enabled >> image
    if settings.deploy != "ecs":
        deployed = deploy_here(p)
    # the same graph for every RECSYS_DEPLOY: deploy after the build (after the gates), on plan's values
    p >> deployed
    image >> deployed
    live = record_live(p, deployed.output if hasattr(deployed, "task_id") else deployed)
    # Every night, whatever the gate said: the live and previous versions must not expire.
    retain = compute_task("retain", stages.retain(settings, PLAN["retain"]), settings, trigger_rule="all_done")
    # Every night too: the versions page (HTML with plots + JSON in S3) shows this night, a
    # rejected or failed one included; summary and the failure alert link it.
    versions = compute_task("versions", stages.versions(settings), settings, trigger_rule="all_done")
    done = summary(p, verdict)
    # summary is the leaf Airflow judges the run by: a failure anywhere (or in retain) fails
    # it and so the run; an all_done leaf would turn every failed run green.
    live >> retain >> versions >> done
    retain >> done  # versions runs all_done: retain's failure must reach summary directly
    live >> done


recommender_pipeline()
