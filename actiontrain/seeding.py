"""Seeds derived from tuples of integers, so a random stream depends on what it is for, never on who runs it."""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derive_seed", "seed_step"]

_MASK_63 = (1 << 63) - 1


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from ``parts`` (e.g. ``seed, epoch, sample index``), well spread by a hash.

    The same parts give the same seed in every process, worker and restart; neighbouring parts
    (index 7 and 8) give unrelated seeds.
    """
    digest = hashlib.blake2b(":".join(str(int(part)) for part in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK_63


def seed_step(seed: int, *, rank: int, step: int) -> None:
    """Seeds the global CPU and CUDA generators for one training step of one rank.

    Dropout is the step's only randomness (augmentation is seeded per sample). Deriving it from
    ``(seed, rank, step)`` gives every rank its own masks, and a restart at step N, on any number
    of ranks, draws exactly what an uninterrupted run would have drawn, without saving RNG states.
    """
    torch.manual_seed(derive_seed(seed, rank, step))
