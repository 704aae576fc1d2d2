"""Batches of clips for one rank: resumable order, fork-safe remote reads, bad samples skipped and counted."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from typing import Any

import fsspec
import fsspec.asyn
import torch
from torch.utils.data import DataLoader

from actiontrain.data.dataset import ClipDataset
from actiontrain.data.sampler import ResumableDistributedSampler
from actiontrain.errors import DataError, StorageError

__all__ = ["BadSampleTracker", "ClipLoader", "collate_clips", "worker_init"]

logger = logging.getLogger(__name__)


def collate_clips(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacks the readable samples; unreadable ones travel as ``errors`` for the main process to count."""
    good = [sample for sample in batch if "error" not in sample]
    errors = [(sample["index"], sample["error"]) for sample in batch if "error" in sample]
    fatal = [sample["error"] for sample in batch if sample.get("fatal")]
    if not good:
        return {
            "video": None,
            "label": None,
            "index": torch.empty(0, dtype=torch.long),
            "errors": errors,
            "fatal": fatal,
        }
    return {
        "video": torch.stack([sample["video"] for sample in good]),
        "label": torch.tensor([sample["label"] for sample in good], dtype=torch.long),
        "index": torch.tensor([sample["index"] for sample in good], dtype=torch.long),
        "errors": errors,
        "fatal": fatal,
    }


def worker_init(_worker_id: int) -> None:
    """Readies a DataLoader worker: its own fsspec event loop and connections, its own process group.

    A forked worker inherits the parent's s3fs instances, whose aiohttp sessions belong to the
    parent's event-loop thread, which does not exist in the child; using them hangs. Dropping the
    cached instances and the loop makes the worker open its own on first use.

    torchrun stops a worker by signalling its process group, and Ctrl-C signals the terminal's:
    a worker in the trainer's group would die of the SIGTERM meant for the trainer and take it
    down ("DataLoader worker exited unexpectedly") before it could finish its step and
    checkpoint. In a group of its own it is stopped by the trainer only (closing the loader, or
    exiting: workers watch their parent).
    """
    os.setpgid(0, 0)
    fsspec.asyn.reset_lock()
    fsspec.AbstractFileSystem.clear_instance_cache()
    for subclass in _all_subclasses(fsspec.AbstractFileSystem):
        subclass.clear_instance_cache()


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for subclass in cls.__subclasses__():
        found.add(subclass)
        found |= _all_subclasses(subclass)
    return found


class BadSampleTracker:
    """Counts unreadable samples; fails once they exceed ``max_fraction`` of the dataset."""

    def __init__(self, *, num_samples: int, max_fraction: float, describe=lambda index: str(index)):
        self.num_samples = num_samples
        self.max_fraction = max_fraction
        self.bad: dict[int, str] = {}
        self._describe = describe

    def record(self, errors: list[tuple[int, str]]) -> None:
        for index, message in errors:
            if index in self.bad:
                continue
            self.bad[index] = message
            logger.warning("skipped unreadable sample %s (%d so far): %s", self._describe(index), len(self.bad), message)
        limit = self.max_fraction * self.num_samples
        if len(self.bad) > limit:
            last = next(reversed(self.bad.values()))
            raise DataError(
                f"{len(self.bad)} of {self.num_samples} samples could not be read, more than "
                f"data.max_bad_fraction={self.max_fraction}; last: {last}; "
                "run 'actiontrain data check --deep' on the dataset"
            )


class ClipLoader:
    """Iterates one rank's batches of a :class:`ClipDataset`, skipping and counting bad samples.

    The loader owns the data's position: the epoch, the samples of it all ranks have consumed and
    the seed of the order. A training loop asks it how many steps are left (:meth:`steps_left`,
    the same on every rank), iterates, calls :meth:`advance` after each global step and
    :meth:`end_epoch` after the last; :meth:`state_dict` goes into checkpoints and
    :meth:`load_state_dict` resumes from one, also on another number of ranks.
    ``set_epoch(epoch, consumed)`` positions it directly (evaluation, tools).
    """

    def __init__(
        self,
        dataset: ClipDataset,
        *,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        num_workers: int | None = None,
        seed: int | None = None,
        tracker: BadSampleTracker | None = None,
    ):
        config = dataset.config
        self.dataset = dataset
        self.sampler = ResumableDistributedSampler(
            len(dataset), rank=rank, world_size=world_size, seed=config.seed if seed is None else seed, shuffle=shuffle
        )
        # Each rank judges its own share: against the whole dataset, 8 ranks could each skip 8x more.
        self.tracker = tracker or BadSampleTracker(
            num_samples=math.ceil(len(dataset) / world_size),
            max_fraction=config.max_bad_fraction,
            describe=lambda index: dataset.samples[index].url,
        )
        self.batch_size = batch_size
        self.world_size = world_size
        workers = config.num_workers if num_workers is None else num_workers
        self._loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate_clips,
            worker_init_fn=worker_init if workers else None,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
            prefetch_factor=2 if workers else None,
        )

    def set_epoch(self, epoch: int, consumed: int = 0) -> None:
        """Positions the loader at ``consumed`` samples (all ranks together) into ``epoch``."""
        self.sampler.set_epoch(epoch, consumed)
        self._prepare()

    def _prepare(self) -> None:
        # The order is known before the epoch starts: let workers fetch their next batch early.
        self.dataset.set_epoch(self.sampler.epoch, schedule=list(self.sampler))

    # -- position ------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The epoch being (or about to be) iterated."""
        return self.sampler.epoch

    @property
    def consumed(self) -> int:
        """Samples of this epoch that all ranks together have consumed."""
        return self.sampler.consumed

    def epoch_position(self) -> float:
        """Epochs done as a real number (2.5: halfway through the third), what schedules run on."""
        return self.sampler.epoch + self.sampler.consumed / max(self.sampler.num_samples, 1)

    def steps_left(self) -> int:
        """Steps to the end of this epoch, the same number on every rank.

        Ranks take strided shares of what is left, which differ by at most one sample: a rank
        whose share ends a step early gets no batch for the last step (see ``__iter__``).
        """
        remaining = self.sampler.num_samples - self.sampler.consumed
        return math.ceil(math.ceil(remaining / self.world_size) / self.batch_size)

    def full_steps_left(self) -> int:
        """Of :meth:`steps_left`, the first steps in which every rank takes a full batch.

        After any of these the consumed samples are exactly a prefix of the epoch's order, so only
        there may a checkpoint be taken mid-epoch.
        """
        remaining = self.sampler.num_samples - self.sampler.consumed
        return (remaining // self.world_size) // self.batch_size

    def advance(self) -> None:
        """Records one global step: every rank consumed a batch (the last may be short)."""
        self.sampler.advance(self.batch_size * self.world_size)

    @property
    def epoch_done(self) -> bool:
        """Whether every sample of this epoch has been consumed."""
        return self.sampler.consumed >= self.sampler.num_samples

    def end_epoch(self) -> None:
        """Moves to the start of the next epoch."""
        self.sampler.set_epoch(self.sampler.epoch + 1, 0)
        self._prepare()

    def state_dict(self) -> dict[str, int]:
        """The position: ``epoch``, ``consumed`` (all ranks), the order's ``seed``, ``num_samples``."""
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resumes at a saved position, on any number of ranks.

        The saved seed wins over this loader's (``data.seed``): the rest of the run keeps the
        order and augmentation it started with, so no sample of the interrupted epoch is lost or
        repeated. A changed ``data.seed`` is reported, and takes effect in a new output.

        Raises:
            DataError: the state was saved for a dataset with another number of samples.
            ConfigError: the state is not a loader's.
        """
        configured = self.sampler.seed
        self.sampler.load_state_dict(state)
        if self.sampler.seed != configured:
            logger.warning(
                "data.seed is %d but this run's data order was drawn with seed %d: resuming keeps %d "
                "(a changed seed takes effect in a new --output)",
                configured,
                self.sampler.seed,
                self.sampler.seed,
            )
        self.dataset.seed = self.sampler.seed
        self._prepare()

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self._loader:
            if batch["fatal"]:
                raise StorageError(batch["fatal"][0])
            self.tracker.record(batch["errors"])
            yield batch
