# Stand-in for motoserver/moto:<version> where Docker Hub cannot be reached: moto's server on
# 0.0.0.0:5000, as the official image runs it (`moto_server -H 0.0.0.0`).
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
ARG MOTO_VERSION=5.2.5
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check "moto[server]==${MOTO_VERSION}"
ENV PATH=/opt/venv/bin:$PATH
EXPOSE 5000
ENTRYPOINT ["moto_server", "-H", "0.0.0.0"]
