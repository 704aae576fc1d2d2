"""A distributed sampler that resumes mid-epoch, also on a different number of ranks."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import Sampler

from actiontrain.errors import ConfigError, DataError

__all__ = ["ResumableDistributedSampler"]

_MASK_63 = (1 << 63) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads (seed, epoch) over the seed space


class ResumableDistributedSampler(Sampler[int]):
    """Shards one global, per-epoch order of sample indices across ranks, and resumes mid-epoch.

    The epoch's global order depends only on ``(seed, epoch)``. ``consumed`` counts the samples of
    that order that all ranks together have already used; each rank then iterates over its
    strided share of the rest, ``order[consumed:][rank::world_size]``. Ranks are disjoint and
    together cover exactly the remaining samples, whatever ``world_size`` was before a restart.

    When every rank has taken ``k`` samples, the first ``k * world_size`` remaining samples are
    used, so a trainer advances by ``k * world_size`` (:meth:`advance`) and saves
    :meth:`state_dict` with its checkpoint. Ranks may differ by one sample at the end of an epoch
    (nothing is padded or dropped); the trainer decides how to handle the last uneven step.

    The sampler only yields indices, so it is safe with multi-worker DataLoaders.
    """

    def __init__(
        self, num_samples: int, *, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True
    ) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0:
            raise ConfigError(f"num_samples must be an integer >= 0, got {num_samples!r}")
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ConfigError(f"world_size must be an integer >= 1, got {world_size!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, {world_size - 1}] for world_size {world_size}, got {rank!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self.num_samples = num_samples
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.consumed = 0

    def set_epoch(self, epoch: int, consumed: int = 0) -> None:
        """Selects the epoch to iterate, skipping its first ``consumed`` samples (all ranks together).

        Raises:
            ConfigError: ``epoch`` is negative or ``consumed`` is outside ``[0, num_samples]``.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ConfigError(f"epoch must be an integer >= 0, got {epoch!r}")
        self._check_consumed(consumed)
        self.epoch = epoch
        self.consumed = consumed

    def advance(self, num_consumed_global: int) -> None:
        """Records that all ranks together used ``num_consumed_global`` more samples of this epoch.

        The count saturates at ``num_samples``, so a trainer that counts whole global batches
        cannot overshoot the epoch's end. An iteration already in progress is not affected.
        """
        if isinstance(num_consumed_global, bool) or not isinstance(num_consumed_global, int):
            raise TypeError(f"num_consumed_global must be an int, got {type(num_consumed_global).__name__}")
        if num_consumed_global < 0:
            raise ValueError(f"num_consumed_global must be >= 0, got {num_consumed_global}")
        self.consumed = min(self.consumed + num_consumed_global, self.num_samples)

    def global_order(self, epoch: int | None = None) -> list[int]:
        """The order of all sample indices in ``epoch`` (default: the current one), before sharding."""
        epoch = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator()
        generator.manual_seed((self.seed * _GOLDEN + epoch) & _MASK_63)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        # Snapshot: advance() during iteration affects the next epoch/resume, not this pass.
        remaining = self.global_order()[self.consumed :]
        return iter(remaining[self.rank :: self.world_size])

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples - self.consumed, self.world_size))

    def state_dict(self) -> dict[str, int]:
        """The position to resume from: ``epoch``, ``consumed`` (all ranks), ``seed``, ``num_samples``."""
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed, "num_samples": self.num_samples}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores a position saved by :meth:`state_dict`, possibly with another ``world_size``.

        The saved seed replaces this sampler's, so the resumed epoch keeps its order.

        Raises:
            DataError: the state was saved for a dataset with a different number of samples.
            ConfigError: the state lacks a key or holds an invalid value.
        """
        missing = [key for key in ("epoch", "consumed", "seed", "num_samples") if key not in state]
        if missing:
            raise ConfigError(f"sampler state lacks {', '.join(missing)}; it was not saved by ResumableDistributedSampler")
        if int(state["num_samples"]) != self.num_samples:
            raise DataError(
                f"sampler state was saved for {int(state['num_samples'])} samples but the dataset has "
                f"{self.num_samples}; resume with the same dataset index, or start a new run"
            )
        self.seed = int(state["seed"])
        self.set_epoch(int(state["epoch"]), int(state["consumed"]))

    def _check_consumed(self, consumed: int) -> None:
        if isinstance(consumed, bool) or not isinstance(consumed, int) or not 0 <= consumed <= self.num_samples:
            raise ConfigError(f"consumed must be in [0, {self.num_samples}], got {consumed!r}")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_samples={self.num_samples}, rank={self.rank}, "
            f"world_size={self.world_size}, seed={self.seed}, shuffle={self.shuffle}, "
            f"epoch={self.epoch}, consumed={self.consumed})"
        )
