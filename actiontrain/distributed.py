"""Process group set-up from torchrun's environment, and the few collectives the trainer needs."""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from actiontrain.config import DEVICES
from actiontrain.errors import ConfigError

__all__ = [
    "DistInfo",
    "SHARED_STORE_SWITCH",
    "agree_autocast_dtype",
    "agree_flags",
    "agree_max",
    "autocast_dtype",
    "barrier",
    "cuda_unavailable_reason",
    "describe_device",
    "destroy_distributed",
    "init_distributed",
    "is_torchrun",
    "needs_grad_scaler",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int
    """Global rank, 0 to ``world_size - 1``."""
    local_rank: int
    """Rank on this node; selects the GPU."""
    world_size: int
    """Number of processes in the job (after an elastic restart, the current number)."""
    device: torch.device
    """The device this process trains on."""
    backend: str | None
    """``nccl`` or ``gloo`` when a process group is initialised, None in single-process mode."""

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that logs, saves checkpoints and exports."""
        return self.rank == 0


def is_torchrun() -> bool:
    """Whether this process was started by torchrun (or anything else that sets its environment)."""
    return "RANK" in os.environ


def init_distributed(*, device: str = "auto", timeout_s: float = 600) -> DistInfo:
    """Initialises the default process group from torchrun's environment and picks the device.

    Under torchrun (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` set)
    the default process group is initialised with ``init_method="env://"``: NCCL when the device
    is a GPU, gloo on CPU; beside NCCL, a gloo group carries :func:`agree_flags` over the CPU. A job of one torchrun process still gets a group, so the code path does
    not change when an elastic job shrinks to one node. Without torchrun's environment nothing is
    initialised: rank 0 of a world of 1. Calling it again returns the current state.

    Args:
        device: ``auto`` (``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``), ``cuda``
            or ``cpu``.
        timeout_s: how long collectives (and the initial rendezvous of the store) wait for the
            other ranks before failing. Generous by default: rank 0 may spend minutes on the
            first evaluation or checkpoint while the others wait in a collective.

    Returns:
        This process's rank, local rank, world size, device and backend.

    Raises:
        ConfigError: an unknown device, ``cuda`` without a usable GPU, or an incomplete or
            malformed torchrun environment.
    """
    if device not in DEVICES:
        raise ConfigError(f"train.device must be one of {', '.join(DEVICES)}, got {device!r}")
    if timeout_s <= 0:
        raise ConfigError(f"timeout_s must be > 0, got {timeout_s!r}")
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    distributed = is_torchrun() or world_size > 1
    if distributed and "RANK" not in os.environ:
        raise ConfigError(f"WORLD_SIZE is {world_size} but RANK is not set; start the job with torchrun")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"RANK must be in [0, WORLD_SIZE) and WORLD_SIZE >= 1, got RANK={rank} WORLD_SIZE={world_size}")
    torch_device = _pick_device(device, local_rank)
    if torch_device.type == "cuda":
        # Before the group exists: NCCL and every later `.cuda()` use the current device.
        torch.cuda.set_device(torch_device)
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            rank=dist.get_rank(),
            local_rank=local_rank,
            world_size=dist.get_world_size(),
            device=torch_device,
            backend=str(dist.get_backend()),
        )
    if not distributed:
        return DistInfo(rank=0, local_rank=0, world_size=1, device=torch_device, backend=None)
    missing = [key for key in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(key)]
    if missing:
        raise ConfigError(f"RANK is set but {' and '.join(missing)} is not; start the job with torchrun")
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run a single process without torchrun")
    if rank == 0:
        _warn_if_rendezvous_store_is_shared()
    backend = "nccl" if torch_device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size, timeout=timeout)
    global _CONTROL_GROUP
    # The trainer's per-step agreement (stop, time for a checkpoint) is a few bytes: on a GPU job
    # a gloo group over the CPU keeps it off the GPU stream, so it never waits for the step's
    # kernels (no device sync per step). Every rank creates it, in the same order.
    _CONTROL_GROUP = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
    logger.info("process group initialised: backend %s, world size %d, device %s", backend, world_size, torch_device)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=torch_device, backend=backend)


SHARED_STORE_SWITCH = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"
"""Set to ``1`` in torchrun's environment: each rendezvous round then gets a fresh TCP store."""


def _warn_if_rendezvous_store_is_shared() -> None:
    # By default torchrun's c10d rendezvous hands its own long-lived TCP store to the workers
    # (TORCHELASTIC_USE_AGENT_STORE=True). Keys the previous incarnation wrote survive a restart,
    # so the new ranks can read a dead peer's address: gloo then fails with "connection refused"
    # on every retry, or hangs for the collective timeout when the port was reused
    # (pytorch/pytorch#135712). Only the launcher can fix it, so say how.
    restarts = _env_int("TORCHELASTIC_MAX_RESTARTS", 0)
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and restarts > 0:
        logger.warning(
            "torchrun shares its rendezvous store with the workers, so a restart may reconnect to "
            "dead workers and fail; launch torchrun with %s=1 in its environment "
            "(the image, the Helm chart and the TorchX component do)",
            SHARED_STORE_SWITCH,
        )


def destroy_distributed() -> None:
    """Destroys the default process group (and the control group); does nothing when there is none."""
    global _CONTROL_GROUP
    _CONTROL_GROUP = None
    if _initialized():
        dist.destroy_process_group()


def agree_flags(*flags: bool) -> tuple[bool, ...]:
    """Each flag OR-ed over all ranks: true everywhere once any rank raised it.

    One all-reduce (MAX) of a few bytes on the CPU control group: a gloo group beside NCCL's, or
    the default group when that is gloo already. Every rank must call it at the same point with
    the same number of flags. Identity in single-process mode.
    """
    if not _initialized():
        return tuple(bool(flag) for flag in flags)
    values = torch.tensor([int(bool(flag)) for flag in flags], dtype=torch.int32)
    dist.all_reduce(values, op=dist.ReduceOp.MAX, group=_CONTROL_GROUP)
    return tuple(bool(value) for value in values.tolist())


def agree_max(value: int) -> int:
    """The largest of the ranks' ``value``: one all-reduce (MAX) of 8 bytes on the CPU control group.

    Every rank must call it at the same point. Identity in single-process mode.
    """
    if not _initialized():
        return int(value)
    values = torch.tensor([int(value)], dtype=torch.int64)
    dist.all_reduce(values, op=dist.ReduceOp.MAX, group=_CONTROL_GROUP)
    return int(values.item())


def barrier() -> None:
    """Waits until every rank gets here; a no-op in single-process mode."""
    if not _initialized():
        return
    if dist.get_backend() == "nccl":
        # Naming the device spares NCCL a guess (and its warning) about which GPU this rank owns.
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The mixed-precision dtype for ``device``: bf16 on GPUs that support it, else fp16; None on CPU.

    Mixed precision is CUDA-only in this project: CPU autocast buys little for 3D convolutions.
    Emulated bf16 (pre-Ampere GPUs) does not count: it is slower than fp16 with a grad scaler.
    """
    if torch.device(device).type != "cuda":
        return None
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return torch.float16


# Ranks agree on the weakest dtype: a code per choice, ordered so that MIN over ranks wins.
_DTYPE_CODES: dict[torch.dtype | None, int] = {None: 0, torch.float16: 1, torch.bfloat16: 2}


def agree_autocast_dtype(dtype: torch.dtype | None) -> torch.dtype | None:
    """The autocast dtype every rank uses: the least capable rank's choice.

    On a mixed GPU pool one rank may support bf16 and another only fp16; DDP would then average
    scaled fp16 gradients with unscaled bf16 ones. All ranks take fp16 (with a grad scaler) if
    any must, and no autocast if any rank has none. Identity in single-process mode.
    """
    if dtype not in _DTYPE_CODES:
        raise ValueError(f"autocast dtype must be one of {list(_DTYPE_CODES)}, got {dtype!r}")
    if not _initialized():
        return dtype
    code = torch.tensor([_DTYPE_CODES[dtype]], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(code, op=dist.ReduceOp.MIN)
    agreed = next(choice for choice, value in _DTYPE_CODES.items() if value == int(code.item()))
    if agreed != dtype:
        logger.warning("autocast %s on this rank, %s on the weakest rank: all ranks use %s", dtype, agreed, agreed)
    return agreed


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    """Whether training in ``dtype`` needs a ``GradScaler``: only fp16, whose range underflows gradients."""
    return dtype == torch.float16


# A gloo group for agree_flags when the default group is NCCL; None: the default group.
_CONTROL_GROUP: dist.ProcessGroup | None = None


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _comm_device() -> torch.device:
    # NCCL only moves GPU tensors; gloo is used here only for CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _pick_device(request: str, local_rank: int) -> torch.device:
    if request == "cpu" or (request == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"train.device=cuda but CUDA is not usable here ({cuda_unavailable_reason()}); fix the GPU node "
            "(driver, device plugin, gpusPerNode) or train on the CPU with train.device=cpu"
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(
            f"LOCAL_RANK {local_rank} has no GPU: this node has {count}; start at most {count} processes per node"
        )
    return torch.device("cuda", local_rank)


def cuda_unavailable_reason() -> str:
    """Why this process has no CUDA, in torch's own words (driver too old, no driver, no device)."""
    if torch.version.cuda is None:
        return f"this PyTorch {torch.__version__} is a CPU-only build"
    try:
        torch.cuda.init()
    except Exception as error:  # noqa: BLE001 - torch raises RuntimeError or AssertionError by cause
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"PyTorch built for CUDA {torch.version.cuda}: {first_line}"
    return f"PyTorch built for CUDA {torch.version.cuda} sees no GPU"


def describe_device(device: torch.device | str) -> str:
    """One line about where this process computes: GPU model, compute capability, memory, CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"{device} ({torch.get_num_threads()} threads, PyTorch {torch.__version__})"
    props = torch.cuda.get_device_properties(device)
    return (
        f"{device} ({props.name}, compute capability {props.major}.{props.minor}, "
        f"{props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, PyTorch {torch.__version__})"
    )


def _env_int(key: str, default: int) -> int:
    raw = os.environ.get(key, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as error:
        raise ConfigError(f"environment variable {key} must be an integer, got {raw!r}") from error
