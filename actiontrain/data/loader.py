"""Batches of clips for one rank: resumable order, fork-safe remote reads, bad samples skipped and counted."""

from __future__ import annotations

import logging
import math
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
    """Gives each DataLoader worker its own fsspec event loop and connections.

    A forked worker inherits the parent's s3fs instances, whose aiohttp sessions belong to the
    parent's event-loop thread, which does not exist in the child; using them hangs. Dropping the
    cached instances and the loop makes the worker open its own on first use.
    """
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

    The order comes from a :class:`ResumableDistributedSampler`; ``set_epoch(epoch, consumed)``
    resumes an epoch after ``consumed`` samples (counted over all ranks).
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
        self.sampler.set_epoch(epoch, consumed)
        # The order is known before the epoch starts: let workers fetch their next batch early.
        self.dataset.set_epoch(epoch, schedule=list(self.sampler))

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self._loader:
            if batch["fatal"]:
                raise StorageError(batch["fatal"][0])
            self.tracker.record(batch["errors"])
            yield batch
