"""Pods as podman containers of the real image: what a rendered pod asks the kubelet for, as podman options.

The counterpart of pods.py for the image itself. ``run_options`` turns a pod's security context
(user, groups, fsGroup, read-only root filesystem, capabilities, privilege escalation, seccomp),
its volumes (from ``pods.pod_mounts``: the recipe ConfigMap read-only, emptyDirs as folders made
writable for fsGroup as the kubelet makes them, a memory emptyDir as a tmpfs of its size limit) and
its limits into podman options. ``PodmanNetwork`` gives each pod its hostname and an address of its
own on a podman bridge network, and the job's DNS names in its hosts file; the environment goes in
through a file, so no value appears on a command line. ``build_image`` runs scripts/build-image.sh.

Left out: the pod's other containers (there are none), probes, the cluster's DNS server (a hosts
file written when the pod starts holds every pod of the job, so a pod never waits for a record).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pods import CLUSTER_DOMAIN, Mount

__all__ = [
    "BUILD_SCRIPT",
    "Container",
    "ContainersUnavailable",
    "PodmanNetwork",
    "build_image",
    "podman",
    "run_options",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-image.sh"
CONTAINERS_CONF = REPO_ROOT / "scripts" / "containers.conf"
"""podman's settings for this machine kind (runc, explicit ulimits), shared with the build scripts."""
UNAVAILABLE = 3
"""build-image.sh's exit status when this machine cannot run containers at all."""

_QUANTITY_SUFFIXES = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9}


class ContainersUnavailable(Exception):
    """This machine cannot build or run containers (no podman and no way to install it, or no runtime)."""


def _environment() -> dict[str, str]:
    """This process's environment with the project's containers.conf, unless CONTAINERS_CONF names another."""
    return {"CONTAINERS_CONF": str(CONTAINERS_CONF), **os.environ}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs ``podman ARGS`` (with the project's containers.conf); returns the finished process."""
    result = subprocess.run(
        ["podman", *args],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])} ... failed: {result.stderr.strip()[-2000:]}")
    return result


def build_image(image: str, log: Path, *, timeout: float) -> None:
    """Builds ``image`` with scripts/build-image.sh, its output in ``log`` (podman's layer cache makes a rebuild quick).

    Raises:
        ContainersUnavailable: the script says this machine cannot run containers (its last line).
        AssertionError: the build failed; the message ends with the tail of its log.
    """
    with open(log, "w", encoding="utf-8") as output:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT)],
            env={**_environment(), "IMAGE": image},
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    if result.returncode == UNAVAILABLE:
        raise ContainersUnavailable(lines[-1] if lines else "scripts/build-image.sh exited 3")
    assert result.returncode == 0, f"{BUILD_SCRIPT.name} exited {result.returncode}:\n" + "\n".join(lines[-60:])


def _bytes(quantity: str) -> int:
    """A Kubernetes quantity (``4Gi``, ``512M``, ``1000``) in bytes."""
    for suffix, factor in _QUANTITY_SUFFIXES.items():
        if quantity.endswith(suffix):
            return int(float(quantity.removesuffix(suffix)) * factor)
    return int(quantity)


def run_options(pod_spec: dict[str, Any], container: dict[str, Any], mounts: Sequence[Mount]) -> list[str]:
    """The ``podman run`` options that give ``container`` what the kubelet gives it in a pod of ``pod_spec``.

    Args:
        pod_spec: The pod's spec (its securityContext).
        container: The container spec (its securityContext and resources).
        mounts: Its volume mounts, from ``pods.pod_mounts`` with nothing skipped. The emptyDir
            folders are made writable for the pod's fsGroup here, as the kubelet makes them.
    """
    pod_security = pod_spec.get("securityContext", {})
    security = {**pod_security, **container.get("securityContext", {})}
    options: list[str] = []
    user, group = security.get("runAsUser"), security.get("runAsGroup")
    if security.get("runAsNonRoot"):
        # The kubelet checks the image's user when runAsUser is unset; not emulated.
        assert user is not None, "runAsNonRoot without runAsUser: the image's user would be checked"
        assert user != 0, "runAsNonRoot with runAsUser 0: the kubelet refuses to start it"
    if user is not None:
        options += ["--user", f"{user}:{group}" if group is not None else str(user)]
    fs_group = pod_security.get("fsGroup")
    if fs_group is not None:
        options += ["--group-add", str(fs_group)]
    if security.get("readOnlyRootFilesystem"):
        # Without --read-only-tmpfs=false podman would add writable /tmp, /var/tmp and /run.
        options += ["--read-only", "--read-only-tmpfs=false"]
    if security.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    capabilities = security.get("capabilities", {})
    options += [option for name in capabilities.get("drop", []) for option in ("--cap-drop", name)]
    options += [option for name in capabilities.get("add", []) for option in ("--cap-add", name)]
    seccomp = security.get("seccompProfile", {}).get("type", "RuntimeDefault")
    assert seccomp in ("RuntimeDefault", "Unconfined"), f"seccomp profile {seccomp} is not emulated"
    if seccomp == "Unconfined":
        options += ["--security-opt", "seccomp=unconfined"]  # RuntimeDefault: podman's own profile
    limits = container.get("resources", {}).get("limits", {})
    if "memory" in limits:
        options += ["--memory", str(_bytes(str(limits["memory"])))]
    if "cpu" in limits:
        cpu = str(limits["cpu"])
        options += ["--cpus", str(int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu))]
    for mount in mounts:
        if mount.source is None:  # a memory-backed emptyDir
            size = f",size={_bytes(mount.size)}" if mount.size else ""
            options += ["--tmpfs", f"{mount.target}:rw,exec,nosuid,nodev,mode=1777{size}"]
            continue
        if not mount.read_only and fs_group is not None:
            # An emptyDir: group-owned by fsGroup, group-writable, setgid (kubelet's SetVolumeOwnership).
            os.chown(mount.source, -1, fs_group)
            mount.source.chmod(0o2777)
        options += ["--volume", f"{mount.source}:{mount.target}:{'ro' if mount.read_only else 'rw'}"]
    return options


@dataclass
class Container:
    """One started pod: its container's name, hostname, address, log and the attached ``podman run``."""

    name: str
    hostname: str
    address: str
    log: Path
    process: subprocess.Popen

    def tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of its log, without C++ stack frames."""
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        kept = [line for line in text.splitlines() if not line.startswith(("frame #", "<omitting python frames>"))]
        return "\n".join(kept[-lines:])

    def exited(self) -> bool:
        return self.process.poll() is not None


@dataclass
class PodmanNetwork:
    """A podman bridge network for one job's pods; use as a context manager.

    Entering it creates the network and runs one container on it, which makes podman create the
    bridge and put the gateway address on it: a server on this machine (the S3 server) listens
    there, as a MinIO Service would in the cluster. Each pod gets a fixed address, so that the
    hosts file of a pod started first already holds the addresses of the others.
    """

    directory: Path
    image: str
    namespace: str
    subdomain: str
    name: str = field(default_factory=lambda: f"actiontrain-{os.urandom(3).hex()}")
    containers: list[Container] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._addresses: dict[str, str] = {}
        self._created = False

    def __enter__(self) -> PodmanNetwork:
        self.directory.mkdir(parents=True, exist_ok=True)
        podman("network", "create", self.name)
        self._created = True
        (info,) = json.loads(podman("network", "inspect", self.name).stdout)
        (subnet,) = info["subnets"]
        self.gateway = subnet["gateway"]
        self._free = (str(address) for address in ipaddress.ip_network(subnet["subnet"]).hosts())
        podman("run", "--rm", "--pull", "never", "--network", self.name, "--entrypoint", "true", self.image)
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def fqdn(self, hostname: str) -> str:
        return f"{hostname}.{self.subdomain}.{self.namespace}.svc.{CLUSTER_DOMAIN}"

    def address(self, hostname: str) -> str:
        """The address of the pod named ``hostname`` (the same on every call)."""
        if hostname not in self._addresses:
            self._addresses[hostname] = next(address for address in self._free if address != self.gateway)
        return self._addresses[hostname]

    def start(
        self,
        hostname: str,
        *,
        entrypoint: Sequence[str] | None,
        args: Sequence[str],
        env: dict[str, str],
        options: Sequence[str],
        records: Iterable[str],
    ) -> Container:
        """Starts a pod's container from ``self.image`` with exactly ``options`` and ``env``.

        Args:
            hostname: The pod's hostname.
            entrypoint: The container's ``command`` (replaces the image's ENTRYPOINT), or None.
            args: Its ``args`` (replace the image's CMD).
            env: Its environment (the image's ENV is added by podman, as by the container runtime).
            options: From ``run_options``.
            records: Hostnames of the job's pods whose headless-Service names its hosts file holds.
        """
        name = f"{self.name}-{hostname}"
        env_file = self.directory / f"{hostname}.env"
        env_file.touch(mode=0o600)
        env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()), encoding="utf-8")
        hosts = [
            option
            for pod in records
            for option in (
                "--add-host",
                f"{self.fqdn(pod)}:{self.address(pod)}",
                "--add-host",
                f"{pod}.{self.subdomain}.{self.namespace}.svc:{self.address(pod)}",
            )
        ]
        search = [f"{self.namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
        command = [
            "podman",
            "run",
            "--rm",
            "--pull",
            "never",
            "--name",
            name,
            "--network",
            self.name,
            "--ip",
            self.address(hostname),
            "--hostname",
            hostname,
            *hosts,
            *[option for domain in search for option in ("--dns-search", domain)],
            "--env-file",
            str(env_file),
            *options,
            *(["--entrypoint", json.dumps(list(entrypoint))] if entrypoint is not None else []),
            self.image,
            *args,
        ]
        log = self.directory / f"{hostname}.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                command,
                env=_environment(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        container = Container(name=name, hostname=hostname, address=self.address(hostname), log=log, process=process)
        self.containers.append(container)
        return container

    def close(self) -> None:
        """Removes every container and the network (and with it the bridge); safe to call twice."""
        for container in self.containers:
            podman("rm", "--force", "--time", "0", container.name, check=False)
            try:
                container.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                container.process.kill()
        if self._created:
            podman("network", "rm", "--force", self.name, check=False)
            self._created = False
