# syntax=docker/dockerfile:1
# One image for the three parts the chart runs: `meltguard operator`, `meltguard exporter`,
# `meltguard quota-server` (the chart passes the subcommand as args). `meltguard simulate`,
# `validate` and `crd` work in it too; `simulate --plot` needs the `plot` extra, left out by
# default (matplotlib and its fonts: about 100 MB that no pod uses).
#
# Stage 1 installs the project into a virtualenv, then takes pip and setuptools out of it.
# Stage 2 copies only that virtualenv onto a fresh base: no pip, no compiler, no sources, and
# it runs as an unprivileged numeric user. No compiler is installed in stage 1 either: every
# dependency ships wheels for amd64 and arm64, and one that would need compiling fails the
# build rather than growing it.
#
# Build, smoke test, push: scripts/build-image.sh (docs/image.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# pyproject.toml's optional dependencies to install: `cluster` is the three parts;
# `cluster,plot` adds what `simulate --plot` needs.
ARG EXTRAS=cluster
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_PROGRESS_BAR=off \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN python -m venv /opt/meltguard \
    && /opt/meltguard/bin/pip install ".[${EXTRAS}]" \
    && /opt/meltguard/bin/pip uninstall --yes pip setuptools \
    && /opt/meltguard/bin/meltguard --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="meltguard" \
      org.opencontainers.image.description="Keeps GPU inference fleets from melting: NVML-driven scaling and per-tier quota shedding" \
      org.opencontainers.image.licenses="Apache-2.0"
# No pip in what ships: the base's own (python:*-slim has one) is taken out too.
RUN if python -m pip --version >/dev/null 2>&1; then \
        python -m pip uninstall --yes pip setuptools wheel; \
    fi \
    && groupadd --system --gid 65532 meltguard \
    && useradd --no-log-init --uid 65532 --gid 65532 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin meltguard
COPY --from=build /opt/meltguard /opt/meltguard
# The chart mounts the root filesystem read-only: keep Python from writing bytecode (the
# virtualenv's is compiled at install) and matplotlib, where installed, to the writable /tmp.
ENV PATH=/opt/meltguard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib
USER 65532:65532
# operator metrics / liveness, quota server, exporter
EXPOSE 8000 8080 9400
ENTRYPOINT ["meltguard"]
CMD ["--help"]
