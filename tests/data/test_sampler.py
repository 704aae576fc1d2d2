"""ResumableDistributedSampler: deterministic epochs, disjoint full shards, exact mid-epoch resume."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from actiontrain.data.sampler import ResumableDistributedSampler
from actiontrain.errors import ConfigError, DataError


def _shards(num_samples: int, world_size: int, *, epoch: int = 0, consumed: int = 0, seed: int = 0) -> list[list[int]]:
    shards = []
    for rank in range(world_size):
        sampler = ResumableDistributedSampler(num_samples, rank=rank, world_size=world_size, seed=seed)
        sampler.set_epoch(epoch, consumed)
        shards.append(list(sampler))
        assert len(sampler) == len(shards[-1])
    return shards


def test_epoch_order_depends_only_on_seed_and_epoch():
    assert _shards(50, 1, epoch=3, seed=9) == _shards(50, 1, epoch=3, seed=9)
    assert _shards(50, 1, epoch=3, seed=9) != _shards(50, 1, epoch=4, seed=9)
    assert _shards(50, 1, epoch=3, seed=9) != _shards(50, 1, epoch=3, seed=10)
    assert sorted(_shards(50, 1, epoch=3)[0]) == list(range(50))


def test_no_shuffle_keeps_dataset_order():
    sampler = ResumableDistributedSampler(7, rank=1, world_size=2, shuffle=False)
    assert list(sampler) == [1, 3, 5]


@pytest.mark.parametrize("num_samples, world_size", [(10, 1), (10, 2), (10, 3), (11, 4), (2, 3), (0, 2)])
def test_ranks_are_disjoint_and_cover_every_sample(num_samples, world_size):
    shards = _shards(num_samples, world_size, epoch=1)
    flat = [index for shard in shards for index in shard]
    assert sorted(flat) == list(range(num_samples))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def _run_partially(num_samples: int, world_size: int, per_rank: int, *, epoch: int) -> tuple[list[int], dict]:
    """Each rank takes ``per_rank`` samples, then the job 'crashes'; returns what was used and the state."""
    used = []
    samplers = [ResumableDistributedSampler(num_samples, rank=r, world_size=world_size, seed=5) for r in range(world_size)]
    for sampler in samplers:
        sampler.set_epoch(epoch)
        used.extend(list(sampler)[:per_rank])
        sampler.advance(per_rank * world_size)
    states = [sampler.state_dict() for sampler in samplers]
    assert all(state == states[0] for state in states)  # every rank saves the same state
    return used, states[0]


@pytest.mark.parametrize("old_world, new_world", [(2, 1), (1, 3), (3, 2), (2, 2)])
def test_resume_mid_epoch_on_another_world_size_skips_and_repeats_nothing(old_world, new_world):
    num_samples = 23
    used, state = _run_partially(num_samples, old_world, per_rank=4, epoch=2)
    assert state == {"epoch": 2, "consumed": 4 * old_world, "seed": 5, "num_samples": num_samples}
    rest = []
    for rank in range(new_world):
        sampler = ResumableDistributedSampler(num_samples, rank=rank, world_size=new_world, seed=999)
        sampler.load_state_dict(state)
        rest.extend(sampler)
    assert len(used) + len(rest) == num_samples
    assert sorted(used + rest) == list(range(num_samples))
    # The resumed run continues the original epoch order, not a new shuffle.
    order = ResumableDistributedSampler(num_samples, seed=5).global_order(epoch=2)
    assert set(rest) == set(order[state["consumed"] :])


def test_advance_saturates_and_does_not_disturb_a_running_iteration():
    sampler = ResumableDistributedSampler(10, seed=1)
    iterator = iter(sampler)
    sampler.advance(4)
    assert len(list(iterator)) == 10
    assert len(sampler) == 6
    sampler.advance(100)
    assert sampler.consumed == 10 and list(sampler) == [] and len(sampler) == 0


def test_state_for_another_dataset_is_rejected():
    sampler = ResumableDistributedSampler(10)
    with pytest.raises(DataError, match="saved for 12 samples but the dataset has 10"):
        sampler.load_state_dict({"epoch": 0, "consumed": 0, "seed": 0, "num_samples": 12})
    with pytest.raises(ConfigError, match="lacks consumed"):
        sampler.load_state_dict({"epoch": 0, "seed": 0, "num_samples": 10})


@pytest.mark.parametrize(
    "kwargs, match",
    [({"rank": 2, "world_size": 2}, "rank"), ({"world_size": 0}, "world_size"), ({"seed": 1.5}, "seed")],
)
def test_bad_arguments_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ResumableDistributedSampler(10, **kwargs)
    with pytest.raises(ConfigError, match="consumed"):
        ResumableDistributedSampler(10).set_epoch(0, consumed=11)


class _Identity(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 17

    def __getitem__(self, index: int) -> int:
        return index


@pytest.mark.e2e
def test_works_with_a_multi_worker_dataloader():
    sampler = ResumableDistributedSampler(17, rank=0, world_size=2, seed=3)
    sampler.set_epoch(1, consumed=4)
    loader = DataLoader(_Identity(), sampler=sampler, batch_size=3, num_workers=2)
    assert torch.cat(list(loader)).tolist() == list(sampler)
