# Environment of the embedded stack (moto server as AWS, SQLite Airflow). Source it:
#   . scripts/env.sh
# Values already set in the environment win, so the same DAG can point at real AWS.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export RECSYS_PROJECT_ROOT="$ROOT"
export MOTO_PORT="${MOTO_PORT:-5000}"
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL-http://127.0.0.1:$MOTO_PORT}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$ROOT/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$ROOT/plugins}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
export AIRFLOW__LOGGING__LOGGING_LEVEL="${AIRFLOW__LOGGING__LOGGING_LEVEL:-INFO}"
# The Airflow connection carries the same endpoint for the provider's hooks.
if [ -z "${AIRFLOW_CONN_AWS_DEFAULT:-}" ]; then
  if [ -n "$AWS_ENDPOINT_URL" ]; then
    export AIRFLOW_CONN_AWS_DEFAULT="{\"conn_type\": \"aws\", \"extra\": {\"endpoint_url\": \"$AWS_ENDPOINT_URL\", \"region_name\": \"$AWS_DEFAULT_REGION\"}}"
  else
    export AIRFLOW_CONN_AWS_DEFAULT='{"conn_type": "aws"}'
  fi
fi
export PYTHONPATH="$ROOT:$ROOT/plugins${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$ROOT/.venv/bin:$PATH"
