# lora-syncer sidecar image.
#
# Build:  docker build -t lora-syncer:0.1.0 .
#         (or, with no registry at all: bash scripts/build-image.sh, which builds this file with podman
#         on a debootstrapped Debian base passed as PYTHON_IMAGE, pip reading only prefetched wheels)
# Run:    the image's default command is `lora-syncer run`; it reads the adapters file named by
#         DYNAMIC_LORA_ROLLOUT_CONFIG (/config/configmap.yaml), exactly like the old upstream image.
#
# VERSION must equal the package version (tests/packaging checks that they agree).
# PYTHON_IMAGE: any image with python, pip and venv on PATH: the official python images, or a Debian
# root filesystem with python3, python3-venv, python3-pip and python-is-python3 (scripts/build-image.sh
# makes one). BUILD_IMAGE: the same Python plus a C compiler and the Python headers (the official
# non-slim image; build-image.sh adds gcc, libc6-dev and python3-dev), for the mypyc step below.
ARG PYTHON_IMAGE=python:3.12-slim
ARG BUILD_IMAGE=python:3.12
ARG VERSION=0.1.0

# ---- builder: build the wheel and install it, with the `fast` extra, into a virtualenv ----
# The proxy's per-request modules are compiled by mypyc (setup.py, LORA_SYNCER_COMPILE=1); the build
# fails if they are not (checked with `python -I`, so not against the sources in /src). mypyc
# type-checks against the installed dependencies, so /opt/build gets them (and the `compile` extra);
# it stays in the builder. pip and setuptools leave the runtime virtualenv once it is installed:
# nothing at run time installs anything.
FROM ${BUILD_IMAGE} AS builder
ARG VERSION
# Bytecode is compiled here, at install time: the runtime root filesystem is read-only.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY setup.py pyproject.toml README.md ./
COPY lora_syncer ./lora_syncer
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir ".[fast,compile]" \
    && LORA_SYNCER_COMPILE=1 /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels . \
    && python -m venv /opt/lora-syncer \
    && /opt/lora-syncer/bin/pip install --no-cache-dir "$(echo /wheels/lora_syncer-"${VERSION}"-*.whl)[fast]" \
    && /opt/lora-syncer/bin/pip uninstall --yes --quiet pip setuptools \
    && /opt/lora-syncer/bin/lora-syncer --version \
    && /opt/lora-syncer/bin/python -I -c "import sys; from lora_syncer.build import proxy_build; sys.exit(proxy_build() != 'compiled')"

# ---- runtime: the same Python base, only the virtualenv; no RUN step, so no shell is used ----
FROM ${PYTHON_IMAGE}
ARG VERSION
LABEL org.opencontainers.image.title="lora-syncer" \
      org.opencontainers.image.description="vLLM sidecar: keeps LoRA adapters in line with a ConfigMap and splits traffic across adapter versions" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/lora-syncer /opt/lora-syncer
ENV PATH=/opt/lora-syncer/bin:$PATH \
    VIRTUAL_ENV=/opt/lora-syncer \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DYNAMIC_LORA_ROLLOUT_CONFIG=/config/configmap.yaml \
    LORA_SYNCER_LOG_FORMAT=json
# A fixed numeric UID/GID so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
WORKDIR /tmp
# 8080: /healthz /readyz /status /metrics; 8081: the rewrite proxy (runs when --rules is given).
EXPOSE 8080 8081
STOPSIGNAL SIGTERM
ENTRYPOINT ["lora-syncer"]
CMD ["run"]
