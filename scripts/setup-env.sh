#!/usr/bin/env bash
# Creates .venv with actiontrain and the given extras (e.g. "test" or "demo").
# Idempotent: a second run only installs what changed. Needs root for apt (FFmpeg's shared
# libraries, which torchcodec loads); PyPI must be reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"

if ! ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so'; then
  echo "[setup] installing FFmpeg shared libraries (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi

# The pod-level chart test gives each emulated pod its own network namespace (iproute2's ip netns).
if [ "$extras" = "test" ] && ! command -v ip >/dev/null 2>&1; then
  echo "[setup] installing iproute2 (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
# Python 3.11's bundled pip (23.x) gives up on the s3fs/aiobotocore/botocore pins that a
# current pip resolves at once.
"${pip[@]}" install --upgrade "pip>=25"
# torch/torchvision first and pinned: this pair loads together (a newer torchvision from PyPI
# does not load beside an older torch); on this machine kind pip takes them from local wheels.
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing torch and torchvision"
  "${pip[@]}" install "torch==2.14.1" "torchvision==0.29.1"
fi
target="."
[ -n "$extras" ] && target=".[${extras}]"
echo "[setup] installing actiontrain${extras:+[$extras]}"
# This machine kind's pip config lists local wheel folders; filter its noise, keep its status.
"${pip[@]}" install -e "$target" 2> >(grep -v "is ignored: it is neither" >&2)
.venv/bin/python -c "import actiontrain"
