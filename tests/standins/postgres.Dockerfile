# Stand-in for postgres:16 where Docker Hub cannot be reached: Debian's PostgreSQL with the
# official image's interface (POSTGRES_USER/PASSWORD/DB, PGDATA=/var/lib/postgresql/data,
# port 5432, pg_isready on PATH).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends postgresql \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres /var/lib/postgresql/data /var/run/postgresql
COPY --chmod=755 postgres-entrypoint.sh /entrypoint
ENV PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["/entrypoint"]
