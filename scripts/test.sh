#!/usr/bin/env bash
# Installs everything the tests need and runs the whole suite (unit and end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh test
exec .venv/bin/python -m pytest "$@"
