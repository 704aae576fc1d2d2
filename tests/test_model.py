"""Tests for actiontrain.model: X3D variants, logits output and weights-only pretrained loading."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest
import torch

from actiontrain import storage
from actiontrain.errors import ConfigError, DataError, NotFoundError
from actiontrain.recipe import load_config
from actiontrain.trained_model import TrainedModel
from actiontrain.model import (
    X3D_VARIANTS,
    X3DVariant,
    build_model,
    count_parameters,
    load_pretrained,
    memory_format_for,
)

# Small clips keep every test on CPU in well under a second per forward pass.
SMALL = {"clip_len": 4, "crop_size": 64}


def _save(obj: object, path: Path) -> str:
    torch.save(obj, path)
    return str(path)


def _perturbed_state(model: torch.nn.Module, *, seed: int) -> dict[str, torch.Tensor]:
    # Fresh models share initialisation patterns; random values make "loaded" unmistakable.
    generator = torch.Generator().manual_seed(seed)
    return {
        key: (torch.randn(value.shape, generator=generator) if value.is_floating_point() else value.clone())
        for key, value in model.state_dict().items()
    }


class _Marker:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_variants_follow_the_x3d_paper() -> None:
    assert set(X3D_VARIANTS) == {"xs", "s", "m", "l"}
    assert [(v.num_frames, v.crop_size) for v in X3D_VARIANTS.values()] == [(4, 160), (13, 160), (16, 224), (16, 312)]
    assert X3D_VARIANTS["l"].depth_factor == 5.0
    assert all(isinstance(v, X3DVariant) and v.name == k for k, v in X3D_VARIANTS.items())
    with pytest.raises(AttributeError):
        X3D_VARIANTS["s"].num_frames = 8  # type: ignore[misc]


@pytest.mark.parametrize("variant", sorted(X3D_VARIANTS))
def test_every_variant_builds_and_outputs_logits(variant: str) -> None:
    model = build_model(variant=variant, num_classes=5, **SMALL).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 4, 64, 64))
    assert logits.shape == (2, 5)


def test_default_model_is_x3d_s_sized_for_its_own_clips() -> None:
    model = build_model(num_classes=400)
    reference = build_model(variant="s", num_classes=400)
    assert count_parameters(model) == count_parameters(reference)
    pool = model.blocks[-1].pool.pool
    assert tuple(int(k) for k in pool.kernel_size) == (13, 5, 5)  # 13 frames, 160 / 32 rounded up


def test_output_is_logits_not_softmax() -> None:
    torch.manual_seed(0)
    model = build_model(num_classes=4, dropout=0.0, **SMALL).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 4, 64, 64) * 3)
    assert logits.shape == (2, 4)
    assert not torch.allclose(logits.sum(dim=1), torch.ones(2), atol=1e-3)
    assert (logits < 0).any()


def test_larger_inputs_than_the_configured_clip_give_logits_and_smaller_ones_fail() -> None:
    model = build_model(num_classes=3, **SMALL).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 8, 96, 96)).shape == (1, 3)
        with pytest.raises(RuntimeError, match="smaller than kernel size"):
            model(torch.randn(1, 3, 2, 64, 64))


def test_x3d_s_has_about_the_papers_3_8m_parameters() -> None:
    assert 3.6e6 < count_parameters(build_model(variant="s", num_classes=400)) < 4.0e6
    assert 5.8e6 < count_parameters(build_model(variant="l", num_classes=400)) < 6.5e6


def test_count_parameters_can_skip_frozen_ones() -> None:
    model = build_model(num_classes=4, **SMALL)
    for parameter in model.blocks[0].parameters():
        parameter.requires_grad = False
    frozen = sum(p.numel() for p in model.blocks[0].parameters())
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - frozen


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"variant": "xl"}, "model.variant must be one of xs, s, m, l, got 'xl'"),
        ({"num_classes": 0}, "num_classes must be > 0, got 0"),
        ({"clip_len": 0}, "data.clip_len must be > 0, got 0"),
        ({"crop_size": 16}, "data.crop_size must be >= 32"),
        ({"dropout": 1.0}, "model.dropout must be in [0, 1), got 1.0"),
    ],
)
def test_bad_options_raise_config_error(options: dict, message: str) -> None:
    arguments = {"num_classes": 4, **SMALL, **options}
    with pytest.raises(ConfigError) as raised:
        build_model(**arguments)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def _check_pytorchvideo_checkpoint_loads(url: str, source: dict[str, torch.Tensor], caplog) -> None:
    target = build_model(num_classes=4, **SMALL)
    head_before = {k: v.clone() for k, v in target.state_dict().items() if k.startswith("blocks.5.proj")}
    with caplog.at_level(logging.WARNING, logger="actiontrain.model"):
        not_loaded = load_pretrained(target, url)
    assert not_loaded == ["blocks.5.proj.bias", "blocks.5.proj.weight"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["pretrained head has 400 classes, this model 4: the head starts from scratch"]
    loaded = target.state_dict()
    for key, value in source.items():
        if key.startswith("blocks.5.proj"):
            assert torch.equal(loaded[key], head_before[key])
        else:
            assert torch.equal(loaded[key], value), key


def test_pytorchvideo_checkpoint_loads_with_a_new_head(tmp_path: Path, caplog) -> None:
    source = _perturbed_state(build_model(num_classes=400, **SMALL), seed=1)
    url = _save({"model_state": source, "epoch": 300, "cfg": "TRAIN: ..."}, tmp_path / "X3D_S.pyth")
    _check_pytorchvideo_checkpoint_loads(url, source, caplog)


@pytest.mark.e2e
def test_pytorchvideo_checkpoint_loads_from_s3(s3_bucket: str, caplog) -> None:
    source = _perturbed_state(build_model(num_classes=400, **SMALL), seed=2)
    buffer = io.BytesIO()
    torch.save({"model_state": source}, buffer)
    url = f"{s3_bucket}/pretrained/X3D_S.pyth"
    storage.write_bytes(url, buffer.getvalue())
    _check_pytorchvideo_checkpoint_loads(url, source, caplog)


def test_project_checkpoint_with_ddp_prefixes_loads_fully(tmp_path: Path) -> None:
    source = _perturbed_state(build_model(num_classes=4, **SMALL), seed=3)
    # What a DDP run saves: its model's keys carry the wrapper's prefix.
    config = load_config("cpu_smoke", ["model.variant=xs"])
    wrapped = TrainedModel(
        step=120, config=config, classes=["a", "b", "c", "d"], weights={f"module.{k}": v for k, v in source.items()}
    )
    checkpoint = {**wrapped.state(), "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}}
    target = build_model(num_classes=4, **SMALL)
    assert load_pretrained(target, _save(checkpoint, tmp_path / "step-120.pt")) == []
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.items())


def test_bare_state_dict_loads(tmp_path: Path) -> None:
    source = _perturbed_state(build_model(num_classes=4, **SMALL), seed=4)
    target = build_model(num_classes=4, **SMALL)
    assert load_pretrained(target, _save(source, tmp_path / "bare.pt")) == []
    assert torch.equal(target.state_dict()["blocks.5.proj.weight"], source["blocks.5.proj.weight"])


def test_checkpoint_from_memory_url_loads() -> None:
    source = _perturbed_state(build_model(num_classes=4, **SMALL), seed=5)
    buffer = io.BytesIO()
    torch.save({"model": source}, buffer)
    storage.write_bytes("memory://test-model/ckpt.pt", buffer.getvalue())
    try:
        assert load_pretrained(build_model(num_classes=4, **SMALL), "memory://test-model/ckpt.pt") == []
    finally:
        storage.remove("memory://test-model/ckpt.pt")


def test_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    state = build_model(num_classes=4, **SMALL).state_dict()
    url = _save({"model": state, "extra": _Marker(str(marker))}, tmp_path / "evil.pt")
    assert not marker.exists()  # saving does not run __reduce__'s result
    with pytest.raises(DataError) as raised:
        load_pretrained(build_model(num_classes=4, **SMALL), url)
    assert str(raised.value) == f"{url} is not a weights-only checkpoint: refusing to unpickle code"
    assert not marker.exists()


def test_checkpoint_with_a_plain_custom_object_is_refused(tmp_path: Path) -> None:
    url = _save({"model": {}, "config": X3D_VARIANTS["s"]}, tmp_path / "object.pt")
    with pytest.raises(DataError, match="refusing to unpickle code"):
        load_pretrained(build_model(num_classes=4, **SMALL), url)


@pytest.mark.parametrize("content", [b"", b"definitely not a checkpoint\x00\x01", b"PK\x03\x04broken zip"])
def test_garbage_bytes_raise_data_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(DataError) as raised:
        load_pretrained(build_model(num_classes=4, **SMALL), str(path))
    assert str(raised.value).startswith(f"{path} is not a PyTorch checkpoint")
    assert "\n" not in str(raised.value)


def test_checkpoint_without_weights_raises_data_error(tmp_path: Path) -> None:
    url = _save({"epoch": 3, "model": "x3d_s"}, tmp_path / "empty.pt")
    with pytest.raises(DataError, match="holds no model weights"):
        load_pretrained(build_model(num_classes=4, **SMALL), url)


def test_other_backbone_raises_config_error_naming_url_and_keys(tmp_path: Path) -> None:
    # XS, S and M share one network; L is deeper, so its checkpoint cannot fill an S model.
    url = _save({"model_state": build_model(variant="l", num_classes=400, **SMALL).state_dict()}, tmp_path / "X3D_L.pyth")
    target = build_model(variant="s", num_classes=4, **SMALL)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ConfigError) as raised:
        load_pretrained(target, url)
    message = str(raised.value)
    assert message.startswith(f"checkpoint {url} does not fit this model: ")
    assert "unexpected (blocks." in message and "model.variant" in message
    assert "\n" not in message
    assert all(torch.equal(target.state_dict()[k], v) for k, v in before.items())  # nothing half-loaded


def test_m_checkpoint_fills_an_s_model(tmp_path: Path) -> None:
    source = _perturbed_state(build_model(variant="m", num_classes=4, **SMALL), seed=6)
    target = build_model(variant="s", num_classes=4, **SMALL)
    assert load_pretrained(target, _save({"model_state": source}, tmp_path / "X3D_M.pyth")) == []


def test_backbone_shape_mismatch_raises_config_error(tmp_path: Path) -> None:
    source = build_model(num_classes=4, **SMALL).state_dict()
    source["blocks.1.res_blocks.0.branch2.conv_a.weight"] = torch.zeros(3, 3, 1, 1, 1)
    with pytest.raises(ConfigError, match=r"1 wrong shape \(blocks\.1\.res_blocks\.0\.branch2\.conv_a\.weight"):
        load_pretrained(build_model(num_classes=4, **SMALL), _save(source, tmp_path / "bad.pt"))


def test_missing_backbone_keys_raise_config_error(tmp_path: Path) -> None:
    source = {k: v for k, v in build_model(num_classes=4, **SMALL).state_dict().items() if not k.startswith("blocks.0.")}
    with pytest.raises(ConfigError, match=r"missing \(blocks\.0\."):
        load_pretrained(build_model(num_classes=4, **SMALL), _save(source, tmp_path / "partial.pt"))


def test_missing_file_raises_storage_error(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not found"):
        load_pretrained(build_model(num_classes=4, **SMALL), os.fspath(tmp_path / "absent.pt"))


@pytest.mark.parametrize(
    ("device", "capability", "setting", "expected"),
    [
        ("cuda", "AVX2", "auto", torch.channels_last_3d),
        ("cpu", "AVX512", "auto", torch.channels_last_3d),
        ("cpu", "AVX2", "auto", torch.contiguous_format),
        ("cpu", "AVX2", True, torch.channels_last_3d),
        ("cuda", "AVX512", False, torch.contiguous_format),
    ],
)
def test_channels_last_goes_where_it_measured_faster_unless_set(monkeypatch, device, capability, setting, expected):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert memory_format_for(device, setting) == expected
