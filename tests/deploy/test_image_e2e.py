"""The image, built with podman and run as the chart's pods: hardened as the chart asks, then two pods training from S3.

scripts/build-image.sh builds it (podman's layer cache makes that quick when nothing changed). The
containers get what the kubelet would give the rendered pods (see containers.py): the pod's user,
a read-only root filesystem, no capabilities, no privilege escalation, only the chart's volumes,
the chart's environment, a hostname and an address of their own on a podman network where the
job's DNS names resolve; the S3 server (moto) listens on that network's gateway.

Where podman cannot run containers the tests skip, and fail when CI is set.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from capabilities import require
from containers import Container, ContainersUnavailable, PodmanNetwork, build_image, podman, run_options
from kube import CHART_DIR, container_environment, indexed_job_pod, kubelet_expand, pod_template, render_chart
from pods import pod_mounts

from actiontrain import storage
from actiontrain.checkpoint import CheckpointManager
from actiontrain.data.synth import synthesize
from actiontrain.embedded_s3 import EmbeddedS3

BUILD_TIMEOUT_S = 45 * 60
"""A cold build here (the stand-in base, then the image) took 12 minutes; a cached one 2 seconds."""
TRAIN_TIMEOUT_S = 600

# pytest-timeout counts the module's build (fixture setup) against the first test that needs it.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(BUILD_TIMEOUT_S + TRAIN_TIMEOUT_S + 300)]

RECIPE = "cpu_smoke"
"""The shipped recipe the pods train (the chart's ``recipe`` value)."""
RELEASE, NAMESPACE = "demo", "ml"
JOB_UID = str(uuid.uuid4())
SECRET = "s3-credentials"
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
EPOCHS = 2
STEPS_PER_EPOCH = 3  # 12 training clips / (2 nodes x 1 process x batch 2)
OVERRIDES = (
    f"train.epochs={EPOCHS}",
    "train.batch_size=2",
    "train.checkpoint_every=1",
    "train.eval_every=0",
    "train.log_every=1",
    "data.num_workers=0",
    "train.export=true",
)
UNWRITABLE = re.compile(r".*(read-only file system|no writable|write access|permission denied).*", re.IGNORECASE)
"""Log lines of a library that found no place to write."""


@dataclass(frozen=True)
class Workload:
    """What the chart rendered that the pods need: the Job and the ConfigMaps' data by name."""

    job: dict[str, Any]
    configmaps: dict[str, dict[str, str]]

    @property
    def pod_spec(self) -> dict[str, Any]:
        return pod_template(self.job)["spec"]

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod_spec["containers"]
        return container


def render(*, data: str, output: str, endpoint: str) -> Workload:
    """The chart with its CI cpu-smoke values made small, pointed at ``endpoint``; the image's own paths."""
    values = yaml.safe_load((CHART_DIR / "ci" / "cpu-smoke-values.yaml").read_text())
    values |= {
        "data": data,
        "output": output,
        "recipe": RECIPE,
        # One gloo process per pod: two pods share this machine's two cores.
        "nprocPerNode": 1,
        "rendezvous": {"timeoutSeconds": 120},
        "s3": {"endpointUrl": endpoint, "region": "us-east-1", "existingSecret": SECRET},
        "overrides": list(OVERRIDES),
        # torchrun's agent logs its rendezvous results at INFO; one thread per pod.
        "extraEnv": [{"name": "LOGLEVEL", "value": "INFO"}, {"name": "OMP_NUM_THREADS", "value": "1"}],
    }
    rendered = render_chart(values, name=RELEASE, namespace=NAMESPACE)
    configmaps = {obj["metadata"]["name"]: obj["data"] for obj in rendered.objects if obj["kind"] == "ConfigMap"}
    return Workload(rendered.one("Job"), configmaps)


def local_name(image: str) -> str:
    """The name podman gives ``image`` when it is built here: ``localhost/`` before a name without a registry."""
    first, _, rest = image.partition("/")
    return image if rest and ("." in first or ":" in first or first == "localhost") else f"localhost/{image}"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    """The image the chart's pods name, built here."""
    name = local_name(render(data="s3://d/x", output="s3://o/x", endpoint="http://s3:9000").container["image"])
    log = tmp_path_factory.mktemp("image") / "build.log"
    try:
        build_image(name, log, timeout=BUILD_TIMEOUT_S)
    except ContainersUnavailable as error:
        require(str(error), what="building and running the image")
    return name


PROBE = """
import json, os
import torchcodec

def writable(path):
    try:
        with open(os.path.join(path, ".probe"), "w"):
            pass
    except OSError:
        return False
    os.remove(os.path.join(path, ".probe"))
    return True

status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
recipe = os.environ["ACTIONTRAIN_RECIPE"]
shm = os.statvfs("/dev/shm")
paths = ["/", "/etc", "/opt/venv", os.getcwd(), os.path.expanduser("~"), "/tmp", "/dev/shm"]
paths.append(os.environ["ACTIONTRAIN_CACHE_DIR"])
print(json.dumps({
    "uid": os.getuid(),
    "gid": os.getgid(),
    "groups": os.getgroups(),
    "capabilities": int(status["CapEff"], 16),
    "no_new_privs": int(status["NoNewPrivs"]),
    "home": os.path.expanduser("~"),
    "shm_bytes": shm.f_blocks * shm.f_frsize,
    "writable": {path: writable(path) for path in [*paths, os.path.dirname(recipe)]},
    "recipe": open(recipe).read(),
    "ffmpeg_major": torchcodec.ffmpeg_major_version,
}))
"""


def test_cli_and_torchcodec_run_as_the_pods_user_with_a_read_only_root(image, tmp_path):
    workload = render(data="s3://d/x", output="s3://o/x", endpoint="http://s3:9000")
    spec, container = workload.pod_spec, workload.container
    hostname, fields = indexed_job_pod(workload.job, 0, uid=JOB_UID, namespace=NAMESPACE)
    env = container_environment(container, fields=fields, secrets={(SECRET, key): "unused" for key in SECRET_KEYS})
    mounts = pod_mounts(spec, container, tmp_path / "volumes", configmaps=workload.configmaps, skip=())
    options = ["--network", "none", "--hostname", hostname, *run_options(spec, container, mounts)]
    assert {"--read-only", "no-new-privileges", "ALL"} <= set(options)
    env_file = tmp_path / "pod.env"
    env_file.touch(mode=0o600)
    env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))

    cli = podman("run", "--rm", "--pull", "never", "--env-file", str(env_file), *options, image, "--help")
    assert "usage: actiontrain" in cli.stdout, cli.stdout + cli.stderr

    run = podman(
        "run", "--rm", "--pull", "never", "--env-file", str(env_file), *options,
        "--entrypoint", "python", image, "-c", PROBE,
    )  # fmt: skip
    probe = json.loads(run.stdout.splitlines()[-1])
    assert (probe["uid"], probe["gid"]) == (10001, 10001) and 10001 in probe["groups"]
    assert probe["capabilities"] == 0 and probe["no_new_privs"] == 1
    # Only the chart's emptyDirs are writable: /tmp (the home), /dev/shm and the cache; the recipe
    # ConfigMap is read-only.
    assert os.path.dirname(env["ACTIONTRAIN_RECIPE"]) in probe["writable"]
    writable = {path for path, ok in probe["writable"].items() if ok}
    assert writable == {"/tmp", "/dev/shm", env["ACTIONTRAIN_CACHE_DIR"]}, probe
    assert probe["home"] == "/tmp"
    assert probe["shm_bytes"] == 1 << 30  # shm.sizeLimit 1Gi in the CI values: a tmpfs that size
    assert probe["recipe"] == next(iter(workload.configmaps.values()))["recipe.yaml"]
    assert probe["ffmpeg_major"] is not None  # torchcodec loads the image's FFmpeg libraries


def start_pod(network: PodmanNetwork, workload: Workload, index: int, *, s3: EmbeddedS3) -> Container:
    """Pod ``index`` of the Job as the Job controller and the kubelet make it, as a container."""
    spec, container = workload.pod_spec, workload.container
    hostname, fields = indexed_job_pod(workload.job, index, uid=JOB_UID, namespace=NAMESPACE)
    env = container_environment(container, fields=fields, secrets={(SECRET, key): s3.env[key] for key in SECRET_KEYS})
    volumes = network.directory / "volumes" / hostname
    mounts = pod_mounts(spec, container, volumes, configmaps=workload.configmaps, skip=())
    job = workload.job["metadata"]["name"]
    return network.start(
        hostname,
        entrypoint=[kubelet_expand(part, env) for part in container["command"]],
        args=[kubelet_expand(part, env) for part in container["args"]],
        env=env,
        options=run_options(spec, container, mounts),
        records=[f"{job}-{i}" for i in range(workload.job["spec"]["completions"])],
    )


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}\n{logs()}"
        time.sleep(1)


def test_two_pods_train_from_s3_and_write_checkpoints_and_the_export(image, tmp_path):
    job_name = render(data="s3://d/x", output="s3://o/x", endpoint="http://s3:9000").job["metadata"]["name"]
    with (
        PodmanNetwork(tmp_path / "pods", image=image, namespace=NAMESPACE, subdomain=job_name) as network,
        EmbeddedS3(host=network.gateway, separate_process=True) as s3,
        s3.environment(),
    ):
        bucket = s3.create_bucket(f"image-{network.name}")
        data, output = f"{bucket}/ucf", f"{bucket}/run"
        # 3 classes x 6 videos: 12 training clips (split 1 keeps groups 2, 3, 5, 6 for training).
        synthesize(data, format="ucf101", num_classes=3, videos_per_class=6, num_frames=(12, 16))
        workload = render(data=data, output=output, endpoint=s3.endpoint)
        assert pod_template(workload.job)["spec"]["subdomain"] == job_name

        def logs() -> str:
            return "\n".join(
                f"----- pod {pod.hostname} ({pod.address}, exit {pod.process.poll()}) -----\n{pod.tail()}"
                for pod in network.containers
            )

        # The scheduler starts pods in any order: node 1 first waits for node 0 to accept connections.
        started = time.monotonic()
        node1 = start_pod(network, workload, 1, s3=s3)
        node0 = start_pod(network, workload, 0, s3=s3)
        wait_for(lambda: node0.exited() and node1.exited(), timeout=TRAIN_TIMEOUT_S, what="both pods", logs=logs)
        seconds = time.monotonic() - started
        assert node0.process.returncode == 0 and node1.process.returncode == 0, logs()

        log0, log1 = (pod.log.read_text() for pod in (node0, node1))
        assert " is up after " in log1, logs()  # the launcher's wait for node 0
        for log in (log0, log1):
            assert "group_world_size=2" in log, logs()
            # Nothing the pods run wants to write where a pod cannot (the read-only root filesystem).
            assert not UNWRITABLE.search(log), UNWRITABLE.search(log).group(0)
        assert "world size 2, batch 2 per process" in log0, logs()

        storage.url_to_fs(output)[0].invalidate_cache()
        assert CheckpointManager(output).latest_step() == EPOCHS * STEPS_PER_EPOCH, logs()
        for name in ("manifest.json", "model.xml", "model.bin"):
            assert storage.exists(storage.join(output, "export", name)), f"no export/{name}\n{logs()}"
        print(f"two pods trained {EPOCHS} epochs and exported in {seconds:.0f} s")
