# Stand-in for registry:2 where Docker Hub cannot be reached: the same CNCF distribution
# registry, Debian's build (docker-registry), at the official image's paths.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends docker-registry \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/docker-registry /bin/registry \
    && install -d /var/lib/registry /etc/docker/registry
EXPOSE 5000
ENTRYPOINT ["registry"]
CMD ["serve", "/etc/docker/registry/config.yml"]
