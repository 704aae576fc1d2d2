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

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a virtual environment with torch and the package, copied whole into the runtime ----
FROM ${PYTHON_IMAGE} AS builder

# torch and torchvision load only as a matching pair: the same pins as scripts/setup-env.sh.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
# Empty: PyPI (CUDA wheels). https://download.pytorch.org/whl/cpu gives a CPU-only image.
ARG TORCH_INDEX_URL=""

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Python 3.11's bundled pip gives up on the s3fs/aiobotocore/botocore pins that pip 25 resolves.
# Then torch, in its own layer: it is most of the image and changes least often. (hadolint cannot
# see the pins through the build arguments.)
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "pip>=25,<27" \
    && pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

# Only what building the package needs (pyproject names README.md as its readme).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY actiontrain ./actiontrain
# Not editable, no extras: the runtime dependencies of pyproject's [project] table. The torch
# pair installed above satisfies its torch/torchvision ranges and stays.
RUN pip install --no-cache-dir . \
    && python -c "import actiontrain.cli, actiontrain.launch.rendezvous"

# ---- runtime ----
FROM ${PYTHON_IMAGE} AS runtime

# FFmpeg's shared libraries, which torchcodec loads at run time (PyAV brings its own).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libavcodec59 libavdevice59 libavfilter8 libavformat59 libavutil57 libswresample4 libswscale6 \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric UID/GID, so a pod's runAsUser/runAsNonRoot can be checked against it. Its home
# and the cache folder are writable for `docker run`; in a pod the root filesystem is read-only
# and /tmp and the cache are emptyDir mounts.
RUN groupadd --system --gid 10001 actiontrain \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/actiontrain --create-home \
        --shell /usr/sbin/nologin actiontrain \
    && install -d -o 10001 -g 10001 /var/cache/actiontrain

COPY --from=builder /opt/venv /opt/venv

# Fails the build, not the first training pod, when torchcodec finds no FFmpeg it can load.
RUN /opt/venv/bin/python -c "import sys, torchcodec; sys.exit(torchcodec.ffmpeg_major_version is None)"

# MPLCONFIGDIR: matplotlib's cache on the writable /tmp. NVIDIA_DRIVER_CAPABILITIES: the container
# toolkit mounts the CUDA driver and nvidia-smi. TORCH_DISABLE_SHARE_RDZV_TCP_STORE: a fresh
# rendezvous store for every torchrun restart round (pytorch/pytorch#135712; see the README).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/actiontrain \
    ACTIONTRAIN_CACHE_DIR=/var/cache/actiontrain \
    MPLCONFIGDIR=/tmp/matplotlib \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1

LABEL org.opencontainers.image.title="actiontrain" \
      org.opencontainers.image.description="Elastic X3D action-classification training with torchrun" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

USER 10001:10001
WORKDIR /home/actiontrain

ENTRYPOINT ["actiontrain"]
CMD ["--help"]
