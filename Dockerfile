# gridshift agent image.
#
#   docker build -t gridshift:0.1.0 .
#   docker run --rm -p 8787:8787 gridshift:0.1.0            # the agent (replay signal, local jobs)
#   docker run --rm gridshift:0.1.0 --version
#
# BASE is any Debian-like image with python3 (>= 3.11) and the venv module, e.g. the official
# python:3.12-slim, or a locally made Debian image where no registry can be reached (see
# deploy/docs/operators.md, "Building the image offline").
#
# EXTRAS picks optional dependency groups of pyproject.toml (comma-separated; empty for none).
# The engines need none: Slurm is driven through its commands, Ray and Kubernetes over HTTP;
# `postgres` brings the PostgreSQL driver (psycopg, with its own libpq) for a shared
# database. Wheels put in deploy/docker/wheels/ are used before any index; build with
# --build-arg PIP_NO_INDEX=1 to use only those (an offline build).
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
ARG EXTRAS=kubernetes,postgres
ARG PIP_NO_INDEX
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_FIND_LINKS=/wheels
WORKDIR /src
COPY deploy/docker/wheels/ /wheels/
COPY pyproject.toml README.md LICENSE ./
COPY scheduler/ scheduler/
COPY adapters/ adapters/
RUN python3 -m venv /opt/gridshift \
    && /opt/gridshift/bin/pip install --no-cache-dir ".[${EXTRAS}]" \
    && /opt/gridshift/bin/gridshift --version

FROM ${BASE}
LABEL org.opencontainers.image.title="gridshift" \
      org.opencontainers.image.description="Carbon-aware workload scheduler agent for GPU clusters" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 gridshift \
    && useradd --system --uid 10001 --gid gridshift --home-dir /var/lib/gridshift \
       --create-home --shell /usr/sbin/nologin gridshift
COPY --from=build /opt/gridshift /opt/gridshift
# Inside a container the API listens on every interface; state (SQLite, job logs) lives in
# /var/lib/gridshift (mount a volume there to keep it). GPU access (NVML) is granted by the
# deployment (NVIDIA container runtime, NVIDIA_DRIVER_CAPABILITIES=utility), not by the image.
ENV PATH=/opt/gridshift/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GRIDSHIFT_API__HOST=0.0.0.0 \
    GRIDSHIFT_API__PORT=8787 \
    GRIDSHIFT_STATE_DIR=/var/lib/gridshift
WORKDIR /var/lib/gridshift
USER 10001:10001
EXPOSE 8787
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/opt/gridshift/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GRIDSHIFT_API__PORT', '8787'), timeout=4)"]
ENTRYPOINT ["gridshift"]
CMD ["agent"]
