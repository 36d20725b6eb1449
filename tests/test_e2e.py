"""`airflow dags test` end to end on the embedded stack (moto server, SQLite, local compute)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.settings import Settings
from tests.aws_calls import roles_seen, violations
from tests.conftest import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
DAY1, DAY2 = "2026-11-20", "2026-11-21"
# The stages' interpreter: this one, or (make test-compat, an Airflow without torch) the main venv's.
STAGE_PYTHON = os.environ.get("RECSYS_PYTHON") or sys.executable


@pytest.fixture
def stack(aws, tmp_path, boto):
    from recsys import infra
    from recsys.settings import Settings

    infra.up(Settings(), ecs=True, default_subnets=True)
    env = {**os.environ,
           "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "RECSYS_STATE_DIR": str(tmp_path / "state"), "RECSYS_SERVE_PORT": str(free_port()),
           "RECSYS_RETRY_DELAY_SECONDS": "1", "RECSYS_PROJECT_ROOT": str(ROOT),
           "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    subprocess.run([STAGE_PYTHON, "-m", "tasks.data", "bootstrap", "--no-download",
                    "--raw", f"s3://{aws['bucket']}/raw/ratings", "--items", f"s3://{aws['bucket']}/raw/items"],
                   env=env, check=True, capture_output=True, timeout=120)

    def dags_test(ds: str) -> subprocess.CompletedProcess:
        return subprocess.run([airflow, "dags", "test", "recommender_pipeline", ds], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=900)

    yield {"run": dags_test, "env": env, "bucket": aws["bucket"], "table": aws["table"], **aws}
    subprocess.run([STAGE_PYTHON, str(ROOT / "scripts" / "stack.py"), "stop-serve"], env=env, check=False)
    from recsys.deploy.local import LocalServer

    LocalServer(Settings(state_dir=str(tmp_path / "state"))).stop()


def s3_json(s3, bucket, key):
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def rows_for(ddb, table, version):
    out, kwargs = [], {}
    while True:
        page = ddb.scan(TableName=table, FilterExpression="model_version = :v",
                        ExpressionAttributeValues={":v": {"S": version}}, **kwargs)
        out.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return out
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def model_versions(s3, bucket):
    return sorted({k["Key"].split("/")[1] for k in s3.list_objects_v2(Bucket=bucket, Prefix="models/")["Contents"]}
                  - {"_live.json"})


def test_pipeline_end_to_end_each_run_its_own_version_and_the_live_one_immutable(stack, boto, aws_calls):
    s3, ddb = boto("s3"), boto("dynamodb")
    res = stack["run"](DAY1)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    [v1] = model_versions(s3, stack["bucket"])
    assert v1.startswith("v20261120T000000m-")  # manual run (dags test): logical date to the second, type, hash
    rows = rows_for(ddb, stack["table"], v1)
    users = [r["user_id"]["S"] for r in rows]
    assert len(users) == len(set(users)) == 943 + 2  # one row per user, + marker + fallback list
    summary = s3_json(s3, stack["bucket"], f"runs/ds={DAY1}/{v1}/summary.json")
    assert summary["users_written"] == 943 and summary["live_version"] == v1 and summary["deployed"] is True
    assert summary["holdout"]["rmse"] < 1.0
    listed = s3.list_objects_v2(Bucket=stack["bucket"], Prefix=f"models/{v1}/")["Contents"]
    artifacts = {k["Key"]: k["ETag"] for k in listed}
    assert f"models/{v1}/_complete.json" in artifacts
    # the serving app the deploy task started answers over HTTP
    state = json.loads((Path(stack["env"]["RECSYS_STATE_DIR"]) / "serve.json").read_text())
    import urllib.request

    with urllib.request.urlopen(f"{state['url']}/recommendations/1?n=3", timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["model_version"] == v1 and len(body["items"]) == 3 and body["source"] == "personal"

    # the same date again: `dags test` makes a new run (its run id carries the run-after time), so a new
    # version, deployed; v1 becomes the rollback target and stays byte-identical
    later = stack["run"](DAY1)
    assert later.returncode == 0, later.stdout[-3000:] + later.stderr[-3000:]
    [v2] = [v for v in model_versions(s3, stack["bucket"]) if v != v1]
    assert v2.startswith("v20261120T000000m-")
    live = s3_json(s3, stack["bucket"], "models/_live.json")
    assert live["model_version"] == v2 and live["previous"]["model_version"] == v1
    assert {k["Key"]: k["ETag"] for k in s3.list_objects_v2(Bucket=stack["bucket"],
                                                            Prefix=f"models/{v1}/")["Contents"]} == artifacts
    assert len(rows_for(ddb, stack["table"], v1)) == 945  # the rollback target's rows are untouched

    # roll back to v1 with the command, then forward again
    env = {**stack["env"], "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}
    unexplained = subprocess.run([sys.executable, "-m", "recsys.rollback"], env=env, cwd=ROOT, capture_output=True,
                                 text=True, timeout=300)
    assert unexplained.returncode == 2 and "--reason WHY is required" in unexplained.stderr
    back = subprocess.run([sys.executable, "-m", "recsys.rollback", "--reason", "v2 looks off"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert back.returncode == 0, back.stderr[-3000:]
    live = s3_json(s3, stack["bucket"], "models/_live.json")
    assert live["model_version"] == v1 and live["previous"]["model_version"] == v2
    # recorded as the rollback DAG records it: who and why, for the versions page
    [record] = [s3_json(s3, stack["bucket"], o["Key"]) for o in
                s3.list_objects_v2(Bucket=stack["bucket"], Prefix="runs/live/")["Contents"]
                if o["Key"].endswith(f"-{v1}.json") and "rollback" in s3_json(s3, stack["bucket"], o["Key"])]
    assert record["rollback"]["from"] == v2 and record["rollback"]["reason"] == "v2 looks off"
    assert record["rollback"]["by"].endswith("(python -m recsys.rollback)")
    with urllib.request.urlopen(f"{state['url']}/readyz", timeout=5) as resp:
        assert json.loads(resp.read())["model_version"] == v1
    refused = subprocess.run([sys.executable, "-m", "recsys.rollback", "--to", "v19990101T000000m-000000",
                              "--reason", "try an old one"], env=env,
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 3 and "is incomplete" in refused.stderr
    # every AWS call made above, by the worker, the stages and the serving app, is one its role's
    # policy in deploy/iam/ allows (recorded at the moto server, attributed by User-Agent)
    assert roles_seen(aws_calls) == {"airflow", "jobs", "serve"}
    assert violations(aws_calls, Settings()) == {}


def test_malformed_input_fails_quarantines_alerts_and_keeps_live_model(stack, boto, aws_calls):
    s3, sqs, sns = boto("s3"), boto("sqs"), boto("sns")
    queue = sqs.create_queue(QueueName="e2e-alerts")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=stack["alert_topic"], Protocol="sqs", Endpoint=arn)
    live_key = "models/_live.json"
    before = s3.list_objects_v2(Bucket=stack["bucket"], Prefix=live_key).get("Contents")
    bad = "user_id,item_id,rating,timestamp\n1,2,4,1700000000\n1,3,lots,1700000001\n"
    s3.put_object(Bucket=stack["bucket"], Key=f"raw/ratings/ds={DAY2}/bad.csv", Body=bad.encode())

    res = stack["run"](DAY2)
    assert res.returncode != 0
    log = res.stdout + res.stderr
    assert "bad.csv, line 3, column 'rating': not a number" in log
    quarantined = s3.get_object(Bucket=stack["bucket"], Key=f"quarantine/ds={DAY2}/bad.csv")["Body"].read()
    assert quarantined.decode() == bad
    assert "Contents" not in s3.list_objects_v2(Bucket=stack["bucket"], Prefix=f"datasets/ds={DAY2}/")
    assert "Contents" not in s3.list_objects_v2(Bucket=stack["bucket"], Prefix="models/v20261121")
    assert s3.list_objects_v2(Bucket=stack["bucket"], Prefix=live_key).get("Contents") == before
    messages = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2, MaxNumberOfMessages=10).get("Messages", [])
    alerts = [json.loads(m["Body"]) for m in messages]
    assert len(alerts) == 1, alerts  # one alert per failed run
    msg = alerts[0]["Message"]
    assert "Task snapshot of recommender_pipeline failed" in msg
    assert "not retried" in msg and "bad.csv, line 3, column 'rating': not a number" in msg
    assert "try 1" in msg  # failed at once: no retries for bad input
    assert violations(aws_calls, Settings()) == {}  # the alert, its marker, the quarantine
