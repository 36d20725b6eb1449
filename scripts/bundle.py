"""``make bundle``: what Amazon MWAA and Cloud Composer take, in ``dist/``.

``dist/mwaa/``
    ``dags/`` (every DAG file); ``plugins.zip`` with ``recsys/`` at its root (MWAA unzips
    it into the plugins folder, which Airflow puts on ``sys.path``); ``startup.sh`` (exports
    the ``RECSYS_*`` settings: values baked in from your shell at bundle time, overridden by the
    environment's configuration options ``env.recsys_*``, which MWAA passes as
    ``AIRFLOW__ENV__RECSYS_*``). No ``requirements.txt``: MWAA preinstalls the amazon and
    standard providers, and a requirements file is fetched and installed at every worker start
    (a constraint URL on a public host fails in a private network without NAT).
    ``python scripts/deploy_mwaa.py --environment NAME`` deploys it.
``dist/composer/``
    ``dags/``, ``plugins/recsys/``, ``pypi-packages.txt``, ``env-variables.txt`` and
    ``deploy.sh`` (the ``gcloud`` commands; it deletes the files an older bundle left).

Both carry ``recsys/_bundle.json``: the release id (also stamped into every DAG file, which
refuses to import beside another release's ``recsys``: ``recsys.release``), the serving and jobs
image tags (content hashes of the images' sources, which managed workers do not have) and the
commit it was made from. Push those images before the first run: ``make push-image`` and, for ECS
stages, ``make push-jobs-image``.

    python scripts/bundle.py [--out dist] [--mwaa-airflow 3.3.1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from recsys import deploy  # noqa: E402  (stdlib-only at import)

sys.path.insert(0, str(ROOT / "scripts"))
import platforms  # noqa: E402

DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
PACKAGE = ROOT / "plugins" / "recsys"
MWAA_VERSIONS = platforms.versions("mwaa")  # deploy/platforms.toml: the one table of supported versions
MWAA_PYTHON = platforms.python("mwaa")
RELEASE_LINE = 'RELEASE = "source"'
# Settings that describe this machine, not the deployment: never baked into a bundle.
LOCAL_ONLY = {"RECSYS_PROJECT_ROOT", "RECSYS_STATE_DIR", "RECSYS_PYTHON", "RECSYS_IMAGE_TAG"}
# Managed workers have no Docker engine and no torch: stages run on ECS, the app is an ECS service.
MANAGED_DEFAULTS = {"RECSYS_COMPUTE": "ecs", "RECSYS_DEPLOY": "ecs"}


# what a working tree may hold beside the package's files and no bundle should carry: bytecode, merge
# and patch leftovers, editor backups
STRAY = ("__pycache__", "*.pyc", "*.orig", "*.rej", "*.swp", "*~")


def package_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts
                  and not any(p.match(pattern) for pattern in STRAY[1:])
                  and p.name != deploy.image.BUNDLE_FILE)


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dags", "plugins", "tasks", "requirements"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def bundle_settings(environ) -> dict[str, str]:
    """RECSYS_* to bake in: the managed defaults, then what the shell running ``make bundle`` sets.

    ``RECSYS_REGION`` (where the bucket, table and cluster live) is always baked when the shell
    knows a region: Composer's workers have no AWS_DEFAULT_REGION, so without it every call
    would go to us-east-1.
    """
    baked = dict(MANAGED_DEFAULTS)
    region = environ.get("RECSYS_REGION") or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        baked["RECSYS_REGION"] = region
    baked.update({k: v for k, v in environ.items() if k.startswith("RECSYS_") and k not in LOCAL_ONLY and v})
    return dict(sorted(baked.items()))


def release_id(commit: str) -> str:
    """The commit plus a hash of every shipped file: two bundles of one commit with edits differ."""
    digest = hashlib.sha256()
    for path in [*DAG_FILES, *package_files()]:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{commit[:12]}-{digest.hexdigest()[:8]}"


def stamp_dag(path: Path, dest: Path, release: str) -> None:
    """Copy a DAG file with the bundle's release in its ``RELEASE`` line."""
    text = path.read_text()
    if text.count(RELEASE_LINE) != 1:
        raise SystemExit(f"{path}: expected one line {RELEASE_LINE!r} to stamp the release into "
                         "(see recsys.release)")
    dest.write_text(text.replace(RELEASE_LINE, f'RELEASE = "{release}"'))


def startup_script(settings: dict[str, str], info: dict) -> str:
    lines = [
        "#!/bin/bash",
        f"# MWAA startup script, made by `make bundle` from commit {info['commit']}.",
        "# MWAA runs it before every Airflow component starts; what it exports is what the DAG reads.",
        "# 1. Values from the shell that ran `make bundle` (a variable already set wins).",
    ]
    lines += [f'[ -n "${{{k}:-}}" ] || {k}={shlex.quote(v)}; export {k}' for k, v in settings.items()]
    lines += [
        "# 2. The environment's Airflow configuration options env.recsys_* arrive as AIRFLOW__ENV__RECSYS_*:",
        "#    they win over the values above.",
        "for _var in $(env | sed -n 's/^AIRFLOW__ENV__\\([Rr][Ee][Cc][Ss][Yy][Ss]_[A-Za-z0-9_]*\\)=.*/\\1/p'); do",
        "  _name=$(printf '%s' \"$_var\" | tr '[:lower:]' '[:upper:]')",
        "  eval \"export $_name=\\\"\\$AIRFLOW__ENV__$_var\\\"\"",
        "done",
        "unset _var _name",
        "",
    ]
    return "\n".join(lines)


def composer_script(info: dict) -> str:
    return f"""#!/usr/bin/env bash
# Upload this bundle (commit {info['commit']}) to a Cloud Composer 3 environment:
#   ENVIRONMENT=my-env LOCATION=europe-west1 ./deploy.sh
set -euo pipefail
cd "$(dirname "$0")"
: "${{ENVIRONMENT:?set ENVIRONMENT to the Composer environment name}}"
: "${{LOCATION:?set LOCATION to its region}}"
env_args=(--environment "$ENVIRONMENT" --location "$LOCATION")
# gcloud fails an update that changes nothing: that is not an error here.
update() {{
  local out
  if ! out=$(gcloud composer environments update "$ENVIRONMENT" --location "$LOCATION" "$@" 2>&1); then
    grep -q "No change in configuration" <<<"$out" || {{ echo "$out" >&2; exit 1; }}
  fi
}}
update --update-pypi-packages-from-file pypi-packages.txt
# '^|^' makes | the separator: values such as RECSYS_ECS_SUBNETS hold commas.
update --update-env-variables "^|^$(grep -v '^#' env-variables.txt | paste -sd'|' -)"
# Plugins first: a DAG file refuses to import beside another release's recsys, so the new DAGs
# arrive once their package is there. `storage plugins import` never deletes: rsync does, for
# recsys/ (all ours); in the shared dags/ folder only recommender_*.py files are ours to delete.
dags="$(gcloud composer environments describe "${{env_args[@]:1}}" --format='value(config.dagGcsPrefix)')"
plugins="${{dags%/dags}}/plugins"
gcloud storage rsync plugins/recsys "$plugins/recsys" --recursive --delete-unmatched-destination-objects
gcloud storage cp plugins/.airflowignore "$plugins/.airflowignore"
gcloud storage cp dags/*.py "$dags/"
for uri in $(gcloud storage ls "$dags/recommender_*.py" 2>/dev/null || true); do
  [ -f "dags/${{uri##*/}}" ] || gcloud storage rm "$uri"
done
"""


def build(out: Path, mwaa_airflow: str, environ=os.environ) -> dict:
    commit = git_commit()
    info = {"release": release_id(commit), "serving_image_tag": deploy.image.image_tag(str(ROOT)),
            "jobs_image_tag": deploy.image.image_tag(str(ROOT), deploy.image.JOBS_IMAGE_INPUTS), "commit": commit,
            "made_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "mwaa_airflow": mwaa_airflow}
    settings = bundle_settings(environ)
    info_json = json.dumps(info, indent=2) + "\n"
    mwaa, composer = out / "mwaa", out / "composer"
    for folder in (mwaa, composer):
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "dags").mkdir(parents=True)
        for dag_file in DAG_FILES:
            stamp_dag(dag_file, folder / "dags" / dag_file.name, info["release"])

    # MWAA
    with zipfile.ZipFile(mwaa / "plugins.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(ROOT / "plugins" / ".airflowignore", ".airflowignore")  # recsys/ is a package, not a plugin
        for path in package_files():
            zf.write(path, path.relative_to(ROOT / "plugins").as_posix())
        zf.writestr(f"recsys/{deploy.image.BUNDLE_FILE}", info_json)
    (mwaa / "startup.sh").write_text(startup_script(settings, info))
    (mwaa / "startup.sh").chmod(0o755)

    # Composer
    shutil.copytree(PACKAGE, composer / "plugins" / "recsys",
                    ignore=shutil.ignore_patterns(*STRAY, deploy.image.BUNDLE_FILE))
    shutil.copy2(ROOT / "plugins" / ".airflowignore", composer / "plugins" / ".airflowignore")
    (composer / "plugins" / "recsys" / deploy.image.BUNDLE_FILE).write_text(info_json)
    shutil.copy2(ROOT / "requirements" / "composer.txt", composer / "pypi-packages.txt")
    (composer / "env-variables.txt").write_text(
        "# RECSYS_* for the Composer environment (deploy.sh sets them with --update-env-variables)\n"
        + "".join(f"{k}={v}\n" for k, v in settings.items()))
    (composer / "deploy.sh").write_text(composer_script(info))
    (composer / "deploy.sh").chmod(0o755)
    return {**info, "out": str(out), "settings": settings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "dist"))
    parser.add_argument("--mwaa-airflow", default=MWAA_VERSIONS[-1], choices=MWAA_VERSIONS,
                        help="the MWAA environment's Airflow version (recorded in _bundle.json)")
    args = parser.parse_args(argv)
    made = build(Path(args.out), args.mwaa_airflow)
    print(f"bundle release {made['release']} (commit {made['commit']}) in {made['out']}/mwaa and "
          f"{made['out']}/composer")
    print(f"serving image tag {made['serving_image_tag']}: push it before the first deploy (make push-image)")
    print(f"jobs image tag {made['jobs_image_tag']}: with RECSYS_COMPUTE=ecs, push it before the first run "
          "(make push-jobs-image)")
    print("settings baked in: " + ", ".join(f"{k}={v}" for k, v in made["settings"].items()))
    if "RECSYS_REGION" not in made["settings"]:
        print("note: no region known (RECSYS_REGION, AWS_REGION, AWS_DEFAULT_REGION): set RECSYS_REGION for the "
              "environment, or Composer's workers target us-east-1")
    if "RECSYS_ECS_SUBNETS" not in made["settings"]:
        print("note: RECSYS_ECS_SUBNETS is not set: give it to the environment (MWAA configuration option "
              "env.recsys_ecs_subnets, or Composer's env-variables.txt) or the DAG will not import")
    return 0


if __name__ == "__main__":
    sys.exit(main())
