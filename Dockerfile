# syntax=docker/dockerfile:1
# One image runs every CoinPilot service; the command picks it:
#   docker run coinpilot run risk        (collector, indicator, strategy, risk, agent, executor, notifier)
#   docker run coinpilot db upgrade      (one-shot jobs: db upgrade, nats setup, tail, replay, backtest)
# Pin the base by digest in CI/release builds (docs/deploy.md, "Image"):
#   --build-arg PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- builder: resolve and install the locked dependencies into a venv ----------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A compiler only for dependencies without a wheel for the target platform; it stays in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first (their own layer, rebuilt only when the lock or pyproject changes).
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -c constraints.txt -r /tmp/requirements.txt

# Then the project itself, non-editable, with the same constraints.
COPY README.md ./
COPY libs ./libs
COPY services ./services
COPY apps ./apps
RUN pip install --no-deps -c constraints.txt . \
 && python -m compileall -q /opt/venv/lib \
 && coinpilot --help > /dev/null

# ---- runtime: the venv and nothing else ------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="coinpilot" \
      org.opencontainers.image.description="CoinPilot services (collector, indicator, strategy, risk, agent, executor, notifier)" \
      org.opencontainers.image.licenses="Proprietary"

RUN groupadd --system --gid 10001 coinpilot \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin coinpilot

COPY --from=builder /opt/venv /opt/venv

# Read-only root filesystem: nothing is written at runtime except /tmp (an emptyDir/tmpfs mount).
# Bytecode is precompiled in the builder; matplotlib keeps its cache under /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/tmp \
    COINPILOT_HTTP_PORT=8000 \
    COINPILOT_LOG_JSON=true

WORKDIR /tmp
USER 10001:10001
EXPOSE 8000

# No HEALTHCHECK: Kubernetes probes /healthz and /readyz; compose declares its own checks.
ENTRYPOINT ["coinpilot"]
CMD ["run", "all"]
