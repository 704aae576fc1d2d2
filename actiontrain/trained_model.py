"""What a checkpoint holds: a trained model (step, recipe, classes, weights) and the state a resume needs.

The one place that spells a checkpoint's keys. Training writes :class:`TrainingState`; evaluation,
export and the tests read a :class:`TrainedModel` (or a whole :class:`TrainingState`) back through
:meth:`TrainedModel.load`, never by key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from actiontrain.checkpoint import CheckpointManager, load_checkpoint
from actiontrain.config import Config
from actiontrain.errors import DataError
from actiontrain.model import build_model_for_config
from actiontrain.recipe import apply_overrides, config_from_dict, config_to_dict

__all__ = ["TrainedModel", "TrainingState"]

# The checkpoint's top-level keys (torchtitan's names where they exist).
_MODEL, _CONFIG, _CLASSES = "model", "config", "classes"
_OPTIMIZER, _LR_SCHEDULER, _GRAD_SCALER = "optimizer", "lr_scheduler", "grad_scaler"
_SAMPLER, _TRAIN_STATE = "sampler", "train_state"
_STEP, _WORLD_SIZE = "step", "world_size"


@dataclass(frozen=True, kw_only=True)
class TrainedModel:
    """A model as a training run left it at one step."""

    step: int
    """The optimizer steps that went into the weights."""
    config: Config
    """The resolved recipe it was trained with (sampling, crop, normalisation, architecture)."""
    classes: list[str]
    """Class names in output order."""
    weights: Mapping[str, torch.Tensor]
    """The model's ``state_dict()``."""

    @classmethod
    def load(cls, url: str, *, overrides: Sequence[str] = (), map_location: Any = "cpu") -> TrainedModel:
        """The model of one checkpoint: a ``checkpoints/step-N`` folder, or a run's output (its newest).

        Args:
            url: A checkpoint folder or a training ``--output``.
            overrides: ``section.key=value`` overrides of the saved recipe (e.g. evaluation views).
            map_location: Where tensors are loaded, as for ``torch.load``.

        Raises:
            NotFoundError: no committed checkpoint there.
            DataError: the checkpoint is corrupt or not one of ours.
            ConfigError: a bad override.
        """
        step, state = load_checkpoint(url, map_location=map_location)
        model = cls.from_state(step, state, url=url)
        return model.with_overrides(overrides) if overrides else model

    @classmethod
    def from_state(cls, step: int, state: Mapping[str, Any], *, url: str = "the checkpoint") -> TrainedModel:
        """The model part of a checkpoint's state dict.

        Raises:
            DataError: a key is missing (not a checkpoint of this project).
        """
        missing = [key for key in (_MODEL, _CONFIG, _CLASSES) if key not in state]
        if missing:
            raise DataError(f"{url} lacks {', '.join(missing)}: it is not an actiontrain training checkpoint")
        return cls(
            step=step,
            config=config_from_dict(state[_CONFIG]),
            classes=[str(name) for name in state[_CLASSES]],
            weights=state[_MODEL],
        )

    def with_overrides(self, overrides: Sequence[str]) -> TrainedModel:
        """The same model with ``section.key=value`` overrides applied to its recipe."""
        return replace(self, config=config_from_dict(apply_overrides(config_to_dict(self.config), overrides)))

    def build_model(self) -> nn.Module:
        """The network with these weights, on the CPU, in eval mode."""
        model = build_model_for_config(self.config, num_classes=len(self.classes))
        model.load_state_dict(self.weights)
        return model.eval()

    def state(self) -> dict[str, Any]:
        """This model's part of a checkpoint's state dict."""
        return {_MODEL: self.weights, _CONFIG: config_to_dict(self.config), _CLASSES: list(self.classes)}


@dataclass(frozen=True, kw_only=True)
class TrainingState:
    """Everything a training run saves at a step: its model, and what resuming it takes."""

    model: TrainedModel
    optimizer: Mapping[str, Any]
    """``optimizer.state_dict()``."""
    lr_scheduler: Mapping[str, Any]
    """``lr_scheduler.state_dict()``."""
    grad_scaler: Mapping[str, Any]
    """``GradScaler.state_dict()``; empty when no scaler was enabled (CPU, bf16)."""
    data: Mapping[str, int]
    """The training loader's position (:meth:`~actiontrain.data.loader.ClipLoader.state_dict`)."""
    world_size: int
    """Processes that trained up to this step."""

    @property
    def step(self) -> int:
        return self.model.step

    def state(self) -> dict[str, Any]:
        """The dict :meth:`CheckpointManager.save` writes."""
        return {
            **self.model.state(),
            _OPTIMIZER: self.optimizer,
            _LR_SCHEDULER: self.lr_scheduler,
            _GRAD_SCALER: self.grad_scaler,
            _SAMPLER: dict(self.data),
            _TRAIN_STATE: {_STEP: self.step, _WORLD_SIZE: self.world_size},
        }

    def save(self, manager: CheckpointManager) -> str:
        """Writes and commits this state as checkpoint ``step``; returns its folder. Rank 0 only."""
        return manager.save(self.step, self.state(), epoch=int(self.data["epoch"]))

    @classmethod
    def from_state(cls, step: int, state: Mapping[str, Any], *, url: str = "the checkpoint") -> TrainingState:
        """A whole checkpoint's state dict, read back.

        Raises:
            DataError: a key is missing (not a training checkpoint of this project).
        """
        model = TrainedModel.from_state(step, state, url=url)
        missing = [key for key in (_OPTIMIZER, _LR_SCHEDULER, _SAMPLER, _TRAIN_STATE) if key not in state]
        if missing:
            raise DataError(f"{url} lacks {', '.join(missing)}: it cannot resume a training run")
        return cls(
            model=model,
            optimizer=state[_OPTIMIZER],
            lr_scheduler=state[_LR_SCHEDULER],
            grad_scaler=state.get(_GRAD_SCALER) or {},
            data=state[_SAMPLER],
            world_size=int(state[_TRAIN_STATE].get(_WORLD_SIZE, 0)),
        )

    @classmethod
    def load_latest(cls, manager: CheckpointManager) -> TrainingState | None:
        """The newest committed checkpoint of a run, or None when there is none yet.

        Raises:
            DataError: checkpoints exist but none can be loaded, or they are not training states.
            StorageError: the storage cannot be read.
        """
        resumed = manager.load_latest(map_location="cpu")
        if resumed is None:
            return None
        step, state = resumed
        return cls.from_state(step, state, url=manager.step_url(step))

    @classmethod
    def load(cls, url: str) -> TrainingState:
        """One checkpoint by URL, as :meth:`TrainedModel.load` takes it."""
        step, state = load_checkpoint(url, map_location="cpu")
        return cls.from_state(step, state, url=url)
