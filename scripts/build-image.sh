#!/usr/bin/env bash
# Builds the actiontrain image with podman from this checkout; prints its size and the build time.
#
#   bash scripts/build-image.sh [PODMAN-BUILD-OPTION...]   # e.g. --build-arg TORCH_INDEX_URL=URL
#
# IMAGE: the tag (default localhost/actiontrain:VERSION, VERSION from pyproject.toml).
# PYTHON_IMAGE: the base. Default: python:3.11-slim-bookworm when it is here or can be pulled,
#   else the stand-in that scripts/base-image.sh builds from Debian packages (no registry needed).
# PIP_CERT: a CA bundle for the build's pip, for a network whose TLS proxy re-signs PyPI's
#   certificates (default: the one this machine's pip is configured with, if any).
# Installs podman, runc and debootstrap with apt when one is missing. Exits 3, with the reason on
# the last line, when this machine cannot run containers at all.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/scripts/containers.conf}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)"
image="${IMAGE:-localhost/actiontrain:$version}"
official=docker.io/library/python:3.11-slim-bookworm
standin=localhost/actiontrain-python:3.11-slim-bookworm
started=$SECONDS

cannot() {
  echo "cannot run containers here: $*" >&2
  exit 3
}

missing=()
for tool in podman runc debootstrap; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    cannot "${missing[*]} not installed, and installing needs root and apt-get"
  fi
  echo "[image] installing ${missing[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Can a container start at all? One whose root filesystem is /bin/true and its libraries.
probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
# shellcheck disable=SC2046 # one word per library path
cp --parents /bin/true $(ldd /bin/true | grep -o '/[^ ]*') "$probe"
if ! failure="$(podman run --rm --network none --rootfs "$probe" /bin/true 2>&1)"; then
  cannot "podman run fails: $(tail -n 1 <<<"$failure")"
fi

base="${PYTHON_IMAGE:-}"
if [ -z "$base" ]; then
  if podman image exists "$official"; then
    base="$official"
  elif podman image exists "$standin"; then
    base="$standin"
  elif podman pull -q "$official" >/dev/null 2>&1; then
    base="$official"
  else
    echo "[image] $official cannot be pulled: building a stand-in from Debian packages"
    base="$(bash scripts/base-image.sh "$standin")"
  fi
fi

volumes=()
# The CA bundle this machine's pip trusts (PIP_CERT, or pip's configuration), in place of the
# image's own during the build: PyPI may be reached through a TLS-inspecting proxy.
ca="${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}"
if [ -n "$ca" ] && [ -f "$ca" ]; then
  volumes+=(-v "$(realpath "$ca"):/etc/ssl/certs/ca-certificates.crt:ro")
  set -- --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$@"
fi

echo "[image] building $image on $base"
podman build --network host "${volumes[@]}" --build-arg PYTHON_IMAGE="$base" -t "$image" "$@" .
size="$(podman image inspect --format '{{.Size}}' "$image")"
echo "[image] $image: $((size / 1000000)) MB, built in $((SECONDS - started)) s"
