"""Typed configuration sections; each field's docstring is its help text."""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass, field, fields
from typing import Literal

from actiontrain.errors import ConfigError

__all__ = [
    "DECODERS",
    "DEVICES",
    "EXPORT_PRECISIONS",
    "X3D_MEAN",
    "X3D_STD",
    "X3D_VARIANT_NAMES",
    "Config",
    "DataConfig",
    "Decoder",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "check_positive",
    "field_docs",
]

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
"""Device requests: ``auto`` takes this rank's GPU when CUDA works, else the CPU; ``cuda`` requires one."""
Decoder = Literal["auto", "torchcodec", "pyav"]
DECODERS: tuple[str, ...] = ("auto", "torchcodec", "pyav")
"""Video decoders: ``auto`` picks the measured fastest."""
EXPORT_PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
"""Weight precisions of an OpenVINO export (INT8 comes from quantization, not from export)."""
X3D_MEAN: tuple[float, float, float] = (0.45, 0.45, 0.45)
"""Per-channel mean the pretrained X3D checkpoints were trained with (pytorchvideo Kinetics recipe)."""
X3D_STD: tuple[float, float, float] = (0.225, 0.225, 0.225)
"""Per-channel standard deviation matching :data:`X3D_MEAN`."""


@dataclass(kw_only=True)
class DataConfig:
    """How clips are read, sampled and augmented (defaults: the OTX X3D template)."""

    clip_len: int = 8
    """Frames per clip."""
    frame_interval: int = 4
    """Distance between sampled frames (the OTX X3D template samples every 4th frame)."""
    crop_size: int = 224
    """Side of the square crop fed to the model."""
    train_short_side: tuple[int, int] = (256, 320)
    """Training: the short side is resized to a random size in this range before cropping."""
    eval_short_side: int = 256
    """Evaluation: the short side is resized to this before center/multi crops."""
    num_eval_clips: int = 1
    """Evaluation: uniformly spaced clips per video (multi-view)."""
    num_eval_crops: int = 1
    """Evaluation: spatial crops per clip, 1 (center) or 3 (left/center/right)."""
    flip_prob: float = 0.5
    """Probability of a horizontal flip during training."""
    label_aware_flip: bool = True
    """Swap the labels of mirror-image classes (the dataset's flip pairs) when a clip is flipped."""
    mean: tuple[float, float, float] = X3D_MEAN
    """Per-channel mean for normalisation (RGB, 0-1 scale)."""
    std: tuple[float, float, float] = X3D_STD
    """Per-channel standard deviation for normalisation."""
    decoder: Decoder = "auto"
    """Video decoder: auto (the measured fastest), torchcodec or pyav."""
    num_workers: int = 2
    """DataLoader worker processes per rank."""
    max_bad_fraction: float = 0.01
    """Loading fails once more than this fraction of the samples could not be read."""
    seed: int = 0
    """Seed of the data order, temporal offsets and augmentation."""
    flip_pairs: list[tuple[str, str]] = field(default_factory=list)
    """Extra label pairs that swap under a horizontal flip, beside those the dataset declares."""

    def __post_init__(self) -> None:
        check_positive("data.clip_len", self.clip_len)
        check_positive("data.frame_interval", self.frame_interval)
        check_positive("data.crop_size", self.crop_size)
        check_positive("data.eval_short_side", self.eval_short_side)
        check_positive("data.num_eval_clips", self.num_eval_clips)
        low, high = self.train_short_side
        if not 0 < low <= high:
            raise ConfigError(f"data.train_short_side must be (min, max) with 0 < min <= max, got {self.train_short_side}")
        if low < self.crop_size or self.eval_short_side < self.crop_size:
            raise ConfigError(
                f"data.train_short_side {self.train_short_side} and data.eval_short_side {self.eval_short_side} "
                f"must be >= data.crop_size {self.crop_size}"
            )
        if self.num_eval_crops not in (1, 3):
            raise ConfigError(f"data.num_eval_crops must be 1 or 3, got {self.num_eval_crops}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ConfigError(f"data.flip_prob must be in [0, 1], got {self.flip_prob}")
        if not 0.0 <= self.max_bad_fraction < 1.0:
            raise ConfigError(f"data.max_bad_fraction must be in [0, 1), got {self.max_bad_fraction}")
        if self.decoder not in DECODERS:
            raise ConfigError(f"data.decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"data.std must be > 0 per channel, got {self.std}")


X3D_VARIANT_NAMES = ("xs", "s", "m", "l")
"""X3D sizes of the paper (pytorchvideo's hub settings)."""


@dataclass(kw_only=True)
class ModelConfig:
    """Which X3D to build and where its starting weights come from."""

    variant: Literal["xs", "s", "m", "l"] = "s"
    """X3D size: xs, s (default), m or l, with the paper's width/depth settings."""
    pretrained: str = ""
    """URL of a pytorchvideo Kinetics X3D checkpoint or of this project's checkpoint; empty = from scratch."""
    dropout: float = 0.5
    """Dropout before the classifier."""

    def __post_init__(self) -> None:
        if self.variant not in X3D_VARIANT_NAMES:
            raise ConfigError(f"model.variant must be one of {', '.join(X3D_VARIANT_NAMES)}, got {self.variant!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW with linear warm-up, then step decay (the OTX X3D template's schedule)."""

    lr: float = 1e-3
    """Peak learning rate for the reference batch (see ``scale_lr``)."""
    weight_decay: float = 1e-4
    """AdamW's decoupled weight decay."""
    warmup_epochs: float = 3.0
    """Epochs of linear warm-up from ``warmup_start_factor * lr`` to ``lr``."""
    warmup_start_factor: float = 0.1
    """Learning-rate factor at the first step of warm-up."""
    lr_step_every: int = 5
    """Multiply the learning rate by ``lr_gamma`` every this many epochs."""
    lr_gamma: float = 0.1
    """Step-decay factor."""
    grad_clip: float = 40.0
    """Maximum global gradient norm; 0 disables clipping."""
    scale_lr: bool = False
    """Scale ``lr`` linearly with the global batch (world size x batch) over ``reference_batch``."""
    reference_batch: int = 8
    """Global batch that ``lr`` was tuned for (used only with ``scale_lr``)."""

    def __post_init__(self) -> None:
        for key in ("lr", "lr_gamma"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"optim.{key} must be > 0, got {getattr(self, key)}")
        for key in ("weight_decay", "warmup_epochs", "grad_clip"):
            if getattr(self, key) < 0:
                raise ConfigError(f"optim.{key} must be >= 0, got {getattr(self, key)}")
        if not 0.0 < self.warmup_start_factor <= 1.0:
            raise ConfigError(f"optim.warmup_start_factor must be in (0, 1], got {self.warmup_start_factor}")
        check_positive("optim.lr_step_every", self.lr_step_every)
        check_positive("optim.reference_batch", self.reference_batch)


@dataclass(kw_only=True)
class TrainConfig:
    """The training run: length, batch, logging, checkpoints, evaluation and export."""

    epochs: int = 10
    """Passes over the training subset."""
    batch_size: int = 8
    """Clips per device (per process) and step."""
    train_subset: str = "train"
    """Subset to train on."""
    val_subset: str = ""
    """Subset evaluated after each epoch; empty = the first of validation, val, test that exists."""
    log_every: int = 10
    """Steps between log lines and metrics records."""
    checkpoint_every: int = 0
    """Steps between checkpoints, besides the one at each epoch end; 0 = epoch ends only."""
    checkpoint_every_minutes: float = 0.0
    """Minutes (rank 0's clock) between checkpoints, besides the others; 0 = off. Bounds the work a preemption without warning loses."""
    keep_last: int = 3
    """Committed checkpoints kept in OUTPUT/checkpoints."""
    eval_every: int = 1
    """Epochs between evaluations; 0 disables evaluation."""
    device: str = "auto"
    """Where to train: auto (this rank's GPU when CUDA works, else the CPU), cuda (fail fast without one) or cpu."""
    amp: bool = True
    """Mixed precision on CUDA (bf16 where supported, else fp16 with a grad scaler); ignored on CPU."""
    channels_last: bool | Literal["auto"] = "auto"
    """channels-last-3d memory format: auto (where it measured faster: CUDA, AVX-512 CPUs), true or false."""
    export: bool = True
    """Export to OpenVINO (OUTPUT/export) at the end of training."""
    export_precision: str = "fp32"
    """Weights of that export: fp32, or fp16 (half the size; INT8 comes from `actiontrain optimize`)."""
    seed: int = 2
    """Seed of model initialisation (the data order has data.seed)."""
    sample_log: str = ""
    """Local folder where each process logs the sample indices of every step (audits, tests); empty = off."""

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "log_every", "keep_last"):
            check_positive(f"train.{key}", getattr(self, key))
        for key in ("checkpoint_every", "eval_every"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {getattr(self, key)!r}")
        minutes = self.checkpoint_every_minutes
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 <= minutes < float("inf"):
            raise ConfigError(f"train.checkpoint_every_minutes must be a number >= 0 (0 = off), got {minutes!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"train.device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.export_precision not in EXPORT_PRECISIONS:
            raise ConfigError(
                f"train.export_precision must be one of {', '.join(EXPORT_PRECISIONS)}, got {self.export_precision!r}"
            )


@dataclass(kw_only=True)
class Config:
    """A whole recipe: one section per concern."""

    data: DataConfig = field(default_factory=DataConfig)
    """Reading, sampling and augmenting clips."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The network."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser and learning-rate schedule."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The run itself."""


def check_positive(key: str, value: int) -> None:
    """Raises a ConfigError naming ``key`` unless ``value`` is an integer > 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value!r}")


def field_docs(section: type) -> dict[str, str]:
    """Field name -> docstring of a config dataclass (read from its source: the help text)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(section)))
    docs: dict[str, str] = {}
    body = tree.body[0].body
    for node, following in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr):
            value = following.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docs[node.target.id] = value.value.strip()
    missing = [f.name for f in fields(section) if f.name not in docs]
    assert not missing, f"{section.__name__} fields without a docstring: {missing}"
    return docs
