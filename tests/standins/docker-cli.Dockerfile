# Stand-in for docker:<version>-cli where Docker Hub cannot be reached: Debian's docker client
# at the official image's path. Its build has BuildKit built in (DOCKER_BUILDKIT=1), so no buildx plugin.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends docker.io \
    && rm -rf /var/lib/apt/lists/* \
    && cp /usr/bin/docker /usr/local/bin/docker \
    && install -d /usr/local/libexec/docker/cli-plugins
