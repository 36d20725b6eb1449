# Stand-in for apache/airflow:<version>-python3.11 where Docker Hub cannot be reached (CI here):
# the same layout the official image has where docker-compose.yaml and Dockerfile.airflow rely
# on it: user airflow (50000, group 0), AIRFLOW_HOME=/opt/airflow, pip on PATH for that user,
# PostgreSQL drivers, and an entrypoint that runs `airflow <args>` unless the first is bash/python.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
ARG AIRFLOW_VERSION=3.3.2
ENV AIRFLOW_HOME=/opt/airflow PATH=/home/airflow/.local/bin:$PATH PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 50000 --gid 0 airflow \
    && install -d -o 50000 -g 0 /opt/airflow /opt/airflow/dags /opt/airflow/logs /opt/airflow/plugins
USER 50000
RUN --mount=type=secret,id=pip-ca,uid=50000 \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && python -m venv /home/airflow/.local \
    && pip install --no-cache-dir --disable-pip-version-check "apache-airflow==${AIRFLOW_VERSION}" \
       psycopg2-binary asyncpg
COPY --chmod=755 airflow-entrypoint.sh /entrypoint
WORKDIR /opt/airflow
ENTRYPOINT ["/entrypoint"]
CMD ["--help"]
