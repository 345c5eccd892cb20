# syntax=docker/dockerfile:1
# The tokensync operator image: a wheel built in one stage, installed into a clean slim Python in
# the next (no compilers, no source tree, no caches). Runs as uid/gid 65532, which the Helm chart's
# securityContext matches (a test checks both).
#
#   docker build -t tokensync:0.1.0 .
#   docker run --rm tokensync:0.1.0 --help
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

# --- build: the project's wheel and the wheels of its dependencies -------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip wheel --wheel-dir /wheels /wheels/tokensync-*.whl

# --- runtime: only the wheels ------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/tokensync/tokensync
LABEL org.opencontainers.image.title="tokensync" \
      org.opencontainers.image.description="Kubernetes operator that keeps short-lived OAuth access tokens fresh in Secrets" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The wheels are bind-mounted from the build stage, so they never become a layer of this image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/tokensync-*.whl \
    && groupadd --system --gid 65532 tokensync \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin tokensync
WORKDIR /tmp
USER 65532:65532
# 8080: Prometheus metrics (/metrics); 8081: health probes (/healthz, /readyz).
EXPOSE 8080 8081
ENTRYPOINT ["tokensync", "run"]
