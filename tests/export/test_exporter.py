"""Exporting checkpoints and live models: what the manifest records, and arguments refused up front."""

from __future__ import annotations

import pytest
from exported_models import x3d_export

from actiontrain.errors import ConfigError, NotFoundError
from actiontrain.export import export_model
from actiontrain.export.convert import Parity, default_inference_precision
from actiontrain.tasks.export import export_checkpoint
from actiontrain.export.manifest import MODEL_FILES, file_entry
from actiontrain.export.store import local_export
from actiontrain.recipe import config_to_dict, load_config


@pytest.fixture(scope="module")
def x3d(tmp_path_factory):
    return x3d_export(tmp_path_factory)


def test_a_checkpoint_export_records_step_metrics_classes_recipe_and_checksums(x3d):
    export = local_export(x3d.export)
    manifest = export.manifest
    assert manifest == x3d.result.manifest
    assert (manifest.precision, manifest.step, manifest.classes) == ("fp32", 7, x3d.classes)
    # The run's evaluation at the checkpoint's step, from its metrics.jsonl.
    assert manifest.metrics == {"step": 7, "epoch": 1, "subset": "test", "top1": 0.5, "top5": 1.0, "num_videos": 6}
    assert manifest.recipe == config_to_dict(x3d.config)
    assert manifest.files == {name: file_entry(export.directory / name) for name in MODEL_FILES}
    assert manifest.parity["top1_agreement"] == 1.0


def test_parity_is_recorded_at_the_cpus_default_precision_too_and_only_once_when_that_is_f32(x3d):
    result, manifest = x3d.result, x3d.result.manifest
    default = default_inference_precision()
    assert manifest.default_precision == default
    assert result.parity.inference_precision == manifest.parity["inference_precision"] == "f32"
    if default == "f32":  # AVX2-only CPUs: one run covers both, and the report says so
        assert manifest.default_parity is None and result.default_parity is None
        assert "f32 is OpenVINO's default CPU precision here, so it was checked once" in result.describe_precisions()
    else:  # bf16/f16 CPUs: what OpenVINO really computed in is recorded beside f32
        recorded = Parity.from_dict(manifest.default_parity)
        assert recorded == result.default_parity and recorded.inference_precision == default
        assert manifest.default_parity["passed"] == recorded.passed


@pytest.mark.parametrize("precision", ["int8", "bf16", ""])
def test_unknown_precisions_are_refused_before_any_work(tmp_path, precision):
    with pytest.raises(ConfigError, match=f"export precision must be one of fp32, fp16, got {precision!r}"):
        export_checkpoint(str(tmp_path / "no-run"), str(tmp_path / "out"), precision=precision)


def test_a_run_without_checkpoints_is_one_line(tmp_path):
    with pytest.raises(NotFoundError, match="no committed checkpoint under .*checkpoints"):
        export_checkpoint(str(tmp_path / "run"), str(tmp_path / "out"))


def test_classes_that_do_not_fit_the_model_are_refused(x3d, tmp_path):
    with pytest.raises(ConfigError, match="the model has 3 outputs but 2 classes were given"):
        export_model(x3d.model, classes=["a", "b"], config=x3d.config, output_url=str(tmp_path / "out"))


def test_int8_points_to_optimize(tmp_path):
    with pytest.raises(ConfigError, match="actiontrain optimize"):
        export_model(object(), classes=["a"], config=load_config("cpu_smoke"), output_url=str(tmp_path), precision="int8")
