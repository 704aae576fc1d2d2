"""TorchX components: ``actiontrain.train`` (elastic torchrun job) and ``actiontrain.export``."""

# Why the old-style typing here, against the house style: TorchX builds each component's CLI from
# the live annotations (so no ``from __future__ import annotations``) and lints every function of
# this module from its source, where only Optional/Dict/List parse: one ``X | None`` anywhere, even
# in a helper, makes ``torchx builtins`` and ``torchx run`` crash. Any function here that returns
# an AppDef is listed as a component, so helpers return something else.

import logging
from typing import Dict, List, Optional, Tuple

from torchx import specs
from torchx.components import dist
from torchx.components.structured_arg import StructuredNameArgument

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

    This is TorchX's dist.ddp role, named train, with three changes: torchrun restarts crashed
    workers (--max_restarts), receives the pod's SIGTERM itself, and gives every restart round a
    fresh rendezvous store.

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
        config: shipped recipe (x3d_s, cpu_small, cpu_smoke) or a YAML path/URL; the trainer's default (x3d_s) if unset
        format: dataset layout, e.g. ucf101, hmdb51, kinetics (detected when unset)
        split: official split of UCF101/HMDB51 (1, 2 or 3)
        image: container image; ignored by local_cwd, which runs in the current directory
        name: job name as {experimentname}/{runname}, {experimentname}/, /{runname} or {runname}
        h: a registered named resource (e.g. aws_p4d.24xlarge); takes precedence over cpu, gpu and memMB
        cpu: CPUs per node (video decoding runs in the data loader workers: give them cores)
        gpu: GPUs per node; at least the processes per node in -j (0 trains on CPU with gloo)
        memMB: memory per node in MB
        j: [{min_nnodes}:]{max_nnodes}x{nproc_per_node}, e.g. 1x1, 2x8, or 1:4x8 for elastic 1 to 4 nodes
        env: extra environment variables as KEY=VALUE,KEY2=VALUE2; from your shell only LOGLEVEL is copied
            (torchrun's log level, WARNING if unset), as dist.ddp does
        max_restarts: torchrun restarts of the workers in place (crashed worker, lost peer node) before the job fails
        max_retries: scheduler retries of the whole job (new pods) once torchrun gives up
        rdzv_port: port on the first node for the c10d rendezvous store (multi-node only; one node picks a free port)
        rdzv_backend: torchrun rendezvous backend (c10d; static needs every node from the start)
        mounts: volumes as type=<bind|volume>,src=...,dst=...[,readonly]; see the scheduler's documentation
    """
    _, _, nproc_per_node, nnodes = _parse_j(j)
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

    app_name = StructuredNameArgument.parse_from(name=name, m="actiontrain")
    role_env = {
        **_env(env),
        **_tracking_env(app_name),
        # A fresh rendezvous store per restart round, else restarted workers may reconnect to
        # dead peers (actiontrain.distributed.SHARED_STORE_SWITCH; not imported: it pulls in torch).
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    }
    # TorchX's own role: torchrun with the rendezvous endpoint at rank 0's host (localhost:0 on one
    # node), --rdzv_id from the job, replicas and port from -j and --rdzv_port, LOGLEVEL.
    # tests/launch/test_components.py compares the two AppDefs and explains every difference.
    command = ["train", "--data", data, "--output", output]
    command += _options(config=config, format=format, split=split)
    command += overrides
    app = dist.ddp(
        *command,
        m="actiontrain",
        image=image,
        name=name,
        h=h,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        j=j,
        env=role_env,
        max_retries=max_retries,
        rdzv_port=rdzv_port,
        rdzv_backend=rdzv_backend,
        mounts=mounts,
        # Worker output reaches the pod log prefixed by its local rank, and torchrun's log files.
        tee=3,
    )
    (role,) = app.roles
    # dist.ddp names the role after the module (actiontrain); Volcano names the pods and the
    # rank 0 host variable (VC_TRAIN_0_HOSTS) after the role, and `torchx log` addresses it.
    role.name = "train"
    # exec: the pod's SIGTERM reaches torchrun, which stops the workers cleanly. dist.ddp leaves
    # torchrun's --max_restarts at its default, 0: one crashed worker would end the job.
    launcher, _, torchrun_args = role.args[1].partition(" ")
    assert role.args[0] == "-c" and launcher == "torchrun", f"dist.ddp's command has changed: {role.args}"
    role.args = ["-c", f"exec torchrun --max_restarts {max_restarts} {torchrun_args}"]
    return app


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
    role_env = {**_env(env), **_tracking_env(app_name)}
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
    except ValueError as error:
        raise ConfigError(f"{usage}; got {j!r}") from error
    if nproc_per_node < 1 or max_nnodes < 1 or min_nnodes > max_nnodes:
        raise ConfigError(f"{usage}, with NPROC >= 1 and 1 <= MAX and MIN <= MAX; got {j!r}")
    return min_nnodes, max_nnodes, nproc_per_node, nnodes


def _resource(*, cpu: int, gpu: int, memMB: int, h: Optional[str]) -> specs.Resource:
    if h:
        try:
            return specs.resource(h=h)
        except KeyError as error:
            raise ConfigError(f"-h {h!r}: {error.args[0]}") from error
    _check_not_negative(cpu=cpu, gpu=gpu, memMB=memMB)
    return specs.resource(cpu=cpu, gpu=gpu, memMB=memMB)


def _check_not_negative(**counts: int) -> None:
    for key, value in counts.items():
        if value < 0:
            raise ConfigError(f"--{key} must be >= 0, got {value}")


def _tracking_env(app_name: StructuredNameArgument) -> Dict[str, str]:
    """The names TorchX's trackers read: ``dist.ddp`` sets the experiment's, newer TorchX also the run's."""
    return {
        "TORCHX_TRACKING_EXPERIMENT_NAME": app_name.experiment_name,
        "TORCHX_TRACKING_RUN_NAME": app_name.run_name,
    }


def _env(env: Optional[Dict[str, str]]) -> Dict[str, str]:
    """A copy of ``--env``: the caller's dict is never changed (``dist.ddp`` of TorchX 0.7 adds to the one it gets)."""
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

