"""TorchX components: the AppDefs they build, a local_cwd run that trains from S3, and a Kubernetes dryrun."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import os
import shlex
import subprocess
import sys

import pytest
import yaml
from torchx import IMAGE as TORCHX_IMAGE
from torchx.components import dist
from torchx.specs import AppDef, Role, macros
from torchx.specs.file_linter import validate
from torchx.specs.finder import get_components

import actiontrain
from actiontrain import storage
from actiontrain.checkpoint import CheckpointManager
from actiontrain.data.synth import synthesize
from actiontrain.distributed import SHARED_STORE_SWITCH
from actiontrain.errors import ConfigError
from actiontrain.export.store import pull
from actiontrain.launch import components
from actiontrain.launch.components import IMAGE, export, train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TORCHX = os.path.join(os.path.dirname(sys.executable), "torchx")


def command_of(role: Role) -> list[str]:
    """The role's ``bash -c`` line as argv, after TorchX's macros, as a scheduler would run it."""
    role = macros.Values(img_root="", app_id="job-7", replica_id="1", rank0_env="RANK0_HOST").apply(role)
    assert role.entrypoint == "bash" and role.args[0] == "-c" and len(role.args) == 2
    return split_exec(role.args[1])


def split_exec(line: str) -> list[str]:
    argv = shlex.split(line)
    assert argv[0] == "exec"  # so that the pod's SIGTERM reaches torchrun
    return argv[1:]


def torchrun_and_train_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """``torchrun OPTIONS -m actiontrain train ARGS`` as (OPTIONS, ARGS)."""
    assert argv[0] == "torchrun"
    end = argv.index("-m", 1)
    assert argv[end : end + 3] == ["-m", "actiontrain", "train"]
    options = argv[1:end]
    return dict(zip(options[::2], options[1::2], strict=True)), argv[end + 3 :]


def only_role(app: AppDef) -> Role:
    assert len(app.roles) == 1
    return app.roles[0]


# --- the AppDefs ---------------------------------------------------------------------------------


def test_train_runs_actiontrain_under_torchrun_with_c10d_on_one_node():
    app = train(
        "train.epochs=2", "optim.lr=5e-4",
        data="s3://b/ucf", output="s3://b/run", config="cpu_smoke", format="ucf101", j="1x2",
    )  # fmt: skip
    role = only_role(app)
    assert app.name == "actiontrain" and role.image == IMAGE and IMAGE.endswith(f":{actiontrain.__version__}")
    assert (role.min_replicas, role.num_replicas) == (1, 1)
    options, args = torchrun_and_train_args(command_of(role))
    assert options == {
        "--rdzv_backend": "c10d",
        "--rdzv_endpoint": "localhost:0",  # one node: torchrun picks a free port
        "--rdzv_id": "job-7",
        "--nnodes": "1",
        "--nproc_per_node": "2",
        "--max_restarts": "3",
        "--tee": "3",
        "--role": "",  # dist.ddp's: torchrun's worker role name, not used by actiontrain
    }
    assert args == [
        "--data", "s3://b/ucf", "--output", "s3://b/run", "--config", "cpu_smoke", "--format", "ucf101",
        "--split", "1", "train.epochs=2", "optim.lr=5e-4",
    ]  # fmt: skip


def test_unset_options_keep_the_train_commands_own_defaults():
    _, args = torchrun_and_train_args(command_of(only_role(train(data="d", output="o"))))
    assert args == ["--data", "d", "--output", "o", "--split", "1"]


def test_elastic_j_spans_min_to_max_nodes_and_meets_at_rank0s_host():
    role = only_role(train(data="d", output="o", j="1:4x8", gpu=8, rdzv_port=29600, max_restarts=5))
    assert (role.min_replicas, role.num_replicas) == (1, 4)
    assert role.port_map == {"c10d": 29600}
    options, _ = torchrun_and_train_args(command_of(role))
    assert options["--nnodes"] == "1:4"
    assert options["--nproc_per_node"] == "8"
    assert options["--max_restarts"] == "5"
    # Left for bash to expand in the pod: the scheduler's variable naming rank 0's host.
    assert options["--rdzv_endpoint"] == "${RANK0_HOST:=localhost}:29600"


def test_static_rendezvous_gets_each_nodes_rank():
    role = only_role(train(data="d", output="o", j="2x1", rdzv_backend="static"))
    options, _ = torchrun_and_train_args(command_of(role))
    assert options["--rdzv_backend"] == "static" and options["--node_rank"] == "1"


def test_arguments_with_spaces_and_quotes_reach_the_trainer_intact():
    override = "train.sample_log=/tmp/a b/it's"
    _, args = torchrun_and_train_args(command_of(only_role(train(override, data="s3://b/my data", output="o"))))
    assert args[1] == "s3://b/my data" and args[-1] == override


def test_gpus_and_named_resources_set_the_nodes_resources():
    role = only_role(train(data="d", output="o", j="2x4", gpu=4, cpu=32, memMB=100_000))
    assert (role.resource.gpu, role.resource.cpu, role.resource.memMB) == (4, 32, 100_000)
    named = only_role(train(data="d", output="o", j="1x2", h="gpu.medium", gpu=0))
    assert (named.resource.gpu, named.resource.cpu) == (2, 16)  # h wins over --gpu, as in dist.ddp


def test_more_processes_than_gpus_is_refused():
    with pytest.raises(ConfigError, match=r"^-j 1x4 starts 4 processes per node but each node gets 2 GPU\(s\)"):
        train(data="d", output="o", j="1x4", gpu=2)


@pytest.mark.parametrize("j", ["2x", "x8", "ax2", "1x2x3", "1:2:3x4", "", "1x0", "0x2", "3:2x1"])
def test_bad_j_is_one_line_with_the_value_and_an_example(j):
    with pytest.raises(ConfigError) as caught:
        train(data="d", output="o", j=j)
    message = str(caught.value)
    assert "\n" not in message and repr(j) in message and "e.g. 1x2, 2x8 or 1:4x8" in message


def test_unknown_named_resource_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match="-h 'gpu.smal'.*Did you mean `gpu.small`"):
        train(data="d", output="o", h="gpu.smal")


def test_override_that_is_not_key_value_is_refused():
    with pytest.raises(ConfigError, match=r"override 'train.epochs' is not key=value"):
        train("train.epochs", "3", data="d", output="o")


def test_env_has_only_what_env_passes_never_the_launching_shells_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "shell-secret-value")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://shell-endpoint:9000")
    app = train(data="d", output="o")
    assert not [key for key in only_role(app).env if key.startswith("AWS_")]
    for value in ("AKIAEXAMPLEKEYID", "shell-secret-value", "shell-endpoint"):
        assert value not in repr(app)
    asked = {"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_REGION": "eu-west-1"}
    role = only_role(train(data="d", output="o", env=asked))
    assert {key: value for key, value in role.env.items() if key.startswith("AWS_")} == asked
    assert asked == {"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_REGION": "eu-west-1"}  # not changed
    assert only_role(export(checkpoint="c")).env.keys() == {"TORCHX_TRACKING_EXPERIMENT_NAME", "TORCHX_TRACKING_RUN_NAME"}


def test_train_sets_the_switch_for_a_fresh_rendezvous_store_per_restart():
    assert only_role(train(data="d", output="o")).env[SHARED_STORE_SWITCH] == "1"


def test_secrets_passed_with_env_are_warned_about(caplog):
    train(data="d", output="o", env={"AWS_SECRET_ACCESS_KEY": "do-not-log-me", "AWS_REGION": "r"})
    assert "AWS_SECRET_ACCESS_KEY passed with --env are stored in the job spec in plain text" in caplog.text
    assert "do-not-log-me" not in caplog.text


def test_scheduler_retries_and_mounts_pass_through():
    role = only_role(train(data="d", output="o", max_retries=2, mounts=["type=volume", "src=cache", "dst=/cache"]))
    assert role.max_retries == 2
    assert [(mount.src, mount.dst_path) for mount in role.mounts] == [("cache", "/cache")]
    with pytest.raises(ConfigError, match="--max_restarts must be >= 0, got -1"):
        train(data="d", output="o", max_restarts=-1)


def test_name_sets_the_run_and_experiment_as_in_dist_ddp():
    app = train(data="d", output="o", name="ucf/lr-sweep-3")
    assert app.name == "lr-sweep-3" and only_role(app).env["TORCHX_TRACKING_EXPERIMENT_NAME"] == "ucf"


@pytest.mark.parametrize(
    ("name", "experiment", "run"),
    [
        ("/", "default-experiment", None),  # None: the component's own name
        ("ucf/lr-sweep-3", "ucf", "lr-sweep-3"),
        ("ucf/", "ucf", None),
        ("/lr-sweep-3", "default-experiment", "lr-sweep-3"),
        ("lr-sweep-3", "default-experiment", "lr-sweep-3"),
    ],
)
def test_both_components_name_the_experiment_and_the_run_for_torchx_trackers(name, experiment, run):
    for app, default_run in (
        (train(data="d", output="o", name=name), "actiontrain"),
        (export(checkpoint="c", name=name), "actiontrain-export"),
    ):
        env = only_role(app).env
        assert app.name == env["TORCHX_TRACKING_RUN_NAME"] == (run or default_run)
        assert env["TORCHX_TRACKING_EXPERIMENT_NAME"] == experiment


def test_loglevel_is_warning_or_the_launching_shells_as_in_dist_ddp_and_env_wins(monkeypatch):
    monkeypatch.delenv("LOGLEVEL", raising=False)
    assert only_role(train(data="d", output="o")).env["LOGLEVEL"] == "WARNING"
    monkeypatch.setenv("LOGLEVEL", "INFO")
    assert only_role(train(data="d", output="o")).env["LOGLEVEL"] == "INFO"
    assert only_role(train(data="d", output="o", env={"LOGLEVEL": "DEBUG"})).env["LOGLEVEL"] == "DEBUG"
    # LOGLEVEL is torchrun's (torch.distributed.elastic's loggers); export runs no torchrun.
    assert "LOGLEVEL" not in only_role(export(checkpoint="c")).env


def test_export_is_one_process_writing_next_to_the_checkpoints():
    role = only_role(export(checkpoint="s3://b/run/"))
    assert (role.entrypoint, role.args) == (
        "python", ["-m", "actiontrain", "export", "--checkpoint", "s3://b/run/", "--output", "s3://b/run/export"]
    )  # fmt: skip
    assert (role.num_replicas, role.resource.gpu, role.image) == (1, 0, IMAGE)
    role = only_role(export(checkpoint="s3://b/run", output="s3://b/models/x3d", precision="fp16"))
    assert role.args[-4:] == ["--output", "s3://b/models/x3d", "--precision", "fp16"]


def test_components_pass_torchx_linter_and_are_registered():
    for name in ("train", "export"):
        assert validate(components.__file__, name) == []
    # Helpers must not look like components (they would be listed as actiontrain._...).
    registered = {name for name in get_components() if name.startswith("actiontrain.")}
    assert registered == {"actiontrain.train", "actiontrain.export"}


def test_torchx_builtins_stay_listed_beside_ours():
    # Registering [torchx.components] replaces TorchX's builtins unless they are registered too.
    assert {"dist.ddp", "utils.echo", "actiontrain.train"} <= set(get_components())


# --- the same role as TorchX's dist.ddp ---------------------------------------------------------

# Every option both components take, passed to both; image, cpu and memMB too, whose defaults differ.
DDP_CASES = {
    "one-node": dict(image=IMAGE, cpu=8, memMB=32768, j="1x2"),
    "elastic-gpu-nodes": dict(
        image="registry.example/actiontrain:0.1.0", name="ucf/lr-sweep-3", cpu=32, gpu=8, memMB=100_000, j="1:4x8",
        env={"AWS_REGION": "eu-west-1", "LOGLEVEL": "INFO"}, max_retries=2, rdzv_port=29600,
        mounts=["type=volume", "src=cache", "dst=/cache"],
    ),
    "static-named-resource": dict(image=IMAGE, name="run-9", h="gpu.medium", j="2x2", rdzv_backend="static"),
}  # fmt: skip


@pytest.mark.parametrize("options", DDP_CASES.values(), ids=DDP_CASES.keys())
def test_train_is_dist_ddps_app_with_each_difference_explained(options):
    ours = train(
        "train.epochs=2", data="s3://b/ucf", output="s3://b/run", config="cpu_smoke", max_restarts=5,
        **copy.deepcopy(options),
    )  # fmt: skip
    ddp = dist.ddp(
        "train", "--data", "s3://b/ucf", "--output", "s3://b/run", "--config", "cpu_smoke", "--split", "1",
        "train.epochs=2",
        m="actiontrain", tee=3, **copy.deepcopy(options),  # TorchX 0.7's ddp adds to the env it is given
    )  # fmt: skip
    assert (ours.name, ours.metadata) == (ddp.name, ddp.metadata)
    our_role, ddp_role = only_role(ours), only_role(ddp)
    differing = {field.name for field in dataclasses.fields(Role) if getattr(our_role, field.name) != getattr(ddp_role, field.name)}  # fmt: skip
    assert differing == {"name", "args", "env"}  # image, replicas, resource, port_map, retries, mounts: ddp's
    # 1. ddp names the role after the module; ours keeps "train": Volcano names the pods (...-train-0)
    #    and rank 0's host variable (VC_TRAIN_0_HOSTS) after it, and `torchx log` addresses it.
    assert (our_role.name, ddp_role.name) == ("train", "actiontrain")
    # 2. The same bash -c line with exec in front, so that the pod's SIGTERM reaches torchrun, and
    #    --max_restarts, which ddp leaves at torchrun's default 0 (the first crashed worker ends the job).
    assert ddp_role.args[0] == "-c" and ddp_role.args[1].startswith("torchrun ")
    assert our_role.args == ["-c", "exec torchrun --max_restarts 5 " + ddp_role.args[1].removeprefix("torchrun ")]
    # 3. ddp's environment (the --env given, the experiment's name, LOGLEVEL) plus a fresh rendezvous
    #    store per restart round (pytorch/pytorch#135712) and the run's name, which newer TorchX's ddp
    #    sets too.
    assert our_role.env == {**ddp_role.env, SHARED_STORE_SWITCH: "1", "TORCHX_TRACKING_RUN_NAME": ours.name}


def test_train_takes_dist_ddps_options_but_the_program_and_its_fixed_launch_settings():
    ours, ddp = inspect.signature(train).parameters, inspect.signature(dist.ddp).parameters
    # ddp's program (script_args, script, m) is `-m actiontrain train` with the options below;
    # tee is fixed at 3 (both streams to the pod's log and torchrun's files); debug's preset variables
    # can be passed with --env. A TorchX upgrade that adds options (newer ddp: rdzv_conf, metadata)
    # fails here: decide whether train passes them on.
    assert ddp.keys() - ours.keys() == {"script_args", "script", "m", "tee", "debug"}
    assert ours.keys() - ddp.keys() == {"overrides", "data", "output", "config", "format", "split", "max_restarts"}
    shared = ours.keys() & ddp.keys()
    defaults = {name: (ours[name].default, ddp[name].default) for name in shared if ours[name].default != ddp[name].default}
    assert defaults == {
        "image": (IMAGE, TORCHX_IMAGE),  # this project's image, not TorchX's
        "cpu": (8, 2),  # video decoding runs in the data loader workers
        "memMB": (32768, 1024),  # the loader workers hold decoded clips
        "j": ("1x1", "1x2"),  # one process: fits the default --gpu 0 and any node
    }


# --- the torchx CLI ------------------------------------------------------------------------------


def torchx_env(**extra: str) -> dict[str, str]:
    """The environment of a ``torchx`` run from the repo: its .torchxconfig only, the venv first on PATH."""
    return {
        **os.environ,
        "TORCHXCONFIG": os.path.join(REPO, ".torchxconfig"),
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        **extra,
    }


def torchx(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TORCHX, *args], cwd=REPO, env=env or torchx_env(), capture_output=True, text=True, timeout=timeout,
        check=False, start_new_session=True,
    )  # fmt: skip


def scheduler_request(stdout: str) -> dict:
    """The Kubernetes request that ``torchx run --dryrun`` prints as YAML after its header."""
    _, found, request = stdout.partition("=== SCHEDULER REQUEST ===\n")
    assert found, stdout
    return yaml.safe_load(request)


@pytest.mark.e2e
def test_kubernetes_dryrun_renders_a_volcano_job_with_image_gpus_command_and_env():
    result = torchx(
        "run", "--dryrun", "-s", "kubernetes", "actiontrain.train",
        "-j", "1:3x2", "--gpu", "2", "--image", "registry.example/actiontrain:0.1.0",
        "--env", "AWS_ENDPOINT_URL=http://minio:9000,AWS_REGION=us-east-1",
        "--data", "s3://b/ucf", "--output", "s3://b/run", "--format", "ucf101", "--max_restarts", "4",
        "train.epochs=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    job = scheduler_request(result.stdout)
    assert (job["apiVersion"], job["kind"]) == ("batch.volcano.sh/v1alpha1", "Job")
    assert job["spec"]["queue"] == "default"  # from .torchxconfig
    tasks = job["spec"]["tasks"]
    assert [task["minAvailable"] for task in tasks] == [1, 0, 0]  # 1 node required, up to 3
    for index, task in enumerate(tasks):
        container = only(task["template"]["spec"]["containers"])
        assert container["image"] == "registry.example/actiontrain:0.1.0"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
        env = {item["name"]: item["value"] for item in container["env"]}
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000" and env["AWS_REGION"] == "us-east-1"
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & env.keys()
        assert env[SHARED_STORE_SWITCH] == "1" and env["LOGLEVEL"] == os.environ.get("LOGLEVEL", "WARNING")
        assert env["TORCHX_TRACKING_EXPERIMENT_NAME"] == "default-experiment"
        assert env["TORCHX_TRACKING_RUN_NAME"] == "actiontrain"
        assert container["command"][:2] == ["bash", "-c"]
        options, args = torchrun_and_train_args(split_exec(container["command"][2]))
        host = "TORCHX_RANK0_HOST" if index == 0 else "VC_TRAIN_0_HOSTS"
        assert options["--rdzv_endpoint"] == f"${{{host}:=localhost}}:29500"
        assert (options["--rdzv_backend"], options["--nnodes"], options["--nproc_per_node"]) == ("c10d", "1:3", "2")
        assert options["--max_restarts"] == "4" and options["--rdzv_id"] == job["metadata"]["name"]
        assert args == [
            "--data", "s3://b/ucf", "--output", "s3://b/run", "--format", "ucf101", "--split", "1", "train.epochs=2",
        ]  # fmt: skip


@pytest.mark.e2e
def test_kubernetes_dryrun_of_export_renders_the_export_command():
    result = torchx(
        "run", "--dryrun", "-s", "kubernetes", "actiontrain.export", "--checkpoint", "s3://b/run", "--precision", "fp16"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    container = only(only(scheduler_request(result.stdout)["spec"]["tasks"])["template"]["spec"]["containers"])
    assert container["image"] == IMAGE and "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["command"] == [
        "python", "-m", "actiontrain", "export", "--checkpoint", "s3://b/run", "--output", "s3://b/run/export",
        "--precision", "fp16",
    ]  # fmt: skip


@pytest.mark.e2e
def test_cli_bad_j_fails_with_the_message_on_the_last_line():
    result = torchx(
        "run", "--dryrun", "-s", "kubernetes", "actiontrain.train", "-j", "2x", "--data", "d", "--output", "o"
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].endswith("e.g. 1x2, 2x8 or 1:4x8 for elastic 1 to 4 nodes; got '2x'")


def only(items: list) -> dict:
    assert len(items) == 1, items
    return items[0]


@pytest.mark.e2e
def test_local_cwd_run_trains_two_processes_from_s3_and_writes_checkpoints_and_export_back(tmp_path, s3_bucket, s3_env):
    data, output = f"{s3_bucket}/ucf", f"{s3_bucket}/run"
    # 3 classes x 6 videos: 12 training clips (split 1 keeps groups 2, 3, 5, 6 for training).
    synthesize(data, format="ucf101", num_classes=3, videos_per_class=6, num_frames=(12, 16))
    result = torchx(
        "run", "-s", "local_cwd", "-cfg", f"log_dir={tmp_path / 'torchx'}", "actiontrain.train",
        "-j", "1x2", "--data", data, "--output", output, "--config", "cpu_smoke", "--format", "ucf101",
        "train.epochs=1", "train.batch_size=2", "train.log_every=1", "data.num_workers=0", "train.eval_every=0",
        "train.export=true",
        env=torchx_env(**s3_env), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert "process group initialised: backend gloo, world size 2" in result.stderr
    assert CheckpointManager(output).latest_step() == 3  # 12 clips / (2 processes x 2) per step
    records = [json.loads(line) for line in storage.read_text(storage.join(output, "metrics.jsonl")).splitlines()]
    assert [record["step"] for record in records] == [1, 2, 3]  # train.log_every=1 reached the trainer
    manifest = pull(storage.join(output, "export"), tmp_path / "model")  # the OpenVINO export, checksums verified
    assert manifest.step == 3 and manifest.classes == ["MoveLeft", "MoveRight", "MoveUp"]
