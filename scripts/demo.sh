#!/usr/bin/env bash
# Runs the main job on embedded defaults: an S3 server on loopback, a generated sample dataset.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh demo
exec .venv/bin/actiontrain demo "$@"
