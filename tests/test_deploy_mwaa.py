"""``scripts/deploy_mwaa.py``: S3 uploads on the moto server (a versioned bucket, as MWAA requires);
the MWAA API, which moto 5.2.5 does not implement, through botocore's Stubber: every request is
validated against the service model (the exact parameters the real service takes) and answered
with the shapes GetEnvironment and UpdateEnvironment return."""

from __future__ import annotations

import sys
from pathlib import Path

import boto3
import pytest
from botocore.stub import ANY, Stubber

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bundle  # noqa: E402
import deploy_mwaa  # noqa: E402

ENV = "recsys-prod"
ARN = f"arn:aws:airflow:us-east-1:123456789012:environment/{ENV}"


def environment(status: str, **extra) -> dict:
    return {"Environment": {"Name": ENV, "Arn": ARN, "Status": status, "AirflowVersion": "3.0.6",
                            "SourceBucketArn": "arn:aws:s3:::mwaa-src", "DagS3Path": "dags",
                            "PluginsS3Path": "plugins.zip", "StartupScriptS3Path": "startup.sh", **extra}}


@pytest.fixture
def setup(aws, tmp_path):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="mwaa-src")
    s3.put_bucket_versioning(Bucket="mwaa-src", VersioningConfiguration={"Status": "Enabled"})
    # what the previous release left: its DAG, a DAG this release dropped, another team's DAG
    for key in ("dags/recommender_pipeline.py", "dags/recommender_old.py", "dags/other_team.py"):
        s3.put_object(Bucket="mwaa-src", Key=key, Body=b"# old")
    made = bundle.build(tmp_path / "dist", "3.0.6", environ={})
    mwaa = boto3.client("mwaa", region_name="us-east-1")
    return s3, mwaa, tmp_path / "dist" / "mwaa", made


def test_uploads_with_object_versions_updates_waits_then_ships_the_dags(setup):
    s3, mwaa, dist, made = setup
    with Stubber(mwaa) as stub:
        stub.add_response("get_environment", environment("AVAILABLE"), {"Name": ENV})
        # the versions are the ones S3 gives the uploads: matched after the fact below
        stub.add_response("update_environment", {"Arn": ARN}, {
            "Name": ENV, "PluginsS3Path": "plugins.zip", "PluginsS3ObjectVersion": ANY,
            "StartupScriptS3Path": "startup.sh", "StartupScriptS3ObjectVersion": ANY})
        stub.add_response("get_environment", environment("UPDATING"), {"Name": ENV})
        stub.add_response("get_environment", environment("AVAILABLE"), {"Name": ENV})
        sleeps = []
        out = deploy_mwaa.deploy(dist, ENV, s3, mwaa, timeout=600, poll=30, sleep=sleeps.append)
        stub.assert_no_pending_responses()
    assert sleeps == [30]  # waited for the rolling restart once
    head = s3.head_object(Bucket="mwaa-src", Key="plugins.zip")
    assert out["plugins_version"] == head["VersionId"]  # the version the environment was told to load
    assert out["startup_version"] == s3.head_object(Bucket="mwaa-src", Key="startup.sh")["VersionId"]
    assert out["release"] == made["release"]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="mwaa-src", Prefix="dags/")["Contents"])
    assert keys == ["dags/other_team.py", "dags/recommender_pipeline.py", "dags/recommender_rollback.py"]
    assert out["removed"] == ["dags/recommender_old.py"]
    shipped = s3.get_object(Bucket="mwaa-src", Key="dags/recommender_pipeline.py")["Body"].read().decode()
    assert f'RELEASE = "{made["release"]}"' in shipped
    assert "requirements.txt" not in {o["Key"] for o in s3.list_objects_v2(Bucket="mwaa-src")["Contents"]}


def test_refuses_an_unversioned_bucket_before_uploading(setup):
    s3, mwaa, dist, _ = setup
    s3.put_bucket_versioning(Bucket="mwaa-src", VersioningConfiguration={"Status": "Suspended"})
    with Stubber(mwaa) as stub:
        stub.add_response("get_environment", environment("AVAILABLE"), {"Name": ENV})
        with pytest.raises(deploy_mwaa.DeployError, match="versioning off: MWAA needs it"):
            deploy_mwaa.deploy(dist, ENV, s3, mwaa)
    assert "Contents" not in s3.list_objects_v2(Bucket="mwaa-src", Prefix="plugins.zip")


def test_a_failed_update_is_an_error_and_the_new_dags_stay_away(setup):
    s3, mwaa, dist, _ = setup
    failed = environment("UPDATE_FAILED", LastUpdate={"Status": "FAILED", "Error": {
        "ErrorCode": "INCORRECT_CONFIGURATION", "ErrorMessage": "startup script exited 1"}})
    with Stubber(mwaa) as stub:
        stub.add_response("get_environment", environment("AVAILABLE"), {"Name": ENV})
        stub.add_response("update_environment", {"Arn": ARN}, None)
        stub.add_response("get_environment", failed, {"Name": ENV})
        with pytest.raises(deploy_mwaa.DeployError, match="UPDATE_FAILED.*startup script exited 1"):
            deploy_mwaa.deploy(dist, ENV, s3, mwaa, sleep=lambda s: None)
    # the old DAG files are untouched: they keep running on the old plugins MWAA rolled back to
    assert s3.get_object(Bucket="mwaa-src", Key="dags/recommender_pipeline.py")["Body"].read() == b"# old"

