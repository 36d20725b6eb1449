"""``python -m recsys.rollback --reason WHY [--to VERSION]``: serve the previous (or a named) complete version.

Re-points serving the same way a run deploys: ``RECSYS_DEPLOY=ecs`` registers a
task-definition revision (the service's current image, ``MODEL_VERSION`` = the
target) and rolls the service with the DAG's own roll (:mod:`recsys.ecs_rollout`: wait,
verify ECS's deployment record, smoke test, automatic roll-back); ``docker`` runs the serving
container's current image with the target; ``local`` restarts the app on this machine and
smoke-tests it. Then
``models/_live.json`` points at the target, with the version it replaced as the
new rollback target (so a second rollback undoes the first), and ``runs/live/`` records the
change with who (the shell's user) and why, as the ``recommender_rollback`` DAG does. The DAG
also extends the target's rows' retention and redraws the versions page (stages this shell may
not have); the command prints how.

Refused, before anything changes: a version whose model artifact is incomplete
(no completion manifest), whose rows have no completion marker, or whose rows
have expired (or will within ``--min-hours``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
import time
from typing import Any, NotRequired, TypedDict

import pendulum

from recsys import layout, pipeline
from recsys.layout import ARTIFACT_MANIFEST, LivePointer, VersionRef
from recsys.settings import Settings

log = logging.getLogger("recsys.rollback")


class RollbackRefused(RuntimeError):
    """The target version cannot be served."""


def marker(settings: Settings, table: str, version: str) -> dict | None:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    client = AwsBaseHook(aws_conn_id=settings.aws_conn_id, region_name=settings.region, client_type="dynamodb").conn
    item = client.get_item(TableName=table, Key=layout.marker_key(version), ConsistentRead=True).get("Item")
    return item


def check_complete(settings: Settings, version: str, table: str, min_hours: float = 24.0,
                   now: float | None = None) -> dict:
    """The target's facts, or :class:`RollbackRefused` saying what is missing."""
    model_key = layout.model_key(version)
    if not pipeline.s3_hook(settings).check_for_key(f"{model_key}/{ARTIFACT_MANIFEST}", bucket_name=settings.bucket):
        raise RollbackRefused(f"version {version} is incomplete: "
                              f"s3://{settings.bucket}/{model_key}/{ARTIFACT_MANIFEST} "
                              "is missing (its train never finished)")
    item = marker(settings, table, version)
    if not item:
        raise RollbackRefused(f"version {version} has no completion marker in table {table}: its rows were never "
                              "published completely (or have expired and been deleted)")
    expires = int(item.get("expires_at", {}).get("N", "0"))
    now = time.time() if now is None else now
    if expires and expires < now + min_hours * 3600:
        raise RollbackRefused(f"version {version}'s rows expire at {pendulum.from_timestamp(expires).isoformat()} "
                              f"(within {min_hours:g} h): re-run a pipeline for a fresh version instead")
    return {"model_uri": settings.s3(model_key), "users": int(item.get("users", {}).get("N", "0")),
            "expires_at": expires}


def smoke_user(settings: Settings, version: str) -> str | None:
    """The first user of ``version``'s first score shard with one (the smoke test asks for it)."""
    prefix = f"{layout.model_key(version)}/{layout.SHARDS_DIR}/"
    keys = sorted(k for k in pipeline.s3_hook(settings).list_keys(bucket_name=settings.bucket, prefix=prefix) or []
                  if k.endswith(".json"))
    return pipeline.first_user(pipeline.shard_manifests(settings, keys))


def current_image(ecs, settings: Settings) -> str:
    """The serving image the service runs now (a rollback changes only ``MODEL_VERSION``)."""
    from recsys.deploy.ecs import container_image

    service = ecs.describe_services(cluster=settings.ecs_cluster, services=[settings.ecs_service])["services"][0]
    taskdef = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    try:
        return container_image(taskdef, settings.ecs_container)
    except ValueError as err:
        raise RollbackRefused(f"{err} (the service's {service['taskDefinition']})") from None


def rollback(settings: Settings, to: str | None = None, min_hours: float = 24.0, dry_run: bool = False) -> dict:
    live = pipeline.read_live(settings)
    if not live or not live.get("model_version"):
        raise RollbackRefused(f"nothing is live ({settings.s3(pipeline.LIVE_POINTER)} is missing): "
                              "nothing to roll back")
    previous: VersionRef | dict = live.get("previous") or {}
    target = to or previous.get("model_version")
    if not target:
        raise RollbackRefused(f"live version {live['model_version']} has no previous version; name one with --to")
    if target == live["model_version"]:
        raise RollbackRefused(f"{target} is already live")
    table = (previous.get("table") if target == previous.get("model_version") else None) or settings.table
    facts = check_complete(settings, target, table, min_hours)
    log.info("rolling back from %s to %s (%d users, rows expire %s)", live["model_version"], target, facts["users"],
             pendulum.from_timestamp(facts["expires_at"]).isoformat() if facts["expires_at"] else "never")
    if dry_run:
        return {"from": live["model_version"], "to": target, "table": table, "dry_run": True}
    from recsys import deploy as rollout

    if settings.deploy == "ecs":
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
        from airflow.providers.amazon.aws.hooks.ecs import EcsHook

        ecs = EcsHook(aws_conn_id=settings.aws_conn_id, region_name=settings.region).conn
        elbv2 = AwsBaseHook(aws_conn_id=settings.aws_conn_id, region_name=settings.region, client_type="elbv2").conn
        deployed = rollout.ecs.deploy_ecs(ecs, settings, current_image(ecs, settings), target, table=table, elbv2=elbv2)
    elif settings.deploy == "docker":
        deployed = rollout.container.deploy_container(settings, rollout.container.current_container_image(settings),
                                                      target, smoke_user(settings, target), table)
    else:
        deployed = rollout.local.deploy_local(settings, target, smoke_user(settings, target), table)
    pointer = layout.next_live_pointer(target, facts["model_uri"], None, table,
                                       {**deployed, "rollback_from": live["model_version"]}, live,
                                       pendulum.now("UTC").isoformat())
    pipeline.write_live(settings, pointer)
    return {"from": live["model_version"], "to": target, "table": table, "deployed": deployed}


# The rollback's plan (the DAG's ``check`` task, its XCom): what ``apply`` rolls to.
RollbackPlan = TypedDict("RollbackPlan", {"from": str, "to": str, "table": str, "reason": str, "by": str,
                                          "jobs_image": NotRequired[str], "jobs_task_definition": NotRequired[str]})


class Rolled(TypedDict):
    """What ``apply`` did: the version now live, the one it replaced, the history record, and the
    ``retain`` argument (:func:`recsys.layout.retain_arg`) for the rows that must not expire."""

    to: str
    previous: str | None
    history: str
    retain: str


def triggered_by(dag_run: Any) -> str:
    """Who triggered the run (``triggering_user_name`` from Airflow 3.1; before, only how)."""
    return getattr(dag_run, "triggering_user_name", None) or (
        f"unknown (triggered by {getattr(dag_run, 'triggered_by', None) or 'an unnamed user'})")


def check(settings: Settings, target: str | None, min_hours: float, reason: str, by: str,
          pin_jobs: bool = True) -> RollbackPlan:
    """The DAG's ``check`` task: the target and who/why, or :class:`RollbackRefused` (nothing
    changed). With ECS stages, the jobs revision the rollback's own stages run (as a run's ``plan``
    pins it)."""
    found = rollback(settings, target, min_hours, dry_run=True)
    plan: RollbackPlan = {"from": found["from"], "to": found["to"], "table": found["table"],
                          "reason": reason.strip(), "by": by}
    if pin_jobs:
        plan.update(pipeline.pin_jobs_image(settings))  # type: ignore[typeddict-item]
    return plan


def apply(settings: Settings, plan: RollbackPlan, min_hours: float) -> Rolled:
    """Roll to ``plan["to"]`` and record who and why in ``runs/live/``. Idempotent: a retry after
    the pointer moved records the history without rolling again."""
    live: LivePointer | dict = pipeline.read_live(settings) or {}
    done = (live.get("deployed") or {}).get("rollback_from") == plan["from"]
    if not (live.get("model_version") == plan["to"] and done):
        rollback(settings, plan["to"], min_hours)
    pointer = pipeline.read_live(settings)
    if pointer is None:  # rollback() has just written it
        raise RuntimeError(f"{settings.s3(pipeline.LIVE_POINTER)} vanished after the rollback")
    history = pipeline.record_history(settings, pointer, {"from": plan["from"], "reason": plan["reason"],
                                                          "by": plan["by"]})
    previous = pointer.get("previous")
    return {"to": pointer["model_version"], "previous": previous["model_version"] if previous else None,
            "history": history, "retain": layout.retain_arg(pointer)}


def alert(settings: Settings, plan: RollbackPlan, rolled: Rolled) -> dict[str, str]:
    """Tell the alert topic: who, why, from and to, and how to undo it."""
    from recsys import notifiers

    subject = f"[recsys] rolled back to {rolled['to']} by {plan['by']}"
    message = "\n".join([
        f"The recommender now serves {rolled['to']} (was {rolled['previous']}).",
        f"By: {plan['by']}", f"Reason: {plan['reason']}",
        f"Roll back again (to {rolled['previous']}): trigger recommender_rollback with an empty target.",
        f"Versions page: {pipeline.versions_page(settings)}",
    ])
    notifiers.sns_notifier(settings, subject, message).notify({})
    return {"subject": subject, "message": message}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys.rollback", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--to", help="version to serve (default: the previous one in models/_live.json)")
    parser.add_argument("--min-hours", type=float, default=24.0,
                        help="refuse a version whose rows expire within this many hours (default 24)")
    parser.add_argument("--reason", default="", help="why (at least 3 characters; recorded in runs/live/ and "
                        "on the versions page); required unless --dry-run")
    parser.add_argument("--dry-run", action="store_true", help="check the target, change nothing")
    args = parser.parse_args(argv)
    if not args.dry_run and len(args.reason.strip()) < 3:
        parser.error("--reason WHY is required (at least 3 characters): it is recorded with the change")
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    try:
        if args.dry_run:
            out: dict = rollback(settings, args.to, args.min_hours, dry_run=True)
        else:  # what the DAG's check, roll and alert tasks do
            plan = check(settings, args.to, args.min_hours, args.reason,
                         f"{getpass.getuser()} (python -m recsys.rollback)", pin_jobs=False)
            rolled = apply(settings, plan, args.min_hours)
            out = {**plan, **rolled}
            try:  # the roll is done: an alert this shell may not send does not undo or fail it
                out["alert"] = alert(settings, plan, rolled)["subject"]
            except Exception as err:  # noqa: BLE001 - any SNS or credentials failure
                print(f"rolled back, but the alert was not sent: {err}", file=sys.stderr, flush=True)
    except RollbackRefused as err:
        # stderr directly: Airflow's logging config may have claimed the root logger already
        print(f"rollback refused: {err}", file=sys.stderr, flush=True)
        return 3
    if not args.dry_run:
        print(f"rows of {out['to']} keep their expiry: to extend it and redraw the versions page, "
              "trigger recommender_rollback instead, or run the retain and versions stages", file=sys.stderr)
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
