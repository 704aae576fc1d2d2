"""charts/actiontrain templates/job.yaml: the Indexed Job, its pods and the command each node runs."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from kube import CHART_DIR, container_argv, container_environment, pod_template, render_chart

from actiontrain.cli.exit_codes import EXIT_PREEMPTED, EXIT_USER_ERROR
from actiontrain.distributed import SHARED_STORE_SWITCH

# End-to-end: the chart is rendered by Helm's Go library in a worker process.
pytestmark = pytest.mark.e2e

BASE = {"data": "s3://datasets/ucf101", "output": "s3://runs/x3d"}
GPU_MULTINODE = {**BASE, "nodes": {"min": 2, "max": 4}, "gpusPerNode": 8}
JOB_UID = "0b9e5a46-8f0e-4a4f-9d59-3c1f5b0f7c11"


def _job(values: dict) -> dict:
    return render_chart(values).one("Job")


def _container(values: dict) -> dict:
    (container,) = pod_template(_job(values))["spec"]["containers"]
    return container


def _pod_fields(index: int, *, namespace: str = "ml") -> dict[str, str]:
    """What the downward API gives a pod of the Job (the Job controller's label and annotation)."""
    return {
        "metadata.namespace": namespace,
        "metadata.annotations['batch.kubernetes.io/job-completion-index']": str(index),
        "metadata.labels['batch.kubernetes.io/controller-uid']": JOB_UID,
    }


def _env(values: dict, index: int = 0) -> dict[str, str]:
    return container_environment(
        _container(values),
        fields=_pod_fields(index),
        secrets={("s3-credentials", k): "x" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
    )


def test_renders_torchrun_arguments_from_the_values():
    container = _container(GPU_MULTINODE | {"maxRestarts": 5, "overrides": ["train.epochs=3", "optim.lr=5e-4"]})
    argv = container_argv(container, container_environment(container, fields=_pod_fields(1)))
    torchrun_args = argv[argv.index("launcher") + 1 :]
    assert torchrun_args == [
        "--nnodes=2:4",
        "--nproc-per-node=8",
        "--max-restarts=5",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=demo-actiontrain-0.demo-actiontrain.ml.svc:29400",
        f"--rdzv-id={JOB_UID}",
        "train",
        "--config=/etc/actiontrain/recipe.yaml",
        "--data=s3://datasets/ucf101",
        "--output=s3://runs/x3d",
        "train.device=cuda",
        "train.epochs=3",
        "optim.lr=5e-4",
    ]


@pytest.mark.parametrize(
    ("values", "nproc"),
    [({}, "1"), ({"gpusPerNode": 4}, "4"), ({"gpusPerNode": 8, "nprocPerNode": 2}, "2"), ({"nprocPerNode": 3}, "3")],
)
def test_renders_one_process_per_gpu_unless_nproc_per_node_is_set(values, nproc):
    assert _env(BASE | values)["ACTIONTRAIN_NPROC_PER_NODE"] == nproc


def test_renders_format_split_and_values_with_dollars_verbatim():
    values = BASE | {"data": "s3://b/$(HOME)/d", "format": "hmdb51", "split": 2, "overrides": ["data.decoder=$x"]}
    container = _container(values)
    argv = container_argv(container, container_environment(container, fields=_pod_fields(0)))
    assert "--data=s3://b/$(HOME)/d" in argv
    assert argv[-4:] == ["--format=hmdb51", "--split=2", "train.device=auto", "data.decoder=$x"]


@pytest.mark.parametrize("backend", ["job", "pytorchjob"])
def test_renders_the_switch_for_a_fresh_rendezvous_store_every_restart_round(backend):
    rendered = render_chart(BASE | {"backend": backend})
    (container,) = pod_template(rendered.one("Job" if backend == "job" else "PyTorchJob"))["spec"]["containers"]
    assert {"name": SHARED_STORE_SWITCH, "value": "1"} in container["env"]


def test_renders_an_indexed_job_of_max_nodes_that_succeeds_with_node_zero():
    spec = _job(GPU_MULTINODE)["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 4)
    assert spec["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    assert "suspend" not in spec


@pytest.mark.parametrize(
    ("nodes", "max_failed"), [({"min": 1, "max": 1}, 0), ({"min": 2, "max": 4}, 2), ({"min": 1, "max": 8}, 7)]
)
def test_renders_max_failed_indexes_as_the_nodes_the_job_can_lose(nodes, max_failed):
    assert _job(BASE | {"nodes": nodes})["spec"]["maxFailedIndexes"] == max_failed
    assert _job(BASE | {"nodes": nodes, "job": {"maxFailedIndexes": 0}})["spec"]["maxFailedIndexes"] == 0


def test_renders_a_failure_policy_that_retries_lost_and_stopped_nodes_and_fails_on_usage_errors():
    spec = _job(BASE | {"job": {"backoffLimitPerIndex": 5}})["spec"]
    template = spec["template"]["spec"]
    container = template["containers"][0]["name"]
    assert template["restartPolicy"] == "Never"  # required by podFailurePolicy
    assert spec["backoffLimitPerIndex"] == 5
    assert spec["podReplacementPolicy"] == "Failed"
    disrupted, stopped, fail = spec["podFailurePolicy"]["rules"]
    assert disrupted == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert stopped == {
        "action": "Ignore",
        "onExitCodes": {"containerName": container, "operator": "In", "values": [EXIT_PREEMPTED]},
    }
    assert fail["action"] == "FailJob"
    assert fail["onExitCodes"] == {"containerName": container, "operator": "In", "values": [EXIT_USER_ERROR]}


@pytest.mark.parametrize("seconds", [120, 30])
def test_renders_the_termination_grace_period_from_the_values(seconds):
    values = BASE if seconds == 120 else BASE | {"terminationGracePeriodSeconds": seconds}
    assert pod_template(_job(values))["spec"]["terminationGracePeriodSeconds"] == seconds


def test_renders_the_rendezvous_identity_from_the_downward_api():
    env = {item["name"]: item for item in _container(BASE)["env"]}
    assert (
        env["ACTIONTRAIN_RDZV_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.labels['batch.kubernetes.io/controller-uid']"
    )
    assert env["ACTIONTRAIN_NODE_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    assert _env(BASE, index=3)["ACTIONTRAIN_NODE_INDEX"] == "3"


def test_renders_pods_named_by_the_headless_service():
    rendered = render_chart(BASE)
    service = rendered.one("Service")
    spec = pod_template(rendered.one("Job"))["spec"]
    assert spec["subdomain"] == service["metadata"]["name"] == rendered.one("Job")["metadata"]["name"]
    host = _env(BASE)["ACTIONTRAIN_RDZV_ENDPOINT"].split(":")[0]
    assert host == f"{rendered.one('Job')['metadata']['name']}-0.{spec['subdomain']}.ml.svc"


def test_renders_secure_pod_defaults():
    spec = pod_template(_job(BASE))["spec"]
    pod, container = spec["securityContext"], spec["containers"][0]["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False


def test_renders_tmp_shm_and_cache_as_the_only_writable_mounts():
    values = BASE | {"shm": {"sizeLimit": "16Gi"}, "cache": {"path": "/cache", "sizeLimit": "1Gi"}}
    spec = pod_template(_job(values))["spec"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in spec["containers"][0]["volumeMounts"]}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert mounts["/dev/shm"]["name"] == "shm"
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"]["sizeLimit"] == "4Gi"
    assert volumes[mounts["/cache"]["name"]]["emptyDir"] == {"sizeLimit": "1Gi"}
    writable = {path for path, mount in mounts.items() if not mount.get("readOnly")}
    assert writable == {"/dev/shm", "/tmp", "/cache"}
    assert _env(values)["ACTIONTRAIN_CACHE_DIR"] == "/cache"


def test_renders_gpu_requests_and_limits_when_gpus_per_node_is_set():
    resources = _container(GPU_MULTINODE)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 8
    assert "nvidia.com/gpu" not in str(_container(BASE)["resources"])


def test_renders_cpu_memory_and_shm_per_training_process_when_resources_are_empty():
    one = _container(BASE)["resources"]
    assert one == {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "16Gi"}}
    eight = _container(GPU_MULTINODE)["resources"]  # one process per GPU
    assert (eight["requests"]["cpu"], eight["requests"]["memory"], eight["limits"]["memory"]) == ("32", "128Gi", "128Gi")
    volumes = {volume["name"]: volume for volume in pod_template(_job(GPU_MULTINODE))["spec"]["volumes"]}
    assert volumes["shm"]["emptyDir"]["sizeLimit"] == "16Gi"
    two = _container(GPU_MULTINODE | {"nprocPerNode": 2, "perProcess": {"cpu": 6, "memoryGiB": 20, "shmGiB": 1}})
    assert (two["resources"]["requests"]["cpu"], two["resources"]["limits"]["memory"]) == ("12", "40Gi")


def test_renders_explicit_resources_as_given_plus_the_gpus():
    explicit = {"requests": {"cpu": "64", "memory": "512Gi"}, "limits": {"memory": "512Gi"}}
    resources = _container(GPU_MULTINODE | {"resources": explicit})["resources"]
    assert resources["requests"] == {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": 8}
    assert resources["limits"] == {"memory": "512Gi", "nvidia.com/gpu": 8}


@pytest.mark.parametrize(("values", "device"), [(BASE, "auto"), (GPU_MULTINODE, "cuda")])
def test_renders_a_required_cuda_device_on_gpu_nodes_and_auto_elsewhere(values, device):
    env = _env(values)
    assert env["ACTIONTRAIN_DEVICE"] == device
    assert f"train.device={device}" in container_argv(_container(values), env)


def test_renders_scheduling_values_into_the_pod():
    values = BASE | {
        "nodeSelector": {"nvidia.com/gpu.product": "H100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {}},
        "priorityClassName": "training",
        "podLabels": {"team": "vision"},
        "podAnnotations": {"example.com/owner": "vision"},
    }
    template = pod_template(_job(values))
    spec = template["spec"]
    assert spec["nodeSelector"] == values["nodeSelector"]
    assert spec["tolerations"] == values["tolerations"]
    assert spec["affinity"] == values["affinity"]
    assert spec["priorityClassName"] == "training"
    assert template["metadata"]["labels"]["team"] == "vision"
    assert template["metadata"]["annotations"]["example.com/owner"] == "vision"


def test_renders_the_kueue_queue_label_and_partial_admission_when_elastic():
    job = _job(GPU_MULTINODE | {"kueue": {"queueName": "team-a"}})
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    # Kueue lowers parallelism only: completions stays >= maxFailedIndexes, as validation requires.
    assert job["metadata"]["annotations"] == {"kueue.x-k8s.io/job-min-parallelism": "2"}
    assert job["spec"]["suspend"] is True
    fixed = _job(BASE | {"kueue": {"queueName": "team-a"}})
    assert "annotations" not in fixed["metadata"]


def test_renders_an_elastic_job_without_partial_admission_when_kueue_elastic_is_set():
    values = BASE | {"nodes": {"min": 1, "max": 4}, "kueue": {"queueName": "team-a", "elastic": True}}
    job = _job(values)
    assert job["metadata"]["annotations"] == {"kueue.x-k8s.io/elastic-job": "true"}
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    spec = job["spec"]
    assert (spec["completions"], spec["parallelism"], spec["suspend"]) == (4, 4, True)
    # Resized down to nodes.min (completions 1), the Job must still be valid: maxFailedIndexes <= 1.
    assert spec["maxFailedIndexes"] == 1
    assert _job(values | {"nodes": {"min": 3, "max": 4}})["spec"]["maxFailedIndexes"] == 1


@pytest.mark.parametrize(
    ("kueue", "annotations"),
    [
        ({"queueName": "team-a"}, {"kueue.x-k8s.io/job-min-parallelism": "2"}),
        ({"queueName": "team-a", "partialAdmission": False}, None),
        ({"queueName": "team-a", "elastic": False, "partialAdmission": True}, {"kueue.x-k8s.io/job-min-parallelism": "2"}),
        ({"queueName": "team-a", "elastic": True, "partialAdmission": False}, {"kueue.x-k8s.io/elastic-job": "true"}),
        ({"queueName": ""}, None),
    ],
)
def test_renders_partial_admission_only_when_not_elastic(kueue, annotations):
    job = _job(GPU_MULTINODE | {"kueue": kueue})
    assert job["metadata"].get("annotations") == annotations


def test_renders_s3_credentials_as_secret_references_only():
    values = BASE | {
        "s3": {"existingSecret": "s3-credentials", "endpointUrl": "http://minio.minio:9000", "region": "eu-west-1"}
    }
    env = {item["name"]: item for item in _container(values)["env"]}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name] == {"name": name, "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": name}}}
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://minio.minio:9000"
    assert env["AWS_REGION"]["value"] == "eu-west-1"
    assert "AWS_SESSION_TOKEN" not in env
    without = {item["name"] for item in _container(BASE)["env"]}
    assert not {name for name in without if name.startswith("AWS_")}


def test_renders_the_image_from_app_version_or_digest():
    app_version = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"]
    assert _container(BASE)["image"] == f"actiontrain:{app_version}"
    assert (
        _container(BASE | {"image": {"repository": "r.example.com/at", "tag": "0.2.0"}})["image"]
        == "r.example.com/at:0.2.0"
    )
    digest = "sha256:" + "a" * 64
    assert _container(BASE | {"image": {"digest": digest}})["image"] == f"actiontrain@{digest}"


def test_renders_deadline_and_ttl_only_when_set():
    spec = _job(BASE)["spec"]
    assert "activeDeadlineSeconds" not in spec and "ttlSecondsAfterFinished" not in spec
    spec = _job(BASE | {"activeDeadlineSeconds": 86400, "ttlSecondsAfterFinished": 3600})["spec"]
    assert (spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (86400, 3600)
    assert _job(BASE | {"ttlSecondsAfterFinished": 0})["spec"]["ttlSecondsAfterFinished"] == 0


# The launcher script itself, run by /bin/sh with a stand-in for python that records its
# arguments and exits with the codes it is given, in turn: node 0 hosts the store and does not
# wait; the others wait first, and rejoin when their launch ends with an error.

LAUNCH = "python -m actiontrain launch --rdzv-conf="
WAIT = "python -m actiontrain.launch.rendezvous --wait demo-actiontrain-0.demo-actiontrain.ml.svc:29400 --timeout 900"


def _python_stub(directory: Path) -> None:
    path = directory / "python"
    path.write_text(
        "#!/bin/sh\n"
        'echo "python $*" >> "$CALLS"\n'
        'case "$*" in *"actiontrain launch"*) codes="$LAUNCH_CODES" ;; *) codes="$WAIT_CODES" ;; esac\n'
        'code=$(head -n 1 "$codes"); sed -i 1d "$codes"\n'
        'if [ "$code" = sleep ]; then trap \'echo "python got TERM" >> "$CALLS"; exit 143\' TERM; '
        'echo started > "$CALLS.started"; while :; do sleep 0.1; done; fi\n'
        "exit ${code:-0}\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _launcher(
    tmp_path: Path, index: int | None, *, wait: tuple = (), launch: tuple = (), values: dict | None = None
) -> tuple[list[str], dict[str, str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    _python_stub(bin_dir)
    calls = tmp_path / "calls"
    calls.write_text("")
    (tmp_path / "wait_codes").write_text("".join(f"{code}\n" for code in wait))
    (tmp_path / "launch_codes").write_text("".join(f"{code}\n" for code in launch))
    container = _container(values or GPU_MULTINODE)
    env = container_environment(container, fields=_pod_fields(0 if index is None else index))
    if index is None:
        del env["ACTIONTRAIN_NODE_INDEX"]
    env |= {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CALLS": str(calls),
        "WAIT_CODES": str(tmp_path / "wait_codes"),
        "LAUNCH_CODES": str(tmp_path / "launch_codes"),
    }
    return container_argv(container, env), env, calls


def _run_launcher(tmp_path: Path, index: int | None, **codes) -> tuple[int, list[str]]:
    argv, env, calls = _launcher(tmp_path, index, **codes)
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    return result.returncode, calls.read_text().splitlines()


def test_launcher_on_node_zero_hosts_the_store_without_waiting(tmp_path):
    code, calls = _run_launcher(tmp_path, 0)
    assert code == 0
    (launch,) = calls
    assert launch.startswith(f"{LAUNCH}is_host=true,join_timeout=900 --nnodes=2:4 --nproc-per-node=8")


def test_launcher_on_other_nodes_waits_for_node_zero_first(tmp_path):
    code, calls = _run_launcher(tmp_path, 2)
    assert code == 0
    wait, launch = calls
    assert wait == WAIT
    assert launch.startswith(f"{LAUNCH}is_host=false,join_timeout=900 ")


def test_launcher_does_not_start_torchrun_when_node_zero_never_came(tmp_path):
    code, calls = _run_launcher(tmp_path, 1, wait=(1,))
    assert code == 1  # retried by the Job (counted against backoffLimitPerIndex)
    assert calls == [WAIT]


def test_launcher_without_a_node_index_is_a_usage_error_that_fails_the_job(tmp_path):
    code, calls = _run_launcher(tmp_path, None)
    assert code == 2  # podFailurePolicy: FailJob
    assert calls == []


def test_launcher_rejoins_in_the_same_container_when_node_zero_is_lost(tmp_path):
    # node 0's pod dies: this node's launch fails twice (the store is gone, then its replacement
    # is late), then joins the replacement's rendezvous and finishes.
    code, calls = _run_launcher(tmp_path, 1, launch=(1, 1, 0))
    assert code == 0
    assert [call.split(" --rdzv-conf")[0] for call in calls] == [WAIT, "python -m actiontrain launch"] * 3


def test_launcher_gives_up_rejoining_after_the_attempts_the_values_allow(tmp_path):
    values = GPU_MULTINODE | {"rendezvous": {"rejoinAttempts": 1}}
    code, calls = _run_launcher(tmp_path, 1, launch=(1, 1, 0), values=values)
    assert code == 1
    assert len(calls) == 4  # wait, launch, wait, launch


@pytest.mark.parametrize(("index", "exit_code"), [(0, 1), (1, 2), (1, 143)])
def test_launcher_does_not_retry_node_zero_usage_errors_or_stops(tmp_path, index, exit_code):
    code, calls = _run_launcher(tmp_path, index, launch=(exit_code, 0))
    assert code == exit_code
    assert sum(call.startswith(LAUNCH) for call in calls) == 1


def test_launcher_forwards_sigterm_to_the_launch_and_exits_with_its_code(tmp_path):
    argv, env, calls = _launcher(tmp_path, 1, launch=("sleep", 0))
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started = Path(f"{calls}.started")
        for _ in range(300):
            if started.exists() or process.poll() is not None:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 143
    finally:
        if process.poll() is None:
            process.kill()
    assert calls.read_text().splitlines()[-1] == "python got TERM"
    assert sum(call.startswith(LAUNCH) for call in calls.read_text().splitlines()) == 1  # not rejoined
