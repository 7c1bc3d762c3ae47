# syntax=docker/dockerfile:1
#
# lakebed runtime image: the lakebed package + Dagster (webserver, daemon) with
# Postgres instance storage. Used by docker-compose.yml for dagster-webserver,
# dagster-daemon and dagster-migrate; the command is chosen per service.
#
#   docker build -t lakebed .
FROM python:3.11-slim

ARG UV_VERSION=0.13.9

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_SYSTEM_PYTHON=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    LAKEBED_HOME=/data/lakebed \
    GX_ANALYTICS_ENABLED=false

RUN pip install "uv==${UV_VERSION}"

WORKDIR /opt/dagster/app

# Third-party dependencies first, at the exact versions of uv.lock (hashes checked),
# so this layer is rebuilt only when the lock changes, not on every code edit.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv export --frozen --no-dev --extra postgres --no-emit-project -o /tmp/requirements.txt \
 && uv pip install --system --require-hashes -r /tmp/requirements.txt

# The project itself (its dependencies are in place). Editable, so `lakebed`
# resolves to the same files whether it is imported through site-packages or from
# this directory (on sys.path whenever a process runs with /opt/dagster/app as
# working directory); lakebed/<name> links to the top-level folders either way.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --system --no-deps -e ".[postgres]" \
 && python -c "import importlib.util as u, dagster_postgres; assert u.find_spec('lakebed.assets.definitions')"

# Unprivileged runtime user. DAGSTER_HOME must be writable (storage/, log
# queues); the mount points are created here so that named volumes start out
# owned by that user. dagster.yaml itself stays root-owned (read-only).
RUN groupadd --system --gid 1000 lakebed \
 && useradd --system --uid 1000 --gid lakebed --create-home --home-dir /home/lakebed --shell /usr/sbin/nologin lakebed \
 && mkdir -p "${DAGSTER_HOME}/storage" /data/lakebed/landing \
 && chown -R lakebed:lakebed "${DAGSTER_HOME}" /data/lakebed
COPY deploy/dagster.yaml ${DAGSTER_HOME}/dagster.yaml

USER lakebed

EXPOSE 3000

CMD ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "/opt/dagster/app/deploy/workspace.yaml"]
