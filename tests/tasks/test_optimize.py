"""INT8 plumbing on the stand-in MotionNet: calibrated, scored against FP32, recorded, usable by Model
API and predict. The accuracy of INT8 on a trained X3D is ``tests/tasks/test_trained_x3d_accuracy.py``."""

from __future__ import annotations

import json

import pytest
from exported_models import motion_export
from model_api.models import Model

from actiontrain.data.synth import synthesize
from actiontrain.errors import ConfigError, NotFoundError
from actiontrain.export.convert import openvino_core
from actiontrain.export.manifest import MANIFEST_FILE
from actiontrain.export.store import local_export
from actiontrain.inference import Predictor
from actiontrain.tasks.optimize import quantize_export


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    return motion_export(tmp_path_factory)


@pytest.fixture(scope="module")
def int8(motion, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("int8") / "export")
    return quantize_export(motion.export, motion.data, output, subset_size=16)


@pytest.mark.e2e
def test_int8_manifest_records_both_scores_the_source_and_nncf(motion, int8):
    assert (int8.num_videos, int8.num_calibration_clips, int8.val_subset) == (12, 16, "test")
    manifest = local_export(int8.url).manifest
    assert manifest.precision == "int8" and manifest.classes == motion.classes
    assert manifest.recipe == motion.result.manifest.recipe and manifest.step == 200
    assert manifest.quantization["fp32_top1"] == int8.fp32_top1 and manifest.quantization["int8_top1"] == int8.int8_top1
    assert manifest.quantization["source_files"]["model.bin"]["sha256"] == motion.result.manifest.files["model.bin"].sha256
    assert "nncf" in manifest.versions
    document = json.loads((local_export(int8.url).directory / MANIFEST_FILE).read_text())
    assert document["precision"] == "int8"


@pytest.mark.e2e
def test_int8_ir_is_quantized_and_keeps_model_api_metadata(motion, int8):
    xml = str(local_export(int8.url).model_xml)
    model = openvino_core().read_model(xml)
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    assert Model.create_model(xml, device="CPU").params.labels == motion.classes


@pytest.mark.e2e
def test_predict_works_on_the_int8_export(motion, int8):
    predictor = Predictor.from_url(int8.url)
    for sample in motion.test_samples:
        assert predictor.predict(sample.url, top_k=1).top_k[0][0] == motion.classes[sample.label]


@pytest.mark.e2e
def test_int8_reports_the_videos_it_changed(int8):
    assert int8.num_changed == 0 and int8.agreement == 1.0
    assert local_export(int8.url).manifest.quantization["num_changed_predictions"] == 0


def test_only_fp32_exports_are_quantized(int8, motion, tmp_path):
    with pytest.raises(ConfigError, match="has precision int8; optimize the fp32 export"):
        quantize_export(int8.url, motion.data, str(tmp_path / "x"))


def test_other_classes_are_refused(motion, tmp_path):
    other = str(tmp_path / "other")
    synthesize(other, format="ucf101", num_classes=2, videos_per_class=3, num_frames=(12, 14))
    with pytest.raises(ConfigError, match="has 2 classes, the export 3, .*; use the dataset the export was trained on"):
        quantize_export(motion.export, other, str(tmp_path / "x"))


def test_a_missing_model_is_one_line(motion, tmp_path):
    with pytest.raises(NotFoundError, match="no export at"):
        quantize_export(str(tmp_path / "nothing"), motion.data, str(tmp_path / "x"))


def test_subset_size_must_be_positive(motion, tmp_path):
    with pytest.raises(ConfigError, match="subset_size must be > 0, got 0"):
        quantize_export(motion.export, motion.data, str(tmp_path / "x"), subset_size=0)
