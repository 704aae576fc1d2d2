"""TorchX components: ``actiontrain.train`` (elastic torchrun job) and ``actiontrain.export``."""

# Why the old-style typing here, against the house style: TorchX builds each component's CLI from
# the live annotations (so no ``from __future__ import annotations``) and lints every function of
# this module from its source, where only Optional/Dict/List parse: one ``X | None`` anywhere, even
# in a helper, makes ``torchx builtins`` and ``torchx run`` crash. Any function here that returns
# an AppDef is listed as a component, so helpers return something else.

import logging
import shlex
from typing import Dict, List, Optional, Tuple

from torchx import specs
from torchx.components import dist
from torchx.components.structured_arg import StructuredNameArgument
from torchx.specs import macros

from actiontrain import __version__
from actiontrain.errors import ConfigError

__all__ = ["IMAGE", "export", "train"]

logger = logging.getLogger(__name__)

IMAGE = f"actiontrain:{__version__}"
"""The Dockerfile's image of this version, named as the chart and ``k8s/`` name it (never ``latest``);
``--image`` gives its registry path. Ignored by the ``local_cwd`` scheduler."""

_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def train(
    *overrides: str,
    data: str,
    output: str,
    config: Optional[str] = None,
    format: Optional[str] = None,
    split: int = 1,
    image: str = IMAGE,
    name: str = "/",
    h: Optional[str] = None,
    cpu: int = 8,
    gpu: int = 0,
    memMB: int = 32768,
    j: str = "1x1",
    env: Optional[Dict[str, str]] = None,
    max_restarts: int = 3,
    max_retries: int = 0,
    rdzv_port: int = 29500,
    rdzv_backend: str = "c10d",
    mounts: Optional[List[str]] = None,
) -> specs.AppDef:
    """
    Elastic X3D training: actiontrain train under torchrun on every node, c10d rendezvous.

    Every (re)start resumes from the newest committed checkpoint under --output, so a job that
    loses a node, is preempted or is resubmitted continues where it stopped, also with another
    number of nodes. Recipe overrides come last, after all options:

        torchx run -s kubernetes actiontrain.train -j 1:4x8 --gpu 8 \\
            --data s3://b/ucf101 --output s3://b/runs/x3d optim.lr=5e-4 train.epochs=20

    S3 is configured by the standard AWS variables. Locally (local_cwd) the job inherits them; on
    a cluster prefer the pod's service account (-cfg service_account=..., web identity) and pass
    only non-secret settings with --env (AWS_ENDPOINT_URL, AWS_REGION): what --env carries is
    written into the job spec in plain text.

    Args:
        overrides: recipe overrides as key=value (e.g. optim.lr=5e-4 train.epochs=3), after all options
        data: dataset root URL (a path, s3://bucket/prefix, simplecache::s3://...)
        output: where checkpoints, metrics and plots go (any fsspec URL); the job resumes from it
        config: shipped recipe (x3d_s, cpu_smoke) or a YAML path/URL; the trainer's default (x3d_s) if unset
        format: dataset layout, e.g. ucf101, hmdb51, kinetics (detected when unset)
        split: official split of UCF101/HMDB51 (1, 2 or 3)
        image: container image; ignored by local_cwd, which runs in the current directory
        name: job name as {experimentname}/{runname}, {experimentname}/, /{runname} or {runname}
        h: a registered named resource (e.g. aws_p4d.24xlarge); takes precedence over cpu, gpu and memMB
        cpu: CPUs per node (video decoding runs in the data loader workers: give them cores)
        gpu: GPUs per node; at least the processes per node in -j (0 trains on CPU with gloo)
        memMB: memory per node in MB
        j: [{min_nnodes}:]{max_nnodes}x{nproc_per_node}, e.g. 1x1, 2x8, or 1:4x8 for elastic 1 to 4 nodes
        env: extra environment variables as KEY=VALUE,KEY2=VALUE2 (nothing from your shell is copied)
        max_restarts: torchrun restarts of the workers in place (crashed worker, lost peer node) before the job fails
        max_retries: scheduler retries of the whole job (new pods) once torchrun gives up
        rdzv_port: port on the first node for the c10d rendezvous store (multi-node only; one node picks a free port)
        rdzv_backend: torchrun rendezvous backend (c10d; static needs every node from the start)
        mounts: volumes as type=<bind|volume>,src=...,dst=...[,readonly]; see the scheduler's documentation
    """
    min_nnodes, max_nnodes, nproc_per_node, nnodes = _parse_j(j)
    resource = _resource(cpu=cpu, gpu=gpu, memMB=memMB, h=h)
    if resource.gpu > 0 and nproc_per_node > resource.gpu:
        raise ConfigError(
            f"-j {j} starts {nproc_per_node} processes per node but each node gets {resource.gpu} GPU(s); "
            f"use one process per GPU, e.g. -j {nnodes}x{resource.gpu} or --gpu {nproc_per_node}"
        )
    _check_not_negative(max_restarts=max_restarts, max_retries=max_retries)
    for override in overrides:
        if "=" not in override:
            raise ConfigError(
                f"recipe override {override!r} is not key=value (e.g. train.epochs=3); overrides come after all options"
            )

    if max_nnodes == 1:
        # All workers share one agent: port 0 lets torchrun pick a free port.
        rdzv_endpoint = _Unquoted("localhost:0")
    else:
        # The scheduler names rank 0's host in an environment variable that bash expands in the
        # pod ($$ escapes the macro template); rank 0 itself may not have it set.
        rdzv_endpoint = _Unquoted(f"$${{{macros.rank0_env}:=localhost}}:{rdzv_port}")
    torchrun = [
        "python", "-m", "torch.distributed.run",
        "--rdzv_backend", rdzv_backend,
        "--rdzv_endpoint", rdzv_endpoint,
        "--rdzv_id", macros.app_id,
        "--nnodes", nnodes,
        "--nproc_per_node", str(nproc_per_node),
        "--max_restarts", str(max_restarts),
        # Worker output reaches the pod log prefixed by its local rank, and torchrun's log files.
        "--tee", "3",
    ]  # fmt: skip
    if rdzv_backend == "static":
        torchrun += ["--node_rank", macros.replica_id]
    command = [*torchrun, "-m", "actiontrain", "train", "--data", data, "--output", output]
    command += _options(config=config, format=format, split=split)
    command += overrides

    app_name = StructuredNameArgument.parse_from(name=name, m="actiontrain")
    role_env = {
        **_role_env(env, app_name),
        # A fresh rendezvous store per restart round, else restarted workers may reconnect to
        # dead peers (actiontrain.distributed.SHARED_STORE_SWITCH; not imported: it pulls in torch).
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    }
    return specs.AppDef(
        name=app_name.run_name,
        roles=[
            specs.Role(
                name="train",
                image=image,
                # exec: the pod's SIGTERM reaches torchrun, which stops the workers cleanly.
                entrypoint="bash",
                args=["-c", "exec " + _shell_join(command)],
                min_replicas=min_nnodes,
                num_replicas=max_nnodes,
                resource=resource,
                env=role_env,
                port_map={"c10d": rdzv_port},
                max_retries=max_retries,
                mounts=specs.parse_mounts(mounts) if mounts else [],
            )
        ],
    )


def export(
    *,
    checkpoint: str,
    output: Optional[str] = None,
    precision: Optional[str] = None,
    image: str = IMAGE,
    name: str = "/",
    h: Optional[str] = None,
    cpu: int = 4,
    gpu: int = 0,
    memMB: int = 8192,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
    mounts: Optional[List[str]] = None,
) -> specs.AppDef:
    """
    Exports a trained model to OpenVINO IR: actiontrain export as one process on one node.

        torchx run -s kubernetes actiontrain.export --checkpoint s3://b/runs/x3d --precision fp16

    writes the model to s3://b/runs/x3d/export.

    Args:
        checkpoint: a training --output URL (its newest committed checkpoint) or one checkpoint folder
        output: where the exported model goes; <checkpoint>/export if unset
        precision: fp32 or fp16, as actiontrain export --precision (its default if unset)
        image: container image; ignored by local_cwd, which runs in the current directory
        name: job name as {experimentname}/{runname}, {experimentname}/, /{runname} or {runname}
        h: a registered named resource; takes precedence over cpu, gpu and memMB
        cpu: CPUs for the export
        gpu: GPUs for the export (not needed: OpenVINO converts on the CPU)
        memMB: memory in MB
        env: extra environment variables as KEY=VALUE,KEY2=VALUE2 (nothing from your shell is copied)
        max_retries: scheduler retries of the job
        mounts: volumes as type=<bind|volume>,src=...,dst=...[,readonly]; see the scheduler's documentation
    """
    _check_not_negative(max_retries=max_retries)
    if not checkpoint:
        raise ConfigError("--checkpoint must name a training output or checkpoint URL, got ''")
    destination = output or f"{checkpoint.rstrip('/')}/export"
    args = ["-m", "actiontrain", "export", "--checkpoint", checkpoint, "--output", destination]
    args += _options(precision=precision)

    app_name = StructuredNameArgument.parse_from(name=name, m="actiontrain-export")
    role_env = _role_env(env, app_name)
    return specs.AppDef(
        name=app_name.run_name,
        roles=[
            specs.Role(
                name="export",
                image=image,
                entrypoint="python",
                args=args,
                resource=_resource(cpu=cpu, gpu=gpu, memMB=memMB, h=h),
                env=role_env,
                max_retries=max_retries,
                mounts=specs.parse_mounts(mounts) if mounts else [],
            )
        ],
    )


def _parse_j(j: str) -> Tuple[int, int, int, str]:
    """``-j`` as (min nodes, max nodes, processes per node, torchrun's ``--nnodes``)."""
    usage = "-j must be [MIN:]MAXxNPROC (nodes x processes per node), e.g. 1x2, 2x8 or 1:4x8 for elastic 1 to 4 nodes"
    try:
        min_nnodes, max_nnodes, nproc_per_node, nnodes = dist.parse_nnodes(j)
    except ValueError:
        raise ConfigError(f"{usage}; got {j!r}") from None
    if nproc_per_node < 1 or max_nnodes < 1 or min_nnodes > max_nnodes:
        raise ConfigError(f"{usage}, with NPROC >= 1 and 1 <= MAX and MIN <= MAX; got {j!r}")
    return min_nnodes, max_nnodes, nproc_per_node, nnodes


def _resource(*, cpu: int, gpu: int, memMB: int, h: Optional[str]) -> specs.Resource:
    if h:
        try:
            return specs.resource(h=h)
        except KeyError as error:
            raise ConfigError(f"-h {h!r}: {error.args[0]}") from None
    _check_not_negative(cpu=cpu, gpu=gpu, memMB=memMB)
    return specs.resource(cpu=cpu, gpu=gpu, memMB=memMB)


def _check_not_negative(**counts: int) -> None:
    for key, value in counts.items():
        if value < 0:
            raise ConfigError(f"--{key} must be >= 0, got {value}")


def _role_env(env: Optional[Dict[str, str]], app_name: StructuredNameArgument) -> Dict[str, str]:
    """``--env`` plus the experiment name TorchX's trackers read, as ``dist.ddp`` sets it."""
    return {**_env(env), "TORCHX_TRACKING_EXPERIMENT_NAME": app_name.experiment_name}


def _env(env: Optional[Dict[str, str]]) -> Dict[str, str]:
    """A copy of ``--env``: the caller's dict is never changed, and the launching shell adds nothing."""
    env = dict(env or {})
    secrets = [key for key in _SECRET_ENV if key in env]
    if secrets:
        logger.warning(
            "%s passed with --env are stored in the job spec in plain text; on a cluster prefer the "
            "pod's service account (-cfg service_account=..., web identity)",
            ", ".join(secrets),
        )
    return env


def _options(**options: Optional[object]) -> List[str]:
    """``--key value`` for each option that is set; unset ones keep the command's own default."""
    return [part for key, value in options.items() if value is not None for part in (f"--{key}", str(value))]


class _Unquoted(str):
    """A word that bash must expand (the rendezvous endpoint's ``${VAR:=default}``)."""


def _shell_join(args: List[str]) -> str:
    return " ".join(arg if isinstance(arg, _Unquoted) else shlex.quote(arg) for arg in args)
