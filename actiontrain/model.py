"""X3D video classifiers: the paper's variants, built by pytorchvideo, with safe pretrained loading."""

from __future__ import annotations

import io
import logging
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from actiontrain import storage
from actiontrain.config import Config, check_positive
from actiontrain.errors import ConfigError, DataError

with warnings.catch_warnings():
    # fvcore (imported by pytorchvideo) calls torch.jit.script at import time, which recent
    # torch deprecates with a FutureWarning on every run; it says nothing about our code.
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    from pytorchvideo.models.x3d import create_x3d

__all__ = [
    "DEFAULT_VARIANT",
    "X3D_VARIANTS",
    "X3DVariant",
    "build_model",
    "build_model_for_config",
    "count_parameters",
    "load_pretrained",
    "memory_format_for",
]

logger = logging.getLogger(__name__)

_KINETICS_ZOO = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"


@dataclass(frozen=True, kw_only=True)
class X3DVariant:
    """One X3D size: its Kinetics-400 recipe (SlowFast/pytorchvideo configs) and network shape."""

    name: str
    """Short name: xs, s, m or l."""
    num_frames: int
    """Frames per clip the Kinetics checkpoint was trained with."""
    frame_interval: int
    """Distance between sampled frames in that recipe (SlowFast's ``SAMPLING_RATE``)."""
    crop_size: int
    """Training crop side in pixels."""
    train_short_side: tuple[int, int]
    """Training: range of the random short-side resize before cropping."""
    width_factor: float
    """Channel expansion of every stage (paper's gamma_w)."""
    depth_factor: float
    """Block-count expansion of every stage (paper's gamma_d)."""
    bottleneck_factor: float
    """Inner width of each bottleneck relative to its output width (paper's gamma_b)."""
    stem_dim_in: int
    """Stem channels before the width expansion (SlowFast's ``DIM_C1``)."""
    head_dim_out: int
    """Width of the head's projected pooling (SlowFast's ``DIM_C5``)."""
    pretrained_url: str
    """pytorchvideo's Kinetics-400 checkpoint of this variant (a ``model_state`` dict)."""


def _variant(
    name: str,
    *,
    num_frames: int,
    frame_interval: int,
    crop_size: int,
    train_short_side: tuple[int, int],
    depth_factor: float = 2.2,
) -> X3DVariant:
    return X3DVariant(
        name=name,
        num_frames=num_frames,
        frame_interval=frame_interval,
        crop_size=crop_size,
        train_short_side=train_short_side,
        width_factor=2.0,
        depth_factor=depth_factor,
        bottleneck_factor=2.25,
        stem_dim_in=12,
        head_dim_out=2048,
        pretrained_url=f"{_KINETICS_ZOO}/X3D_{name.upper()}.pyth",
    )


# XS, S and M share one network (same weights' shapes); they differ only in their input clips.
# L is deeper. Values from pytorchvideo's hub and SlowFast's configs/Kinetics/pytorchvideo/X3D_*.yaml.
X3D_VARIANTS: dict[str, X3DVariant] = {
    "xs": _variant("xs", num_frames=4, frame_interval=12, crop_size=160, train_short_side=(182, 228)),
    "s": _variant("s", num_frames=13, frame_interval=6, crop_size=160, train_short_side=(182, 228)),
    "m": _variant("m", num_frames=16, frame_interval=5, crop_size=224, train_short_side=(256, 320)),
    "l": _variant("l", num_frames=16, frame_interval=5, crop_size=312, train_short_side=(356, 446), depth_factor=5.0),
}
"""The X3D paper's sizes by short name."""
DEFAULT_VARIANT = "s"
"""The variant :func:`build_model` builds unless told otherwise."""

# stem (2) x four stages (2 each): the side of the last feature map is crop_size / 32.
_SPATIAL_STRIDE = 32


def build_model(
    *,
    variant: str = DEFAULT_VARIANT,
    num_classes: int,
    clip_len: int | None = None,
    crop_size: int | None = None,
    dropout: float = 0.5,
) -> nn.Module:
    """Builds an X3D classifier that outputs logits.

    Args:
        variant: X3D size, one of :data:`X3D_VARIANTS` (``xs``, ``s``, ``m``, ``l``).
        num_classes: Classes of the classifier head.
        clip_len: Frames per input clip; sizes the head's pooling. Defaults to the variant's.
        crop_size: Side of the square input crop; sizes the head's pooling. Defaults to the variant's.
        dropout: Dropout before the final linear layer.

    Returns:
        A module mapping float clips ``(N, 3, T, H, W)`` to logits ``(N, num_classes)``. Larger
        inputs than ``clip_len``/``crop_size`` are averaged over; smaller ones fail.

    Raises:
        ConfigError: unknown variant or an out-of-range size.
    """
    spec = _lookup(variant)
    check_positive("num_classes", num_classes)
    clip_len = spec.num_frames if clip_len is None else clip_len
    crop_size = spec.crop_size if crop_size is None else crop_size
    check_positive("data.clip_len", clip_len)
    check_positive("data.crop_size", crop_size)
    if crop_size < _SPATIAL_STRIDE:
        raise ConfigError(f"data.crop_size must be >= {_SPATIAL_STRIDE} for X3D (its total spatial stride), got {crop_size}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
    return create_x3d(
        input_clip_length=clip_len,
        input_crop_size=crop_size,
        model_num_class=num_classes,
        dropout_rate=dropout,
        width_factor=spec.width_factor,
        depth_factor=spec.depth_factor,
        bottleneck_factor=spec.bottleneck_factor,
        stem_dim_in=spec.stem_dim_in,
        head_dim_out=spec.head_dim_out,
        # pytorchvideo's default head ends in Softmax; cross-entropy and mixed precision want logits.
        head_activation=None,
        # The same function as pytorchvideo's Swish (x * sigmoid(x)), as PyTorch's fused kernel:
        # Swish's hand-written autograd Function reads the deprecated ctx.saved_variables and
        # warns on every backward pass.
        inner_act=nn.SiLU,
    )


def _lookup(variant: str) -> X3DVariant:
    try:
        return X3D_VARIANTS[variant]
    except (KeyError, TypeError) as error:
        raise ConfigError(f"model.variant must be one of {', '.join(X3D_VARIANTS)}, got {variant!r}") from error


def build_model_for_config(config: Config, *, num_classes: int) -> nn.Module:
    """:func:`build_model` as a recipe asks: the variant and dropout of ``config.model``, the
    head's pooling sized by ``config.data``'s clip length and crop (so the two never disagree)."""
    return build_model(
        variant=config.model.variant,
        num_classes=num_classes,
        clip_len=config.data.clip_len,
        crop_size=config.data.crop_size,
        dropout=config.model.dropout,
    )


def memory_format_for(device: torch.device | str, setting: bool | str = "auto") -> torch.memory_format:
    """The tensor layout X3D runs in on ``device``: ``train.channels_last`` resolved.

    ``auto`` takes channels-last-3d where it measured faster: on CUDA (cuDNN's preferred layout)
    and on CPUs where PyTorch dispatches AVX-512 kernels (oneDNN's 3D convolutions: a training
    step 1.9x faster on an AVX-512 EPYC). On AVX2-only CPUs channels-last measured 0.9x (a step of
    X3D-XS at 8x64x64, batch 8), so they keep the contiguous layout. ``benchmarks/train_step.py``
    prints both on the machine at hand.
    """
    if setting is True or setting is False:
        return torch.channels_last_3d if setting else torch.contiguous_format
    if torch.device(device).type == "cuda":
        return torch.channels_last_3d
    capability = torch.backends.cpu.get_cpu_capability()
    return torch.channels_last_3d if capability.startswith("AVX512") or "AMX" in capability else torch.contiguous_format


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of ``model``, optionally only those that require grad."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def load_pretrained(model: nn.Module, url: str) -> list[str]:
    """Loads weights from a checkpoint at any storage URL into ``model``, in place.

    Accepts pytorchvideo's Kinetics checkpoints (``{"model_state": ...}``), this project's
    checkpoints (``{"model": ...}``) and bare state dicts; ``module.`` (DDP) and ``_orig_mod.``
    (``torch.compile``) prefixes are stripped. The file is unpickled with ``weights_only=True``
    whatever its origin, so it can never run code. A classifier head sized for another number
    of classes is skipped with a warning: fine-tuning starts it from scratch.

    Args:
        model: The model to fill, from :func:`build_model`.
        url: Local path or URL of the checkpoint (``s3://``, ``memory://``...).

    Returns:
        The model's keys left at their initial values (a skipped head, absent BatchNorm counters).

    Raises:
        StorageError: the URL cannot be read.
        DataError: the file is not a weights-only PyTorch checkpoint or holds no state dict.
        ConfigError: the weights belong to another architecture (e.g. X3D-L into X3D-S).
    """
    state = _extract_state_dict(_load_weights_only(url), url)
    own = model.state_dict()
    head = _head_keys(model)

    skipped: list[str] = []
    mismatched: list[str] = []
    for key in own.keys() & state.keys():
        theirs, ours = state[key].shape, own[key].shape
        if theirs == ours:
            continue
        # Only the class dimension may differ, and only in the classifier.
        if key in head and theirs[1:] == ours[1:]:
            skipped.append(key)
        else:
            mismatched.append(f"{key} {tuple(theirs)} vs {tuple(ours)}")
    # Checkpoints from torch < 0.4.1 lack BatchNorm's step counter; it only matters for
    # momentum=None, so a missing one is not a different architecture.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if keys:
                listed = ", ".join(sorted(keys)[:3]) + (", ..." if len(keys) > 3 else "")
                parts.append(f"{len(keys)} {label} ({listed})")
        raise ConfigError(
            f"checkpoint {url} does not fit this model: {'; '.join(parts)}; "
            "check that model.variant matches the checkpoint's X3D size"
        )
    if skipped:
        theirs, ours = state[skipped[0]].shape[0], own[skipped[0]].shape[0]
        logger.warning("pretrained head has %d classes, this model %d: the head starts from scratch", theirs, ours)

    loadable = {k: v for k, v in state.items() if k not in skipped}
    model.load_state_dict(loadable, strict=False)
    not_loaded = sorted(k for k in own if k not in loadable)
    logger.info("loaded %d tensors from %s (%d left as initialised)", len(loadable), url, len(not_loaded))
    return not_loaded


def _load_weights_only(url: str) -> object:
    data = storage.read_bytes(url)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # The weights-only unpickler names the GLOBAL (class or function) it refused to import;
        # other unpickling errors mean bytes that are not a pickle at all.
        if "GLOBAL" in str(error):
            raise DataError(f"{url} is not a weights-only checkpoint: refusing to unpickle code") from error
        raise DataError(f"{url} is not a PyTorch checkpoint (cannot unpickle it)") from error
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{url} is not a PyTorch checkpoint: {reason}") from error


def _extract_state_dict(checkpoint: object, url: str) -> dict[str, torch.Tensor]:
    state: object = checkpoint
    if isinstance(checkpoint, Mapping):
        for wrapper in ("model_state", "model"):
            if isinstance(checkpoint.get(wrapper), Mapping):
                state = checkpoint[wrapper]
                break
    if not isinstance(state, Mapping) or not state or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise DataError(
            f"{url} holds no model weights: expected a state dict, or a dict with one under 'model_state' or 'model'"
        )
    return {_strip_wrappers(key): value for key, value in state.items()}


def _strip_wrappers(key: str) -> str:
    # DDP saves "module.x", torch.compile "_orig_mod.x"; a trainer may have used both.
    for prefix in ("module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def _head_keys(model: nn.Module) -> set[str]:
    # The classifier is the last Linear layer (pytorchvideo's ResNetBasicHead.proj).
    name = None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            name = module_name
    if name is None:
        return set()
    return {f"{name}.{param}" for param, _ in model.get_submodule(name).named_parameters(recurse=False)}

