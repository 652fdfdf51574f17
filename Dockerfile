# syntax=docker/dockerfile:1
# The refund-ledger image: every service runs from it as `refund-ledger run SERVICE`
# (deploy/k8s: UID 10001, read-only root filesystem, emptyDirs at /var/lib/refund-ledger and /tmp).
#
#   docker build -t refund-ledger:0.1.0 .
#   docker run --rm refund-ledger:0.1.0 run payments     # needs KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL
#
# The base is pinned to an exact release. CI pins its digest as well: look it up with
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm
# and build with --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: the project and its dependencies in a virtualenv ------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
# Not editable: the venv holds the package and its data files (rules, bank codes, audit SQL).
RUN pip install --upgrade pip \
 && pip install . \
 && refund-ledger --help >/dev/null

# --- runtime: the venv, the event schemas, a non-root user --------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SCHEMAS_DIR=/opt/refund-ledger/schemas \
    DATA_DIR=/var/lib/refund-ledger \
    MALLOC_MMAP_THRESHOLD_=131072 \
    MALLOC_TRIM_THRESHOLD_=262144
RUN groupadd --system --gid 10001 refund-ledger \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/refund-ledger --shell /usr/sbin/nologin refund-ledger \
 && mkdir -p /var/lib/refund-ledger \
 && chown 10001:10001 /var/lib/refund-ledger
COPY --from=build /opt/venv /opt/venv
# The JSON Schemas of every event (outside the Python package; SCHEMAS_DIR points here).
COPY schemas /opt/refund-ledger/schemas
USER 10001:10001
WORKDIR /var/lib/refund-ledger
# WEB_PORT (/metrics, /healthz, /readyz of a worker) and AUDIT_API_PORT (the audit API).
EXPOSE 6066 8080
# SIGTERM drains, commits and exits within SHUTDOWN_GRACE.
STOPSIGNAL SIGTERM
ENTRYPOINT ["refund-ledger"]
CMD ["--help"]
