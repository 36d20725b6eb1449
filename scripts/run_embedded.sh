#!/usr/bin/env bash
# make run: one full pipeline run on the embedded stack (moto server as AWS, SQLite Airflow).
#   RUN_DATE=YYYY-MM-DD[THH:MM:SS+00:00]  logical date of the run (default: now, UTC, to the second:
#                        every `make run` is a new run with its own model version)
#   KEEP=1               leave the moto server and the serving app running afterwards
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$ROOT"
RUN_DATE="${RUN_DATE:-$(date -u +%FT%T+00:00)}"
RUN_DS="${RUN_DATE:0:10}"
STATE="$ROOT/.state"; mkdir -p "$STATE"
started_moto=""
started_registry=""

cleanup() {
  if [ "${KEEP:-0}" = "1" ]; then
    echo "KEEP=1: moto server on $AWS_ENDPOINT_URL and the serving app on :${RECSYS_SERVE_PORT:-8080} keep running"
    echo "stop them with: make stop"
    return
  fi
  python scripts/stack.py stop-serve || true
  if [ -n "$started_registry" ]; then python scripts/registry.py stop || true; fi
  if [ -n "$started_moto" ]; then python scripts/stack.py stop-moto || true; fi
}
trap cleanup EXIT

if python scripts/stack.py moto-running; then
  echo "== using the moto server already on $AWS_ENDPOINT_URL"
else
  echo "== starting moto server on $AWS_ENDPOINT_URL"
  python scripts/stack.py start-moto
  started_moto=1
fi

echo "== Airflow metadata DB ($AIRFLOW_HOME, SQLite)"
airflow db migrate > "$STATE/db-migrate.log" 2>&1 || { tail -20 "$STATE/db-migrate.log"; exit 1; }

echo "== AWS resources (idempotent)"
python -m recsys.infra up --default-subnets 2> "$STATE/infra.log" > "$STATE/infra.json" || { cat "$STATE/infra.log"; exit 1; }
python -c "import json,sys; d=json.load(open(sys.argv[1])); print('  bucket %s, table %s, topic %s, ECS service %s' % (d['bucket'], d['table'].split('/')[-1], d['alert_topic'], d['ecs']['service'].split('/')[-1]))" "$STATE/infra.json"

# With a Docker engine the DAG builds the serving image and pushes it to a real registry on
# loopback (ECR's API stays on moto: scripts/registry.py); never to the AWS hostname of moto's
# repository URI. Without an engine the build skips with its reason.
if python scripts/bounded.py 20 -- docker info >/dev/null 2>&1; then
  eval "$(python scripts/docker_build_env.py)"
  if python scripts/registry.py running || { python scripts/registry.py start && started_registry=1; }; then
    export RECSYS_REGISTRY="127.0.0.1:${RECSYS_REGISTRY_PORT:-5001}"
    echo "== Docker engine: the serving image is pushed to $RECSYS_REGISTRY (recorded in moto's ECR)"
  else
    export RECSYS_BUILD_IMAGE=0
    echo "== Docker engine, but no loopback registry (apt-get install docker-registry): the image build is off"
  fi
else
  echo "== no Docker engine: the serving image build skips (the app runs from source)"
fi

echo "== seeding raw ratings (bootstrap loader)"
python -m tasks.data bootstrap --raw "s3://${RECSYS_BUCKET:-recsys}/raw/ratings" --items "s3://${RECSYS_BUCKET:-recsys}/raw/items" 2> "$STATE/bootstrap.log" \
  | python -c "import json,sys; print('  ' + json.load(sys.stdin)['source'])"

echo "== airflow dags test recommender_pipeline $RUN_DATE (log: .state/dags-test.log)"
start=$(date +%s)
if ! airflow dags test recommender_pipeline "$RUN_DATE" > "$STATE/dags-test.log" 2>&1; then
  python scripts/stack.py task-states "$STATE/dags-test.log" || true
  echo "!! the run failed; last lines of the log:"; grep -E "ERROR|Error|error" "$STATE/dags-test.log" | tail -15
  exit 1
fi
python scripts/stack.py task-states "$STATE/dags-test.log"
echo "   pipeline took $(( $(date +%s) - start )) s"
python scripts/stack.py summary "$RUN_DS"
