"""AdamW without decay on biases and norms, an epoch-position learning-rate schedule, clipping."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from actiontrain.config import OptimConfig, check_positive
from actiontrain.errors import DataError

__all__ = [
    "EpochLR",
    "build_lr_scheduler",
    "build_optimizer",
    "clip_gradients",
    "epoch_position",
    "lr_factor_at",
    "scaled_lr",
]

logger = logging.getLogger(__name__)


def scaled_lr(config: OptimConfig, *, world_size: int, batch_size: int) -> float:
    """The peak learning rate for this global batch.

    With ``config.scale_lr`` the rate grows linearly with the global batch
    (``world_size * batch_size``) over ``config.reference_batch`` (Goyal et al.'s linear scaling
    rule); otherwise it is ``config.lr`` whatever the batch.

    Raises:
        ConfigError: ``world_size`` or ``batch_size`` is not a positive integer.
    """
    check_positive("world_size", world_size)
    check_positive("batch_size", batch_size)
    if not config.scale_lr:
        return config.lr
    return config.lr * world_size * batch_size / config.reference_batch


def build_optimizer(model: nn.Module, config: OptimConfig, *, world_size: int, batch_size: int) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters, with weight decay on weights only.

    Two parameter groups, always in this order so that optimizer checkpoints line up:
    ``[0]`` the multi-dimensional weights (convolutions, linear layers) with
    ``config.weight_decay``, ``[1]`` the one-dimensional parameters (biases, BatchNorm and
    LayerNorm scales and shifts) with no decay. Decaying the latter only pulls normalisation
    scales towards zero without regularising anything (as in timm, BERT and the MoCo/ViT recipes).
    Frozen parameters (``requires_grad=False``) are left out.

    Args:
        model: the network (the bare module or its DDP wrapper).
        config: the optimiser section of the recipe.
        world_size: number of training processes now.
        batch_size: clips per process and step.

    Returns:
        The optimiser, at the peak learning rate :func:`scaled_lr`; the schedule of
        :func:`build_lr_scheduler` sets the rate of each step.

    Raises:
        ConfigError: ``world_size`` or ``batch_size`` is not a positive integer.
    """
    lr = scaled_lr(config, world_size=world_size, batch_size=batch_size)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, parameter in model.named_parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # AdamW only needs one non-empty list overall; an empty group keeps the layout fixed.
    return torch.optim.AdamW(groups, lr=lr, weight_decay=config.weight_decay)


def epoch_position(epoch: int, *, consumed: int, num_samples: int) -> float:
    """Epochs completed so far: ``epoch`` plus the fraction of its samples already used.

    Counted in samples of the whole job (the sampler's ``consumed``), not in steps, so the
    position does not depend on the world size or the batch.
    """
    if num_samples <= 0:
        return float(epoch)
    return epoch + min(consumed, num_samples) / num_samples


def lr_factor_at(epoch_position: float, config: OptimConfig) -> float:
    """The learning-rate factor (times the peak rate) at a position measured in epochs.

    mmcv's ``step`` policy with linear warm-up, as in the OTX X3D template, written over epochs
    instead of iterations: the factor is ``lr_gamma ** (completed_epochs // lr_step_every)``,
    and during the first ``warmup_epochs`` it is further scaled by a linear ramp from
    ``warmup_start_factor`` (position 0) to 1 (position ``warmup_epochs``).

    Args:
        epoch_position: epochs completed before the step the rate is for, fractions included
            (``2.5`` = half-way through the third epoch); see :func:`epoch_position`.
        config: the optimiser section of the recipe.

    Returns:
        The factor, in ``(0, 1]``.
    """
    if epoch_position < 0 or not math.isfinite(epoch_position):
        raise ValueError(f"epoch_position must be a finite number >= 0, got {epoch_position!r}")
    factor = config.lr_gamma ** (math.floor(epoch_position) // config.lr_step_every)
    if epoch_position < config.warmup_epochs:
        progress = epoch_position / config.warmup_epochs
        factor *= config.warmup_start_factor + (1.0 - config.warmup_start_factor) * progress
    return factor


class EpochLR:
    """Sets every parameter group's learning rate to ``base_lr * lr_factor_at(position)``.

    A function of the *epoch position* rather than of a step count. In an elastic job the number
    of steps per epoch changes with the world size, so a step-indexed ``LambdaLR`` resumed on a
    different number of nodes would be in the wrong place of its warm-up or decay; the
    position (epochs completed, fractions included; :func:`epoch_position`) survives the
    restart. The rate is recomputed from scratch each time, never multiplied onto the previous
    one, so nothing drifts.

    Usage: call ``step(position)`` just before each ``optimizer.step()``, with the position
    reached before that step (0.0 for the very first), as mmcv sets the rate before each
    iteration. The rate for position 0 is already set on construction.

    Resuming: ``state_dict()`` holds the last position only; ``base_lr`` is not restored by
    ``load_state_dict()`` because it follows this run's global batch (:func:`scaled_lr`), which
    may have changed with the world size. The optimiser's own state carries the old run's rate;
    since ``load_state_dict()`` and every ``step(position)`` overwrite it, the order in which
    the two states are loaded does not matter as long as ``step`` precedes each optimiser step.
    Only the config must be the same as before (the caller rebuilds the schedule from it).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, config: OptimConfig, *, base_lr: float) -> None:
        if not base_lr > 0:
            raise ValueError(f"base_lr must be > 0, got {base_lr!r}")
        self.optimizer = optimizer
        self.config = config
        self.base_lr = float(base_lr)
        self.epoch_position = 0.0
        self._apply()

    def step(self, epoch_position: float) -> None:
        """Sets the learning rate for the optimiser step taken at ``epoch_position`` (in epochs)."""
        self.epoch_position = float(epoch_position)
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The rate of each parameter group, as last set (``LRScheduler``'s name, for loggers)."""
        return [self.base_lr * lr_factor_at(self.epoch_position, self.config)] * len(self.optimizer.param_groups)

    def state_dict(self) -> dict[str, Any]:
        """The position; ``base_lr`` too, only to log a change on resume."""
        return {"epoch_position": self.epoch_position, "base_lr": self.base_lr}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restores the position and sets the rate for it.

        Raises:
            DataError: the state was not saved by an ``EpochLR`` (e.g. a ``LambdaLR``).
        """
        if "epoch_position" not in state_dict:
            raise DataError(
                f"lr_scheduler state has no epoch_position (not saved by EpochLR?), got keys {sorted(state_dict)}"
            )
        saved_base = state_dict.get("base_lr")
        if saved_base is not None and not math.isclose(float(saved_base), self.base_lr):
            logger.info("peak learning rate %.3g -> %.3g for the new global batch", saved_base, self.base_lr)
        self.step(float(state_dict["epoch_position"]))

    def _apply(self) -> None:
        lr = self.base_lr * lr_factor_at(self.epoch_position, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, *, world_size: int, batch_size: int
) -> EpochLR:
    """The epoch-position schedule of ``config`` for ``optimizer`` (see :class:`EpochLR`).

    The peak rate is derived from the config and the current global batch (:func:`scaled_lr`)
    rather than read from ``optimizer``, whose rate is whatever a loaded checkpoint left there.

    Args:
        optimizer: the optimiser from :func:`build_optimizer`.
        config: the optimiser section of the recipe.
        world_size: number of training processes now.
        batch_size: clips per process and step.

    Raises:
        ConfigError: ``world_size`` or ``batch_size`` is not a positive integer.
    """
    return EpochLR(optimizer, config, base_lr=scaled_lr(config, world_size=world_size, batch_size=batch_size))


def clip_gradients(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clips the global gradient norm of ``model`` to ``max_norm`` and returns the norm before clipping.

    With a fp16 ``GradScaler``, call ``scaler.unscale_(optimizer)`` first, or the norm is in
    scaled units. A non-finite norm is returned as is (the scaler then skips the step).

    Args:
        model: the network (its parameters' ``.grad`` are modified in place).
        max_norm: the largest allowed L2 norm over all gradients; 0 measures without clipping.

    Returns:
        The total L2 norm of the gradients before clipping, as a 0-d tensor on the gradients'
        device (0 when there are none). Not a float: reading it would make a GPU step wait.
    """
    if max_norm < 0:
        raise ValueError(f"max_norm must be >= 0, got {max_norm!r}")
    parameters = [p for p in model.parameters() if p.grad is not None]
    if not parameters:
        return torch.tensor(0.0)
    if max_norm == 0:
        return torch.nn.utils.get_total_norm([p.grad for p in parameters])
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
