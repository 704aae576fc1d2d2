"""Recipes: shipped ones parse, overrides win, bad keys and values name themselves."""

from __future__ import annotations

import pytest

from actiontrain import storage
from actiontrain.config import Config, ModelConfig, OptimConfig, TrainConfig, field_docs
from actiontrain.errors import ConfigError
from actiontrain.recipe import config_from_dict, config_to_dict, load_config, shipped_recipes


@pytest.mark.parametrize("name", shipped_recipes())
def test_every_shipped_recipe_parses_and_round_trips(name):
    config = load_config(name)
    assert config_from_dict(config_to_dict(config)) == config


def test_x3d_s_recipe_is_the_otx_template():
    config = load_config("x3d_s")
    assert (config.data.clip_len, config.data.frame_interval, config.data.crop_size) == (8, 4, 224)
    assert (config.optim.lr, config.optim.weight_decay, config.optim.grad_clip) == (1e-3, 1e-4, 40.0)
    assert (config.train.epochs, config.train.batch_size, config.optim.warmup_epochs) == (10, 8, 3.0)
    assert (config.optim.lr_step_every, config.optim.lr_gamma) == (5, 0.1)
    assert config.model.variant == "s"


def test_overrides_beat_the_recipe_and_lists_become_tuples():
    config = load_config("x3d_s", ["optim.lr=5e-4", "data.train_short_side=[240, 300]", "train.amp=false"])
    assert config.optim.lr == 5e-4
    assert config.data.train_short_side == (240, 300)
    assert config.train.amp is False


@pytest.mark.e2e
def test_recipe_from_a_url(tmp_path, s3_bucket):
    url = storage.join(s3_bucket, "recipes", "mine.yaml")
    storage.write_bytes(url, b"train:\n  epochs: 3\nmodel:\n  variant: m\n")
    config = load_config(url)
    assert (config.train.epochs, config.model.variant, config.data.clip_len) == (3, "m", 8)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrate=1"], "unknown key optim.lrate; valid keys of optim: lr, weight_decay"),
        (["trainer.epochs=1"], "unknown config section 'trainer'; valid: data, model, optim, train"),
        (["epochs=1"], "needs a section"),
        (["train.epochs"], "is not key=value"),
        (["train.epochs=ten"], "train.epochs must be a whole number, got 'ten'"),
        (["train.epochs=0"], "train.epochs must be > 0, got 0"),
        (["model.variant=xl"], "model.variant must be one of xs, s, m, l, got 'xl'"),
        (["data.train_short_side=[1,2,3]"], "data.train_short_side must have 2 values"),
        (["train.amp=maybe"], "train.amp must be true or false"),
    ],
)
def test_bad_overrides_name_key_value_and_choices(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config("cpu_smoke", overrides)
    assert message in str(error.value)


def test_unknown_recipe_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match=r"unknown recipe 'x3d_q'; shipped: cpu_small, cpu_smoke, x3d_s"):
        load_config("x3d_q")


def test_every_config_field_has_a_docstring():
    for section in (Config, ModelConfig, OptimConfig, TrainConfig):
        assert all(field_docs(section).values())


def test_config_knows_exactly_the_model_variants():
    from actiontrain.config import X3D_VARIANT_NAMES
    from actiontrain.model import X3D_VARIANTS

    assert tuple(X3D_VARIANTS) == X3D_VARIANT_NAMES
