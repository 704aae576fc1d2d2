# syntax=docker/dockerfile:1
# The actiontrain image: `actiontrain` CLI, torchrun and the in-pod launch helpers, run as a fixed
# non-root user. No credentials or data are baked in: S3 access comes from the pod (a Secret's
# AWS_* variables or a service account's web identity).
#
#   docker build -t actiontrain:0.1.0 .
#   docker build -t actiontrain:0.1.0-cpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#
# Base: python:3.11-slim, not nvidia/cuda. The default PyPI Linux x86_64 wheels of torch are CUDA
# builds that carry their CUDA runtime, cuDNN and NCCL as nvidia-* wheels, so the image needs only
# the host's driver, which the NVIDIA container toolkit mounts; an nvidia/cuda base would add a
# second CUDA (several GB) that torch never loads. Debian bookworm is pinned for its FFmpeg 5.1,
# one of the FFmpeg majors (4 to 7) that torchcodec is built against.
#
# Layers from the one that changes least: FFmpeg and the user, torch (most of the image), the
# dependencies pyproject declares, the package (a wheel built in a stage of its own). A change to
# the package's code rebuilds only its own small layer and leaves torch's GB cached; a venv built
# in another stage and copied over would be copied, and hashed, whole on every build.

# The base of both stages. Where no registry can be reached, scripts/base-image.sh builds a
# stand-in from Debian packages and scripts/build-image.sh passes it here.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- wheel: the package, built from only what building it needs ----
FROM ${PYTHON_IMAGE} AS wheel

# A CA bundle for pip, read as a variable; empty: pip's own. For a network whose TLS proxy re-signs
# PyPI's certificates: scripts/build-image.sh mounts that machine's bundle over the image's own
# during the build and names it here. Nothing of it stays in the image.
ARG PIP_CERT=""

# pyproject names README.md as its readme.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY actiontrain ./actiontrain
# Not editable, no extras; its dependencies are installed in the runtime stage.
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /dist .

# ---- runtime ----
FROM ${PYTHON_IMAGE} AS runtime

# FFmpeg's shared libraries, which torchcodec loads at run time (PyAV brings its own).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libavcodec59 libavdevice59 libavfilter8 libavformat59 libavutil57 libswresample4 libswscale6 \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric UID/GID, so a pod's runAsUser/runAsNonRoot can be checked against it. Its home
# is /tmp and the cache folder is writable for `docker run`: in a pod the root filesystem is
# read-only, and /tmp and the cache are the emptyDir mounts where it can write.
RUN groupadd --system --gid 10001 actiontrain \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin actiontrain \
    && install -d -o 10001 -g 10001 /var/cache/actiontrain

# torch and torchvision load only as a matching pair: the same pins as scripts/setup-env.sh.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
# Empty: PyPI (CUDA wheels). https://download.pytorch.org/whl/cpu gives a CPU-only image.
ARG TORCH_INDEX_URL=""
# As in the wheel stage.
ARG PIP_CERT=""

ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# Python 3.11's bundled pip gives up on the s3fs/aiobotocore/botocore pins that pip 25 resolves.
# (hadolint cannot see the pins through the build arguments.)
# hadolint ignore=DL3013
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir "pip>=25,<27" \
    && pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

# The runtime dependencies of pyproject's [project] table (no test or demo extras). The torch pair
# installed above satisfies their torch/torchvision ranges and stays.
COPY pyproject.toml /tmp/actiontrain/
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/actiontrain/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/actiontrain/requirements.txt \
    && pip install --no-cache-dir -r /tmp/actiontrain/requirements.txt \
    && rm -rf /tmp/actiontrain

# The package itself; pip check: the layer above installed every dependency it declares.
COPY --from=wheel /dist/ /tmp/dist/
RUN pip install --no-cache-dir --no-deps /tmp/dist/*.whl \
    && rm -rf /tmp/dist \
    && pip check \
    && python -c "import actiontrain.cli, actiontrain.launch.rendezvous"

# Fails the build, not the first training pod, when torchcodec finds no FFmpeg it can load.
RUN python -c "import sys, torchcodec; sys.exit(torchcodec.ffmpeg_major_version is None)"

# HOME on /tmp, writable in a pod too: libraries write under ~ (OpenVINO's telemetry its consent
# file at every export, fontconfig its cache when matplotlib plots, torch.hub its downloads).
# MPLCONFIGDIR: matplotlib's cache on the writable /tmp. NVIDIA_DRIVER_CAPABILITIES: the container
# toolkit mounts the CUDA driver and nvidia-smi. TORCH_DISABLE_SHARE_RDZV_TCP_STORE: a fresh
# rendezvous store for every torchrun restart round (pytorch/pytorch#135712; see the README).
ENV PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    ACTIONTRAIN_CACHE_DIR=/var/cache/actiontrain \
    MPLCONFIGDIR=/tmp/matplotlib \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1

LABEL org.opencontainers.image.title="actiontrain" \
      org.opencontainers.image.description="Elastic X3D action-classification training with torchrun" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

USER 10001:10001
WORKDIR /tmp

ENTRYPOINT ["actiontrain"]
CMD ["--help"]
