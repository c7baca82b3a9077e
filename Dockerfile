# syntax=docker/dockerfile:1
# One image for all three parts: `meltguard operator`, `meltguard exporter`,
# `meltguard quota-server` (the chart passes the subcommand as args).
#
# Stage 1 builds a virtualenv with the project and its dependencies; it may need a compiler
# for any dependency without a wheel. Stage 2 copies only that virtualenv onto a fresh slim
# base: no compiler, no pip cache, no sources, and it runs as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/meltguard
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/meltguard/bin/pip install --upgrade pip \
    && /opt/meltguard/bin/pip install . \
    && /opt/meltguard/bin/meltguard --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="meltguard" \
      org.opencontainers.image.description="Keeps GPU inference fleets from melting: NVML-driven scaling and per-tier quota shedding" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 65532 meltguard \
    && useradd --system --uid 65532 --gid 65532 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin meltguard
COPY --from=build /opt/meltguard /opt/meltguard
# The chart mounts the root filesystem read-only: keep Python from writing bytecode and
# matplotlib (used by `meltguard simulate --plot`) to the writable /tmp.
ENV PATH=/opt/meltguard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib
USER 65532:65532
# operator metrics / liveness, quota server, exporter
EXPOSE 8000 8080 9400
ENTRYPOINT ["meltguard"]
CMD ["--help"]
