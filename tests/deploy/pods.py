"""Pods as local processes: one network namespace per pod on a bridge, the job's DNS names in hosts files.

What the cluster does for a pod, done as root with iproute2 and util-linux so that a rendered pod
template can run here: its own address (a veth pair from its namespace into a bridge), its hostname
(a UTS namespace), the DNS names the headless Service publishes for the job's pods (the hosts file
``ip netns exec`` mounts over /etc/hosts, rewritten as pods come and go), its volumes (mounts in the
mount namespace ``ip netns exec`` makes: a ConfigMap's files read-only, emptyDirs, a memory-backed
/dev/shm) and its container's command with exactly the container's environment.

Left out: the image's filesystem (the pod sees this machine's, with the venv standing in for the
image's), the read-only root filesystem, the /tmp emptyDir (its mount would hide the test's own
directories under /tmp), the non-root user and resource limits.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CLUSTER_DOMAIN", "Mount", "Pod", "PodNetwork", "netns_unavailable", "pod_mounts"]

CLUSTER_DOMAIN = "cluster.local"
NETNS_ETC = Path("/etc/netns")
IP = shutil.which("ip") or "/usr/sbin/ip"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"


def _ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """Runs ``ip ARGS`` (in ``netns`` when given); returns its output."""
    command = [IP, *(["netns", "exec", netns, IP] if netns else []), *args]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed: {result.stderr.strip()}")
    return result.stdout


def netns_unavailable() -> str | None:
    """What pods lack to get network namespaces here (root, iproute2, unshare), or None."""
    if os.geteuid() != 0:
        return "root (network namespaces need it)"
    if not (os.path.exists(IP) and os.path.exists(UNSHARE)):
        return "iproute2's ip and util-linux's unshare"
    probe = f"at-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as error:
        return f"a working `ip netns` ({error})"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass(frozen=True)
class Mount:
    """One volume mount of a pod: ``source`` (a folder or file here) at ``target``; no source: a tmpfs."""

    target: str
    source: Path | None = None
    read_only: bool = False
    size: str = ""
    """tmpfs size (``sizeLimit`` of a memory-backed emptyDir), e.g. ``4Gi``."""

    def commands(self) -> list[str]:
        target = shlex.quote(self.target)
        if self.source is None:
            size = f"-o size={self.size.removesuffix('i')} " if self.size else ""
            return [f"mount -t tmpfs {size}tmpfs {target}"]
        bind = [f"mount --bind {shlex.quote(str(self.source))} {target}"]
        return bind + ([f"mount -o remount,bind,ro {target}"] if self.read_only else [])


def pod_mounts(
    pod_spec: dict[str, Any],
    container: dict[str, Any],
    directory: Path,
    *,
    configmaps: dict[str, dict[str, str]],
    skip: tuple[str, ...] = ("/tmp",),
) -> list[Mount]:
    """The container's volume mounts, with each volume made under ``directory`` as the kubelet makes it.

    Args:
        pod_spec: The pod's spec (its ``volumes``).
        container: The container spec (its ``volumeMounts``).
        directory: Where this pod's volumes go (one folder per volume).
        configmaps: The data of the ConfigMaps the volumes name, by ConfigMap name.
        skip: Mount paths left as they are here.

    Returns:
        The mounts, in the container's order.
    """
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
    mounts = []
    for volume_mount in container.get("volumeMounts", []):
        target = volume_mount["mountPath"]
        if target in skip:
            continue
        volume = volumes[volume_mount["name"]]
        source = directory / volume["name"]
        if "configMap" in volume:
            data = configmaps[volume["configMap"]["name"]]
            items = volume["configMap"].get("items") or [{"key": key, "path": key} for key in data]
            source.mkdir(parents=True, exist_ok=True)
            for item in items:
                (source / item["path"]).write_text(data[item["key"]], encoding="utf-8")
            mounts.append(Mount(target, source, read_only=bool(volume_mount.get("readOnly"))))
        elif volume.get("emptyDir", {}).get("medium") == "Memory":
            mounts.append(Mount(target, size=str(volume["emptyDir"].get("sizeLimit", ""))))
        elif "emptyDir" in volume:
            source.mkdir(parents=True, exist_ok=True)
            mounts.append(Mount(target, source))
        else:
            raise AssertionError(f"volume {volume['name']}: only configMap and emptyDir are emulated")
    return mounts


@dataclass
class Pod:
    """One started pod: its namespace, address, log and the process the container's command became."""

    name: str
    """Its hostname, e.g. ``demo-actiontrain-1``."""
    netns: str
    address: str
    veth: str
    log: Path
    process: subprocess.Popen | None = None
    alive: bool = True

    def tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of its log, without C++ stack frames."""
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        kept = [line for line in text.splitlines() if not line.startswith(("frame #", "<omitting python frames>"))]
        return "\n".join(kept[-lines:])

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)


@dataclass
class PodNetwork:
    """A bridge in this (root) namespace with one namespace per pod; use as a context manager.

    Every pod gets a fresh address, as a replacement pod does in a cluster. The hosts file of every
    pod holds the kubelet's line for the pod itself (``ADDRESS FQDN HOSTNAME``) and the records the
    headless Service ``subdomain`` publishes for the pods alive now: ``HOST.SUBDOMAIN.NS.svc.DOMAIN``
    and ``HOST.SUBDOMAIN.NS.svc``, the name the search list turns into the former (a hosts file
    has no search list). Unknown names fail at once (no name server), as NXDOMAIN would.
    """

    directory: Path
    namespace: str
    subdomain: str
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    pods: list[Pod] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bridge = f"atbr{self.run_id}"
        self.subnet = _free_subnet()
        hosts = self.subnet.hosts()
        self.gateway = str(next(hosts))
        self._addresses = hosts
        self._started = False

    @property
    def prefix(self) -> str:
        return f"at-pod-{self.run_id}"

    def __enter__(self) -> PodNetwork:
        self.directory.mkdir(parents=True, exist_ok=True)
        _ip("link", "add", self.bridge, "type", "bridge")
        self._started = True
        _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def fqdn(self, hostname: str) -> str:
        return f"{hostname}.{self.subdomain}.{self.namespace}.svc.{CLUSTER_DOMAIN}"

    def start(
        self, hostname: str, argv: list[str], *, env: dict[str, str], cwd: Path, mounts: Sequence[Mount] = ()
    ) -> Pod:
        """Starts a pod: its namespace and address, then ``argv`` in it with exactly ``env``.

        The process is started as ``ip netns exec NS unshare --uts sh -c SETUP`` where SETUP sets
        the hostname, makes the mounts and execs ``argv``, so the pod's process id is the
        container's main process (a shell that execs torchrun stays that process).
        """
        assert not any(pod.alive and pod.name == hostname for pod in self.pods), f"{hostname} is still running"
        serial = len(self.pods)
        netns = f"{self.prefix}-{serial}"
        veth, peer = f"at{self.run_id}v{serial}", f"at{self.run_id}p{serial}"
        address = str(next(self._addresses))
        log = self.directory / f"{hostname}.{serial}.log"
        pod = Pod(name=hostname, netns=netns, address=address, veth=veth, log=log)
        self.pods.append(pod)  # from here on, close() removes what was made
        _ip("netns", "add", netns)
        etc = NETNS_ETC / netns
        etc.mkdir(parents=True, exist_ok=True)
        # Fails at once for any name the hosts file lacks, instead of waiting on an unreachable server.
        (etc / "resolv.conf").write_text(
            f"search {self.namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n"
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
        )
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", netns)
        _ip("link", "set", peer, "name", "eth0", netns=netns)
        _ip("addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0", netns=netns)
        _ip("link", "set", "eth0", "up", netns=netns)
        _ip("link", "set", "lo", "up", netns=netns)
        _ip("route", "add", "default", "via", self.gateway, netns=netns)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        self._publish()
        setup = ["set -e", f"hostname {shlex.quote(hostname)}"]
        for mount in mounts:
            setup += mount.commands()
        setup.append('exec "$@"')
        command = [IP, "netns", "exec", netns, UNSHARE, "--uts", "--", "/bin/sh", "-c", "\n".join(setup), "pod"]
        with open(log, "wb") as output:
            pod.process = subprocess.Popen(
                [*command, *argv], env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        return pod

    def kill(self, pod: Pod, *, timeout: float = 60) -> None:
        """SIGKILLs every process in the pod's namespace (torchrun starts its workers in sessions of
        their own, so the process group is not enough), then takes the pod off the network."""
        deadline = time.monotonic() + timeout
        while pids := self._pids(pod):
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"pod {pod.name}: processes {pids} outlived SIGKILL for {timeout:.0f} s")
            time.sleep(0.1)
        if pod.process is not None:
            pod.process.wait(timeout=timeout)
        self._remove(pod)

    def close(self) -> None:
        """Kills every pod and removes namespaces, links and hosts files; safe to call twice."""
        errors = []
        for pod in self.pods:
            try:
                self.kill(pod)
            except Exception as error:  # noqa: BLE001 - clean up the rest, then report
                errors.append(error)
        if self._started:
            _ip("link", "del", self.bridge, check=False)
            self._started = False
        try:
            NETNS_ETC.rmdir()  # only when empty: other runs may be using it
        except OSError:
            pass
        if errors:
            raise errors[0]

    def _pids(self, pod: Pod) -> list[int]:
        if not pod.alive:
            return []
        pids = [int(pid) for pid in _ip("netns", "pids", pod.netns, check=False).split()]
        if pod.process is not None and pod.process.poll() is None:
            pids.append(pod.process.pid)  # `ip netns exec` before it entered the namespace
        return pids

    def _remove(self, pod: Pod) -> None:
        if not pod.alive:
            return
        pod.alive = False
        _ip("netns", "del", pod.netns, check=False)
        _ip("link", "del", pod.veth, check=False)  # gone with the namespace already, as a rule
        shutil.rmtree(NETNS_ETC / pod.netns, ignore_errors=True)
        self._publish()

    def _publish(self) -> None:
        """Rewrites every live pod's hosts file in place (``ip netns exec`` bind-mounted that file)."""
        alive = [pod for pod in self.pods if pod.alive]
        records = [
            f"{pod.address}\t{self.fqdn(pod.name)}\t{pod.name}.{self.subdomain}.{self.namespace}.svc" for pod in alive
        ]
        for pod in alive:
            text = "\n".join(
                [
                    "# Kubernetes-managed hosts file (emulated).",
                    "127.0.0.1\tlocalhost",
                    "::1\tlocalhost ip6-localhost ip6-loopback",
                    f"{pod.address}\t{self.fqdn(pod.name)}\t{pod.name}",
                    "# The headless Service's DNS records.",
                    *records,
                    "",
                ]
            )
            with open(NETNS_ETC / pod.netns / "hosts", "w", encoding="utf-8") as file:
                file.write(text)


def _free_subnet() -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that no address or route here overlaps."""
    used = []
    for word in (_ip("-4", "route", "show", "table", "all") + _ip("-4", "-o", "addr")).split():
        try:
            used.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            continue
    used = [network for network in used if network.prefixlen > 0]
    for _ in range(100):
        candidate = ipaddress.ip_network(f"10.{secrets.randbelow(56) + 200}.{secrets.randbelow(256)}.0/24")
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise RuntimeError("no free 10.x.y.0/24 subnet for the pod network")
