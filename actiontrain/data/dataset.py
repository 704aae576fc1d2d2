"""A torch ``Dataset`` of clips: decode the needed frames, sample in time, augment."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import torch
from torch.utils.data import Dataset

from actiontrain.config import DataConfig
from actiontrain.data.catalog import ActionDataset, Sample
from actiontrain.data.sampling import train_clip_indices
from actiontrain.data.transforms import build_train_transform, flip_pairs_from_names
from actiontrain.data.views import EvalViews
from actiontrain.data.prefetch import MediaPrefetcher
from actiontrain.data.video import open_media
from actiontrain.errors import DataError, NotFoundError, StorageError
from actiontrain.seeding import derive_seed

__all__ = ["ClipDataset", "build_clip_dataset", "sample_seed"]


def build_clip_dataset(dataset: ActionDataset, *, subset: str, config: DataConfig, train: bool) -> ClipDataset:
    """The clips of one subset, flipping with the dataset's label pairs plus ``config.flip_pairs``.

    Raises:
        DataError: the subset does not exist.
        ConfigError: a flip pair names a class the dataset does not have.
    """
    pairs = list(dataset.flip_pairs) + [tuple(pair) for pair in config.flip_pairs]
    flip_pairs = flip_pairs_from_names(pairs, dataset.classes) if train else None
    return ClipDataset(dataset.samples(subset), config=config, train=train, flip_pairs=flip_pairs)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The random seed of one sample in one epoch: independent of worker, rank and batch."""
    return derive_seed(seed, epoch, index)


class ClipDataset(Dataset):
    """Clips of labelled videos, ready for X3D: ``(C, T, H, W)`` float tensors.

    Training items are one random segment with random resize, crop and (label-aware) flip;
    evaluation items hold every view, ``(num_clips * num_crops, C, T, H, W)``. A sample whose
    media cannot be read yields ``{"index", "error"}`` instead of raising, so one bad file does
    not kill a worker; :class:`~actiontrain.data.loader.ClipLoader` counts and reports those.
    When storage itself fails (unreachable, credentials) the item says so with ``"fatal"`` and
    the loader stops with that message.

    Randomness comes only from ``(seed, epoch, index)``, so a sample gets the same clip
    whichever worker, rank or restart reads it.
    """

    def __init__(
        self,
        samples: list[Sample],
        *,
        config: DataConfig,
        train: bool,
        flip_pairs: dict[int, int] | None = None,
    ):
        self.samples = list(samples)
        self.config = config
        self.train = train
        self.epoch = 0
        self.seed = config.seed
        """Seed of every sample's temporal offset and augmentation (``data.seed``, or a resumed run's)."""
        self._prefetcher = MediaPrefetcher([sample.url for sample in self.samples])
        if train:
            self._transform = build_train_transform(
                crop_size=config.crop_size,
                short_side_range=config.train_short_side,
                flip_prob=config.flip_prob,
                flip_pairs=flip_pairs if config.label_aware_flip else None,
                mean=config.mean,
                std=config.std,
            )
        else:
            self._views = EvalViews(config)

    def set_epoch(self, epoch: int, *, schedule: Sequence[int] | None = None) -> None:
        """Changes the random segments and augmentations (call before each epoch).

        Args:
            epoch: The epoch number (part of every sample's seed).
            schedule: The order in which this rank will read samples, if known; lets remote
                media be fetched a batch ahead.
        """
        self.epoch = epoch
        self._prefetcher.set_schedule(schedule)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._load(index, None)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A batch: remote files are fetched concurrently, then decoded and augmented in order.

        The DataLoader calls this instead of ``__getitem__`` per sample. Only I/O runs in
        threads: decoding and augmentation stay on this thread, so the global RNG that
        torchvision's transforms draw from is never shared.
        """
        fetches = self._prefetcher.fetch_batch(indices)
        return [self._load(index, fetch) for index, fetch in zip(indices, fetches)]

    def _load(self, index: int, fetch: Future | None) -> dict[str, Any]:
        sample = self.samples[index]
        config = self.config
        # A private RNG stream per sample: torchvision's random transforms use the global one.
        with torch.random.fork_rng(devices=[]):
            seed = sample_seed(self.seed, self.epoch, index)
            torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed also seeds every accelerator
            generator = torch.Generator().manual_seed(seed)
            try:
                file = fetch.result() if fetch is not None else None
                with open_media(sample.url, decoder=config.decoder, file=file) as reader:
                    if self.train:
                        indices = train_clip_indices(
                            reader.num_frames,
                            clip_len=config.clip_len,
                            frame_interval=config.frame_interval,
                            generator=generator,
                        )
                        frames = reader.get_frames(indices)
                    else:
                        video = self._views.read(reader)
            except (DataError, NotFoundError) as error:  # this sample is bad: skip and count it
                return {"index": index, "error": str(error)}
            except StorageError as error:  # storage itself fails (outage, credentials): stop
                return {"index": index, "error": str(error), "fatal": True}
            label = -1 if sample.label is None else sample.label
            if self.train:
                video, label = self._transform(frames, label)
        return {"video": video, "label": label, "index": index}
