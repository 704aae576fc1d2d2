"""The chart's Job run pod by pod: each replica's container command in a network namespace of its own.

The pod template comes from rendering charts/actiontrain; each pod gets what the Job controller and
the kubelet would give it (index, hostname, downward-API and Secret environment, the recipe
ConfigMap at its mount path, an address of its own, the headless Service's DNS names) and the
container's command runs as it is, against a moto S3 server on the pod network. See pods.py for
what is emulated and what is not.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from capabilities import require
from kube import CHART_DIR, container_argv, container_environment, indexed_job_pod, pod_template, render_chart
from ledger_audit import assert_exactly_once
from pods import Pod, PodNetwork, netns_unavailable, pod_mounts
from s3_gate import S3Gate, uploading

from actiontrain import storage
from actiontrain.checkpoint import CheckpointManager
from actiontrain.data.synth import synthesize
from actiontrain.distributed import SHARED_STORE_SWITCH
from actiontrain.embedded_s3 import EmbeddedS3

pytestmark = pytest.mark.e2e

RELEASE, NAMESPACE = "demo", "ml"
JOB_UID = str(uuid.uuid4())
EPOCHS = 3
STEPS_PER_EPOCH = 3  # 12 training clips / (2 nodes x 1 process x batch 2)
HELD_STEP = STEPS_PER_EPOCH + 2
"""Mid-run, in epoch 1: node 1's pod is lost while node 0 saves this step's checkpoint."""
SECRET = "s3-credentials"
OVERRIDES = (
    f"train.epochs={EPOCHS}",
    "train.batch_size=2",
    "train.checkpoint_every=1",
    "train.eval_every=0",
    "train.log_every=1",
    "data.num_workers=0",
    "train.export=true",
)
VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Workload:
    """What the chart rendered that the pods need: the Job and the ConfigMaps' data by name."""

    job: dict[str, Any]
    configmaps: dict[str, dict[str, str]]


@dataclass
class Cluster:
    """The pod network and the S3 server on it."""

    network: PodNetwork
    s3: EmbeddedS3
    directory: Path
    data: str
    output: str
    ledger: Path

    def render(self, *, s3_endpoint: str | None = None, **extra: Any) -> Workload:
        """The chart with its CI cpu-smoke values, pointed at this S3 server (or ``s3_endpoint``
        in front of it) and made small (then ``extra``)."""
        values = yaml.safe_load((CHART_DIR / "ci" / "cpu-smoke-values.yaml").read_text())
        mountpoints = self.directory / "mountpoints"
        for name in ("recipe", "cache"):
            (mountpoints / name).mkdir(parents=True, exist_ok=True)
        values |= {
            "data": self.data,
            "output": self.output,
            # One gloo process per pod: two pods share this machine's two cores.
            "nprocPerNode": 1,
            "rendezvous": {"timeoutSeconds": 120},
            # Mount paths that exist here (the image's /etc/actiontrain and /var/cache do not).
            "recipePath": str(mountpoints / "recipe" / "recipe.yaml"),
            "cache": {"path": str(mountpoints / "cache")},
            "s3": {"endpointUrl": s3_endpoint or self.s3.endpoint, "region": "us-east-1", "existingSecret": SECRET},
            "overrides": [*OVERRIDES, f"train.sample_log={self.ledger}"],
            # torchrun's agent logs its rendezvous results at INFO; one thread per pod.
            "extraEnv": [{"name": "LOGLEVEL", "value": "INFO"}, {"name": "OMP_NUM_THREADS", "value": "1"}],
        } | extra
        rendered = render_chart(values, name=RELEASE, namespace=NAMESPACE)
        job, service = rendered.one("Job"), rendered.one("Service")
        assert pod_template(job)["spec"]["subdomain"] == service["metadata"]["name"] == self.network.subdomain
        configmaps = {obj["metadata"]["name"]: obj["data"] for obj in rendered.objects if obj["kind"] == "ConfigMap"}
        return Workload(job, configmaps)

    def start_pod(self, workload: Workload, index: int, *, argv: list[str] | None = None) -> Pod:
        """Pod ``index`` of the Job: its container's command (or ``argv``) with the pod's environment."""
        spec = pod_template(workload.job)["spec"]
        (container,) = spec["containers"]
        hostname, fields = indexed_job_pod(workload.job, index, uid=JOB_UID, namespace=NAMESPACE)
        keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        env = image_environment(self.directory / "home" / hostname) | container_environment(
            container, fields=fields, secrets={(SECRET, key): self.s3.env[key] for key in keys}
        )
        env["HOSTNAME"] = hostname  # set by the container runtime
        attempt = sum(pod.name == hostname for pod in self.network.pods)
        mounts = pod_mounts(
            spec, container, self.directory / "volumes" / f"{hostname}.{attempt}", configmaps=workload.configmaps
        )
        argv = argv or container_argv(container, env)
        return self.network.start(hostname, argv, env=env, cwd=Path(env["HOME"]), mounts=mounts)

    def logs(self) -> str:
        """The tail of every pod's log, for assertion messages."""
        return "\n".join(
            f"----- pod {pod.name} ({pod.netns}, {pod.address}, exit {pod.process and pod.process.poll()}) -----\n"
            f"{pod.tail()}"
            for pod in self.network.pods
        )


def image_environment(home: Path) -> dict[str, str]:
    """The image's ENV (see the Dockerfile) with this machine's venv in place of /opt/venv.

    The image's TORCH_DISABLE_SHARE_RDZV_TCP_STORE is left out on purpose: the pod's own
    environment, from the chart, must set it.
    """
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        # The checkout under test, as the image's /app: not whatever the venv has installed.
        "PYTHONPATH": str(REPO),
        "HOME": str(home),
        "MPLCONFIGDIR": str(home / ".matplotlib"),
    }


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    require(netns_unavailable(), what="running pods, each in its own network namespace,")
    job_name = render_chart({"data": "s3://d/x", "output": "s3://o/x"}, name=RELEASE).one("Job")["metadata"]["name"]
    # S3 on the bridge's address: the pods reach this machine there, as they would a MinIO Service.
    with (
        PodNetwork(tmp_path / "pods", namespace=NAMESPACE, subdomain=job_name) as network,
        EmbeddedS3(host=network.gateway, separate_process=True) as s3,
        s3.environment(),
    ):
        try:
            bucket = s3.create_bucket(f"pods-{network.run_id}")
            yield Cluster(network, s3, tmp_path, f"{bucket}/ucf", f"{bucket}/run", tmp_path / "ledger")
        finally:
            network.close()  # the pods go before their S3 server does


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}\n{cluster.logs()}"
        time.sleep(0.5)


def latest_step(output: str) -> int | None:
    storage.url_to_fs(output)[0].invalidate_cache()  # s3fs caches listings; the pods keep writing
    return CheckpointManager(output).latest_step()


def in_epoch(ledger: Path, epoch: int) -> bool:
    """Whether some process has logged a sample of ``epoch`` in the ledger."""
    return any(f"sample {epoch} " in path.read_text() for path in ledger.glob("*.log"))


def exited(pod: Pod) -> bool:
    return pod.process is not None and pod.process.poll() is not None


PROBE = """
import json, os, socket
host, _ = os.environ["ACTIONTRAIN_RDZV_ENDPOINT"].rsplit(":", 1)
cache = os.environ["ACTIONTRAIN_CACHE_DIR"]
open(os.path.join(cache, socket.gethostname()), "w").close()
shm = os.statvfs("/dev/shm")
print(json.dumps({
    "cache": os.listdir(cache),
    "shm_bytes": shm.f_blocks * shm.f_frsize,
    "hostname": socket.gethostname(),
    "fqdn": socket.getfqdn(),
    "own": socket.gethostbyname(socket.gethostname()),
    "endpoint": socket.gethostbyname(host),
    "recipe": open(os.environ["ACTIONTRAIN_RECIPE"]).read(),
    "recipe_writable": os.access(os.environ["ACTIONTRAIN_RECIPE"], os.W_OK),
    "env": dict(os.environ),
}))
"""


def test_each_pod_has_its_hostname_address_recipe_and_finds_node_zero_by_its_dns_name(cluster):
    workload = cluster.render()
    pods = [cluster.start_pod(workload, index, argv=["python", "-c", PROBE]) for index in (0, 1)]
    for pod in pods:
        assert pod.wait(timeout=60) == 0, cluster.logs()
    seen = [json.loads(pod.log.read_text().splitlines()[-1]) for pod in pods]
    for index, (pod, probe) in enumerate(zip(pods, seen, strict=True)):
        assert probe["hostname"] == pod.name == f"{cluster.network.subdomain}-{index}"
        assert probe["fqdn"] == cluster.network.fqdn(pod.name)  # the kubelet's hosts line
        assert probe["own"] == pod.address
        assert probe["endpoint"] == pods[0].address  # <job>-0.<service>.<namespace>.svc
        assert probe["recipe"] == next(iter(workload.configmaps.values()))["recipe.yaml"]
        assert not probe["recipe_writable"]  # mounted read-only, as the kubelet mounts a ConfigMap
        assert probe["cache"] == [pod.name]  # an emptyDir of its own
        assert probe["shm_bytes"] == 1 << 30  # shm.sizeLimit 1Gi in the CI values: a tmpfs that size
        env = probe["env"]
        assert env["ACTIONTRAIN_NODE_INDEX"] == str(index) and env["ACTIONTRAIN_RDZV_ID"] == JOB_UID
        assert env[SHARED_STORE_SWITCH] == "1"  # from the chart's pod environment, not the image's
        assert env["AWS_ENDPOINT_URL_S3"] == cluster.s3.endpoint and "AWS_ENDPOINT_URL" not in env
    assert pods[0].address != pods[1].address


def test_job_trains_from_s3_and_a_killed_pod_is_replaced_and_rejoins(cluster):
    # 3 classes x 6 videos: 12 training clips (split 1 keeps groups 2, 3, 5, 6 for training).
    synthesize(cluster.data, format="ucf101", num_classes=3, videos_per_class=6, num_frames=(12, 16))
    # The pods reach S3 through a gate that holds the upload of step 5's checkpoint: node 0 waits
    # in it and node 1 at the barrier after it, a known point at which to lose node 1.
    held_upload = uploading(f"/checkpoints/step-{HELD_STEP:08d}/state.pt")
    with S3Gate(cluster.s3.endpoint, hold=held_upload, host=cluster.network.gateway) as gate:
        workload = cluster.render(s3_endpoint=gate.endpoint)
        # The scheduler starts pods in any order: node 1 first waits for node 0's name and store.
        first = cluster.start_pod(workload, 1)
        node0 = cluster.start_pod(workload, 0)

        # Mid-run, after the checkpoints of epoch 0: node 1's pod is lost (node failure, OOM kill).
        wait_for(lambda: gate.held.is_set() or exited(node0), timeout=300, what=f"step {HELD_STEP}", cluster=cluster)
        assert not exited(node0) and not exited(first), cluster.logs()
        assert latest_step(cluster.output) == HELD_STEP - 1, cluster.logs()
        cluster.network.kill(first)
        assert first.process.returncode < 0, cluster.logs()  # SIGKILLed: the pod failed
        gate.release()  # node 0's checkpoint goes up; its barrier with node 1 fails
        # backoffLimitPerIndex with podReplacementPolicy Failed: a new pod, same index and hostname,
        # new address, once the old one is gone.
        replacement = cluster.start_pod(workload, 1)
        assert replacement.name == first.name and replacement.address != first.address

        wait_for(lambda: exited(node0), timeout=420, what="node 0 to finish", cluster=cluster)
        assert node0.process.returncode == 0, f"node 0 failed\n{cluster.logs()}"
        wait_for(lambda: exited(replacement), timeout=120, what="the replacement to finish", cluster=cluster)
        assert replacement.process.returncode == 0, f"the replacement of node 1 failed\n{cluster.logs()}"
    assert gate.errors == []

    log0, log1, log_replacement = (pod.log.read_text() for pod in (node0, first, replacement))
    # Both pods trained together, before the kill and after the replacement rejoined.
    assert " is up after " in log1, cluster.logs()  # the launcher's wait for node 0
    for log in (log1, log_replacement):
        assert "group_rank=1" in log and "group_world_size=2" in log, cluster.logs()
    assert log0.count("world size 2, batch 2 per process") >= 2, cluster.logs()
    assert "(was world size 2, now 2)" in log0, cluster.logs()

    # Checkpoints up to the last step, and the export, in S3.
    assert latest_step(cluster.output) == EPOCHS * STEPS_PER_EPOCH, cluster.logs()
    for name in ("manifest.json", "model.xml", "model.bin"):
        assert storage.exists(storage.join(cluster.output, "export", name)), f"no export/{name}\n{cluster.logs()}"


def test_losing_node_zero_does_not_fail_the_other_pods(cluster):
    synthesize(cluster.data, format="ucf101", num_classes=3, videos_per_class=6, num_frames=(12, 16))
    workload = cluster.render()
    node0, node1 = cluster.start_pod(workload, 0), cluster.start_pod(workload, 1)
    wait_for(lambda: in_epoch(cluster.ledger, 1) or exited(node0), timeout=300, what="epoch 1", cluster=cluster)
    assert not exited(node0) and not exited(node1), cluster.logs()

    # The rendezvous host's pod is lost, and its store with it: node 1's launch fails, and its
    # launcher waits, in the same container, for node 0's replacement.
    cluster.network.kill(node0)
    wait_for(
        lambda: "rejoining, attempt 1" in node1.log.read_text() or exited(node1),
        timeout=300,
        what="node 1 to rejoin",
        cluster=cluster,
    )
    assert not exited(node1), f"node 1's pod failed with node 0\n{cluster.logs()}"
    replacement = cluster.start_pod(workload, 0)

    wait_for(lambda: exited(replacement), timeout=420, what="node 0's replacement to finish", cluster=cluster)
    assert replacement.process.returncode == 0, f"node 0's replacement failed\n{cluster.logs()}"
    wait_for(lambda: exited(node1), timeout=120, what="node 1 to finish", cluster=cluster)
    assert node1.process.returncode == 0, f"node 1 failed\n{cluster.logs()}"  # the same container throughout
    assert "group_world_size=2" in replacement.log.read_text(), cluster.logs()
    assert latest_step(cluster.output) == EPOCHS * STEPS_PER_EPOCH, cluster.logs()
    assert_exactly_once(str(cluster.ledger), num_samples=12, epochs=EPOCHS)


def test_a_node_joins_and_later_leaves_mid_run_and_every_sample_is_used_once(cluster):
    # An elastic Job of nodes 1:3 resized as Kueue does it: running at parallelism and completions
    # 2, raised to 3 (index 2's pod starts once its workload slice is admitted: the world grows),
    # then lowered to 2 (the Job controller deletes the highest index, which gets SIGTERM: the
    # world shrinks). Real torchrun agents, one network namespace per pod; the run finishes on two.
    synthesize(cluster.data, format="ucf101", num_classes=3, videos_per_class=6, num_frames=(12, 16))
    epochs = 12  # long enough for a join and a leave, each a restart of the worker group
    overrides = [o for o in OVERRIDES if not o.startswith(("train.epochs=", "train.export="))]
    workload = cluster.render(
        nodes={"min": 1, "max": 3},
        kueue={"queueName": "team-a", "elastic": True},
        overrides=[*overrides, f"train.epochs={epochs}", f"train.sample_log={cluster.ledger}"],
    )
    assert workload.job["metadata"]["annotations"]["kueue.x-k8s.io/elastic-job"] == "true"
    node0, node1 = cluster.start_pod(workload, 0), cluster.start_pod(workload, 1)
    log0 = node0.log.read_text
    wait_for(lambda: in_epoch(cluster.ledger, 1) or exited(node0), timeout=300, what="epoch 1", cluster=cluster)
    assert "world size 2" in log0() and not exited(node0), cluster.logs()

    node2 = cluster.start_pod(workload, 2)
    wait_for(lambda: "world size 3," in log0() or exited(node0), timeout=300, what="the join", cluster=cluster)
    assert not exited(node0), cluster.logs()
    joined = log0().count("resumed from step")
    wait_for(
        lambda: " INFO step " in log0().split("world size 3,")[-1] or exited(node0),
        timeout=120,
        what="a step on three nodes",
        cluster=cluster,
    )

    node2.process.send_signal(signal.SIGTERM)  # the kubelet's SIGTERM to the container
    assert node2.wait(timeout=120) == 143, cluster.logs()  # stopped after its checkpoint
    wait_for(lambda: exited(node0) and exited(node1), timeout=600, what="the run to finish", cluster=cluster)
    assert (node0.process.returncode, node1.process.returncode) == (0, 0), cluster.logs()

    text = log0()
    assert "world size changed 2 -> 3: global batch 4 -> 6" in text, cluster.logs()
    assert "world size changed 3 -> 2: global batch 6 -> 4" in text, cluster.logs()
    assert text.count("resumed from step") > joined, cluster.logs()
    assert latest_step(cluster.output) is not None
    assert_exactly_once(str(cluster.ledger), num_samples=12, epochs=epochs)


def test_sigterm_to_every_pod_commits_a_checkpoint_and_the_resubmitted_job_resumes_there(cluster):
    # Kueue preempts the workload: every pod gets SIGTERM (then SIGKILL after the grace period).
    synthesize(cluster.data, format="ucf101", num_classes=3, videos_per_class=6, num_frames=(12, 16))
    workload = cluster.render()
    pods = [cluster.start_pod(workload, index) for index in (0, 1)]
    wait_for(lambda: in_epoch(cluster.ledger, 1) or exited(pods[0]), timeout=300, what="epoch 1", cluster=cluster)
    for pod in pods:
        pod.process.send_signal(signal.SIGTERM)
    codes = [pod.wait(timeout=300) for pod in pods]
    # 143: the Job's podFailurePolicy ignores it (not counted against backoffLimitPerIndex).
    assert codes == [143, 143], cluster.logs()
    rules = workload.job["spec"]["podFailurePolicy"]["rules"]
    assert any(rule.get("onExitCodes", {}).get("values") == [143] and rule["action"] == "Ignore" for rule in rules)
    stopped = latest_step(cluster.output)
    assert f"stopped on SIGTERM after step {stopped} " in pods[0].log.read_text(), cluster.logs()

    # Admitted again: new pods (the old ones gone) resume from that checkpoint and finish.
    for pod in pods:
        cluster.network.kill(pod)
    again = [cluster.start_pod(workload, index) for index in (0, 1)]
    for pod in again:
        assert pod.wait(timeout=420) == 0, cluster.logs()
    assert f"resumed from step {stopped}:" in again[0].log.read_text(), cluster.logs()
    assert_exactly_once(str(cluster.ledger), num_samples=12, epochs=EPOCHS)
