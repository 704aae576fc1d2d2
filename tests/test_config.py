"""Typed configuration: documented fields, validation messages that name key, value and range."""

from __future__ import annotations

import dataclasses

import pytest

from actiontrain.config import DataConfig, TrainConfig, field_docs
from actiontrain.errors import ConfigError


def test_every_data_field_has_a_docstring():
    docs = field_docs(DataConfig)
    assert set(docs) == {field.name for field in dataclasses.fields(DataConfig)}
    assert all(docs.values())


def test_defaults_follow_the_otx_x3d_template():
    config = DataConfig()
    assert (config.clip_len, config.frame_interval, config.crop_size) == (8, 4, 224)
    assert config.eval_short_side == 256


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"clip_len": 0}, "data.clip_len must be > 0, got 0"),
        ({"num_eval_crops": 2}, "data.num_eval_crops must be 1 or 3, got 2"),
        ({"flip_prob": 1.5}, "data.flip_prob must be in [0, 1], got 1.5"),
        ({"decoder": "opencv"}, "data.decoder must be one of auto, torchcodec, pyav, got 'opencv'"),
        ({"crop_size": 300}, "must be >= data.crop_size 300"),
        ({"max_bad_fraction": 1.0}, "data.max_bad_fraction must be in [0, 1), got 1.0"),
    ],
)
def test_bad_values_are_rejected_with_key_and_value(overrides, message):
    with pytest.raises(ConfigError) as error:
        DataConfig(**overrides)
    assert message in str(error.value)


@pytest.mark.parametrize("minutes", [-1, float("nan"), float("inf"), True, "15"])
def test_time_based_checkpoints_take_a_number_of_minutes_or_zero(minutes):
    with pytest.raises(ConfigError, match=r"train.checkpoint_every_minutes must be a number >= 0 \(0 = off\), got"):
        TrainConfig(checkpoint_every_minutes=minutes)
    assert TrainConfig(checkpoint_every_minutes=0.5).checkpoint_every_minutes == 0.5
