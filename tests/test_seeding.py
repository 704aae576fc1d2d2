"""Seeds derived from what they are for: per-sample and per-step streams, the same on every run."""

from __future__ import annotations

import torch

from actiontrain.seeding import derive_seed, seed_step


def _dropout_mask(seed: int, *, rank: int, step: int) -> torch.Tensor:
    seed_step(seed, rank=rank, step=step)
    return torch.nn.functional.dropout(torch.ones(64), p=0.5)


def test_derived_seeds_depend_on_every_part_and_nothing_else():
    assert derive_seed(3, 1, 7) == derive_seed(3, 1, 7)
    assert len({derive_seed(3, 1, 7), derive_seed(3, 1, 8), derive_seed(3, 2, 7), derive_seed(4, 1, 7)}) == 4
    assert 0 <= derive_seed(2**40, -1, 0) < 2**63


def test_each_rank_draws_its_own_dropout_masks_at_the_same_step():
    assert not torch.equal(_dropout_mask(2, rank=0, step=10), _dropout_mask(2, rank=1, step=10))


def test_a_restart_at_step_n_draws_the_masks_an_uninterrupted_run_draws():
    uninterrupted = [_dropout_mask(2, rank=1, step=step) for step in range(1, 6)]
    torch.manual_seed(12345)  # whatever the restarted process did before: imports, model init
    resumed = [_dropout_mask(2, rank=1, step=step) for step in range(3, 6)]
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted[2:], resumed, strict=True))
