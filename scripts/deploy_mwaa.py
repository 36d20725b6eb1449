"""Deploy ``dist/mwaa`` (``make bundle``) to an Amazon MWAA environment in one step.

    make deploy-mwaa MWAA_ENVIRONMENT=my-env      # make bundle, then this script
    python scripts/deploy_mwaa.py --environment my-env [--bundle dist/mwaa] [--timeout 5400]

1. reads the environment (``GetEnvironment``): its bucket and the S3 paths it uses;
2. uploads ``plugins.zip`` and ``startup.sh`` to those paths; the bucket must have versioning on
   (MWAA requires it), and each upload's ``VersionId`` is what the environment is told to load;
3. ``UpdateEnvironment`` with ``PluginsS3ObjectVersion`` and ``StartupScriptS3ObjectVersion``
   (without them MWAA keeps the versions it had: a re-uploaded plugins.zip would never load);
4. waits until the environment is ``AVAILABLE`` again (a rolling restart of every component;
   fails on ``UPDATE_FAILED``), then
5. uploads the DAG files and deletes the ``recommender_*.py`` files the bundle no longer has.

Plugins before DAGs, because a DAG file refuses to import beside another release's ``recsys``
(``recsys.release``): during the restart a component still on the old plugins runs the old DAGs,
one already restarted shows the old DAG files as import errors naming both releases (no task of
another release's code runs), and the new DAGs arrive only once the new plugins are live
everywhere. No ``requirements.txt`` is uploaded: MWAA preinstalls
what the Airflow side needs, and a requirements file would be fetched and installed at every
worker start. boto3 with your credentials (the standard AWS variables and profile).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("deploy_mwaa")
ROOT = Path(__file__).resolve().parents[1]
DAG_PATTERN = "recommender_"  # the DAG files this project owns in a shared dags/ folder


class DeployError(RuntimeError):
    pass


def _key(prefix: str | None, default: str) -> str:
    return (prefix or default).strip("/")


def upload(s3, bucket: str, key: str, path: Path) -> str:
    """Put one file; its S3 object version (MWAA loads exactly that version)."""
    with path.open("rb") as body:
        version = s3.put_object(Bucket=bucket, Key=key, Body=body).get("VersionId")
    if not version or version == "null":
        raise DeployError(f"s3://{bucket}/{key} has no object version: turn on versioning for the bucket "
                          "(MWAA requires it: aws s3api put-bucket-versioning --versioning-configuration "
                          "Status=Enabled)")
    log.info("uploaded %s to s3://%s/%s (version %s)", path.name, bucket, key, version)
    return version


def wait_available(mwaa, name: str, timeout: float, poll: float, sleep=time.sleep) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        env = mwaa.get_environment(Name=name)["Environment"]
        status = env.get("Status")
        if status == "AVAILABLE":
            return env
        if status in ("UPDATE_FAILED", "UNAVAILABLE", "CREATE_FAILED", "DELETED"):
            error = (env.get("LastUpdate") or {}).get("Error") or {}
            raise DeployError(f"environment {name} is {status} after the update: {error.get('ErrorCode', '')} "
                              f"{error.get('ErrorMessage', '')}. MWAA rolls back to the previous versions on a "
                              "failed update; see its CloudWatch logs (the scheduler's and the startup script's)")
        if time.monotonic() > deadline:
            raise DeployError(f"environment {name} still {status} after {timeout:.0f}s: re-run with a longer "
                              "--timeout, or watch it in the MWAA console")
        log.info("environment %s is %s; waiting", name, status)
        sleep(poll)


def deploy(bundle: Path, name: str, s3, mwaa, timeout: float = 5400, poll: float = 30, sleep=time.sleep) -> dict:
    info = json.loads(_read_bundle_info(bundle))
    env = mwaa.get_environment(Name=name)["Environment"]
    if env.get("Status") != "AVAILABLE":
        raise DeployError(f"environment {name} is {env.get('Status')}: wait until it is AVAILABLE")
    bucket = env["SourceBucketArn"].split(":::", 1)[1]
    if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
        raise DeployError(f"bucket {bucket} has versioning off: MWAA needs it (aws s3api put-bucket-versioning "
                          f"--bucket {bucket} --versioning-configuration Status=Enabled)")
    if env.get("RequirementsS3Path"):
        log.warning("environment %s still installs s3://%s/%s at every worker start: this bundle needs no "
                    "requirements file; clear it in the MWAA console (Edit > DAG code in Amazon S3)",
                    name, bucket, env["RequirementsS3Path"])
    plugins_key = _key(env.get("PluginsS3Path"), "plugins.zip")
    startup_key = _key(env.get("StartupScriptS3Path"), "startup.sh")
    plugins_version = upload(s3, bucket, plugins_key, bundle / "plugins.zip")
    startup_version = upload(s3, bucket, startup_key, bundle / "startup.sh")
    mwaa.update_environment(Name=name, PluginsS3Path=plugins_key, PluginsS3ObjectVersion=plugins_version,
                            StartupScriptS3Path=startup_key, StartupScriptS3ObjectVersion=startup_version)
    log.info("update of %s started (plugins %s, startup script %s)", name, plugins_version, startup_version)
    wait_available(mwaa, name, timeout, poll, sleep)

    dags_prefix = _key(env.get("DagS3Path"), "dags")
    shipped = sorted(p.name for p in (bundle / "dags").glob("*.py"))
    for file in shipped:
        upload(s3, bucket, f"{dags_prefix}/{file}", bundle / "dags" / file)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{dags_prefix}/{DAG_PATTERN}").get("Contents", [])
    removed = sorted(o["Key"] for o in listed if o["Key"].endswith(".py")
                     and o["Key"].rsplit("/", 1)[-1] not in shipped)
    for key in removed:
        s3.delete_object(Bucket=bucket, Key=key)
        log.info("deleted s3://%s/%s (not in this bundle)", bucket, key)
    return {"environment": name, "release": info.get("release"), "plugins_version": plugins_version,
            "startup_version": startup_version, "dags": shipped, "removed": removed}


def _read_bundle_info(bundle: Path) -> str:
    import zipfile

    with zipfile.ZipFile(bundle / "plugins.zip") as zf:
        return zf.read("recsys/_bundle.json").decode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--environment", required=True, help="the MWAA environment's name")
    parser.add_argument("--bundle", default=str(ROOT / "dist" / "mwaa"), help="what `make bundle` wrote")
    parser.add_argument("--timeout", type=float, default=5400, help="seconds to wait for AVAILABLE (default 90 min)")
    parser.add_argument("--poll", type=float, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import boto3

    session = boto3.Session()
    try:
        out = deploy(Path(args.bundle), args.environment, session.client("s3"), session.client("mwaa"),
                     args.timeout, args.poll)
    except DeployError as err:
        print(f"deploy refused or failed: {err}", file=sys.stderr)
        return 3
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
