"""Optimiser groups, learning-rate scaling, the epoch-position schedule and gradient clipping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from actiontrain.config import OptimConfig
from actiontrain.errors import ConfigError, DataError
from actiontrain.optim import (
    EpochLR,
    build_lr_scheduler,
    build_optimizer,
    clip_gradients,
    epoch_position,
    lr_factor_at,
    scaled_lr,
)

CONFIG = OptimConfig(lr=1e-3, warmup_epochs=2.0, warmup_start_factor=0.1, lr_step_every=5, lr_gamma=0.1)


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(3, 4, kernel_size=3, bias=False),
        nn.BatchNorm3d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.LayerNorm(4),
        nn.Linear(4, 2),
    )


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_decay_applies_to_conv_and_linear_weights_not_biases_or_norms():
    model = _model()
    optimizer = build_optimizer(model, CONFIG, world_size=1, batch_size=8)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == CONFIG.weight_decay and no_decay["weight_decay"] == 0.0
    assert _ids(decay["params"]) == _ids([model[0].weight, model[6].weight])
    assert _ids(no_decay["params"]) == _ids(
        [model[1].weight, model[1].bias, model[5].weight, model[5].bias, model[6].bias]
    )
    assert isinstance(optimizer, torch.optim.AdamW)


def test_frozen_parameters_are_left_out():
    model = _model()
    model[0].weight.requires_grad_(False)
    decay, _ = build_optimizer(model, CONFIG, world_size=1, batch_size=8).param_groups
    assert _ids(decay["params"]) == _ids([model[6].weight])


def test_lr_scales_with_the_global_batch_only_when_asked():
    scaled = OptimConfig(lr=1e-3, scale_lr=True, reference_batch=8)
    assert scaled_lr(scaled, world_size=4, batch_size=4) == pytest.approx(2e-3)
    assert scaled_lr(OptimConfig(lr=1e-3), world_size=4, batch_size=4) == 1e-3
    optimizer = build_optimizer(_model(), scaled, world_size=2, batch_size=16)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([4e-3, 4e-3])


def test_bad_world_size_is_a_config_error():
    with pytest.raises(ConfigError, match="world_size must be > 0, got 0"):
        build_optimizer(_model(), CONFIG, world_size=0, batch_size=8)


@pytest.mark.parametrize(
    ("position", "factor"),
    [
        (0.0, 0.1),  # start of warm-up
        (1.0, 0.55),  # half-way through warm-up
        (2.0, 1.0),  # end of warm-up
        (4.99, 1.0),
        (5.0, 0.1),  # after lr_step_every epochs
        (9.5, 0.1),
        (10.0, 0.01),  # twice
    ],
)
def test_schedule_warms_up_linearly_then_steps_by_gamma(position, factor):
    assert lr_factor_at(position, CONFIG) == pytest.approx(factor)


def test_no_warmup_starts_at_the_peak():
    assert lr_factor_at(0.0, OptimConfig(warmup_epochs=0.0)) == 1.0


def test_scheduler_sets_the_lr_of_every_group_per_step():
    steps_per_epoch = 4
    optimizer = build_optimizer(_model(), CONFIG, world_size=1, batch_size=8)
    scheduler = build_lr_scheduler(optimizer, CONFIG, world_size=1, batch_size=8)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([1e-4, 1e-4])
    seen = []
    for step in range(12 * steps_per_epoch):
        scheduler.step(step / steps_per_epoch)
        seen.append(optimizer.param_groups[0]["lr"])
    assert seen[0] == pytest.approx(1e-4)
    assert seen[2 * steps_per_epoch] == pytest.approx(1e-3)
    assert seen[5 * steps_per_epoch] == pytest.approx(1e-4)
    assert seen[10 * steps_per_epoch] == pytest.approx(1e-5)
    assert seen[: 2 * steps_per_epoch] == sorted(seen[: 2 * steps_per_epoch])
    assert scheduler.get_last_lr() == pytest.approx([seen[-1], seen[-1]])


def test_same_epoch_position_gives_the_same_lr_on_any_world_size():
    num_samples = 96
    lrs = {}
    for world_size in (1, 2):
        steps_per_epoch = num_samples // (world_size * 8)
        optimizer = build_optimizer(_model(), CONFIG, world_size=world_size, batch_size=8)
        scheduler = build_lr_scheduler(optimizer, CONFIG, world_size=world_size, batch_size=8)
        for epoch in range(7):
            for step in range(steps_per_epoch):
                position = epoch_position(epoch, consumed=step * world_size * 8, num_samples=num_samples)
                scheduler.step(position)
                lrs.setdefault(world_size, {})[position] = optimizer.param_groups[0]["lr"]
    shared = set(lrs[1]) & set(lrs[2])
    assert len(shared) == len(lrs[2]) == 7 * 6
    assert all(lrs[1][position] == lrs[2][position] for position in shared)


def test_state_dict_round_trip_resumes_at_the_same_lr_after_a_world_size_change():
    optimizer = build_optimizer(_model(), CONFIG, world_size=2, batch_size=8)
    scheduler = build_lr_scheduler(optimizer, CONFIG, world_size=2, batch_size=8)
    scheduler.step(1.5)
    saved_optimizer, saved_scheduler = optimizer.state_dict(), scheduler.state_dict()
    expected = optimizer.param_groups[0]["lr"]

    # Restart on one process: 2x the steps per epoch, same position.
    resumed_optimizer = build_optimizer(_model(), CONFIG, world_size=1, batch_size=8)
    resumed = build_lr_scheduler(resumed_optimizer, CONFIG, world_size=1, batch_size=8)
    resumed.load_state_dict(saved_scheduler)
    resumed_optimizer.load_state_dict(saved_optimizer)
    assert resumed.epoch_position == 1.5
    assert resumed.get_last_lr()[0] == pytest.approx(expected)
    assert [group["lr"] for group in resumed_optimizer.param_groups] == pytest.approx([expected] * 2)


def test_resume_with_scale_lr_follows_the_new_global_batch():
    config = OptimConfig(lr=1e-3, scale_lr=True, reference_batch=8, warmup_epochs=0.0)
    old = build_lr_scheduler(build_optimizer(_model(), config, world_size=4, batch_size=8), config, world_size=4, batch_size=8)
    old.step(6.0)
    optimizer = build_optimizer(_model(), config, world_size=2, batch_size=8)
    resumed = build_lr_scheduler(optimizer, config, world_size=2, batch_size=8)
    resumed.load_state_dict(old.state_dict())
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 * 0.1)


def test_foreign_scheduler_state_is_a_data_error():
    optimizer = build_optimizer(_model(), CONFIG, world_size=1, batch_size=8)
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with pytest.raises(DataError, match="no epoch_position"):
        EpochLR(optimizer, CONFIG, base_lr=1e-3).load_state_dict(lambda_lr.state_dict())


def _with_gradients(model: nn.Module) -> nn.Module:
    model.train()
    model(torch.randn(2, 3, 4, 4, 4)).sum().mul(100).backward()
    return model


def _norm(model: nn.Module) -> float:
    return math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters() if p.grad is not None))


def test_clip_gradients_returns_the_norm_before_clipping():
    torch.manual_seed(0)
    model = _with_gradients(_model())
    before = _norm(model)
    assert before > 1.0
    assert clip_gradients(model, 1.0) == pytest.approx(before, rel=1e-5)
    assert _norm(model) == pytest.approx(1.0, rel=1e-4)


def test_clip_gradients_zero_measures_without_clipping():
    torch.manual_seed(0)
    model = _with_gradients(_model())
    before = _norm(model)
    assert clip_gradients(model, 0.0) == pytest.approx(before, rel=1e-5)
    assert _norm(model) == pytest.approx(before, rel=1e-6)


def test_clip_gradients_without_gradients_is_zero():
    assert float(clip_gradients(_model(), 1.0)) == 0.0
