#!/usr/bin/env bash
# Builds a local stand-in for python:3.11-slim-bookworm from Debian packages, for a machine that
# reaches Debian's apt mirror but no container registry. Prints the image's name.
#
#   bash scripts/base-image.sh [NAME]     # default localhost/actiontrain-python:3.11-slim-bookworm
#
# It has what the Dockerfile relies on in the official image: Debian bookworm slim (apt with the
# same sources; no docs, man pages or locales, and dpkg told to skip them in later installs too),
# Python 3.11 at /usr/local/bin/python3.11 with python and python3 links, pip at /usr/local/bin/pip,
# venv, ca-certificates, netbase, tzdata, LANG=C.UTF-8, /usr/local/bin first on PATH, and pip free
# to install anywhere (no EXTERNALLY-MANAGED marker). It differs in one way: Python is Debian's
# 3.11.2 (/usr/bin/python3.11, libpython3.11 in /usr/lib), not one built from source into
# /usr/local. Needs root, debootstrap and podman (scripts/build-image.sh installs them).
set -euo pipefail
name="${1:-localhost/actiontrain-python:3.11-slim-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$(cd "$(dirname "$0")" && pwd)/containers.conf}"

if podman image exists "$name"; then
  echo "$name"
  exit 0
fi

work="$(mktemp -d /var/tmp/actiontrain-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

echo "[base] debootstrap --variant=minbase bookworm ($mirror)" >&2
if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
  tail -20 "$work/debootstrap.log" >&2
  exit 1
fi

# debian:bookworm-slim's sources (bookworm, bookworm-updates, bookworm-security), so that the
# Dockerfile's apt-get gets the security updates of the FFmpeg libraries too.
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# Slim: what debian:bookworm-slim leaves out, now and in every later apt-get install.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
find "$rootfs/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda} "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log

echo "[base] podman import" >&2
tar -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - "$name-rootfs" >/dev/null

# Python where the official image has it; pip (pip, pip3, pip3.11 in /usr/local/bin) from the wheel
# Debian ships for ensurepip, installed by itself (Debian's ensurepip refuses the system Python). The official image's ENV: PATH as it spells it, LANG.
cat >"$work/Containerfile" <<EOF
FROM $name-rootfs
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    LANG=C.UTF-8
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
        ca-certificates netbase tzdata python3.11 python3.11-venv \\
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \\
    && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \\
    && ln -s /usr/bin/python3.11 /usr/local/bin/python3.11 \\
    && ln -s python3.11 /usr/local/bin/python3 \\
    && ln -s python3 /usr/local/bin/python \\
    && PYTHONPATH="\$(echo /usr/share/python-wheels/pip-*.whl)" python3.11 -m pip install --no-index \\
        --no-cache-dir --disable-pip-version-check --root-user-action=ignore /usr/share/python-wheels/pip-*.whl \\
    && find /usr/local /usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} + \\
    && pip --version && python -c "import ensurepip, sqlite3, ssl, venv"
CMD ["python3"]
EOF
echo "[base] python3.11 and pip" >&2
podman build --network host -t "$name" -f "$work/Containerfile" "$work" >&2
podman untag "$name-rootfs"
echo "$name"
