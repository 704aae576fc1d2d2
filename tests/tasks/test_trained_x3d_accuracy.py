"""Accuracy of a trained X3D through every way a user runs it: checkpoint evaluation, the FP32
export (``eval --model`` and ``predict``), FP16 and INT8, on held-apart validation videos.

The model is the session's X3D-XS trained with the shipped ``cpu_small`` recipe on six motion
classes (``exported_models.trained_x3d``; minutes, once per session). INT8 is calibrated on the
training subset and scored on the test subset, never on its calibration clips.
"""

from __future__ import annotations

import pytest
from exported_models import trained_x3d
from precision_accuracy import check_precisions_on_validation

from actiontrain.tasks.evaluate import evaluate_checkpoint, evaluate_export
from actiontrain.tasks.predict import predict

LEARNED = 0.6
"""A model that has learned: 3.6x chance of six classes (the learnability test's bar)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_x3d(tmp_path_factory)


@pytest.fixture(scope="module")
def checkpoint_report(trained):
    return evaluate_checkpoint(trained.run, trained.data, per_video=True)


@pytest.mark.e2e
@pytest.mark.timeout(2400)
def test_the_fp32_export_of_a_trained_x3d_agrees_with_its_checkpoint_on_every_validation_video(trained, checkpoint_report):
    report = evaluate_export(trained.export, trained.data, inference_precision="f32", per_video=True)
    assert checkpoint_report["subset"] == report["subset"] == "test"
    assert checkpoint_report["top1"] >= LEARNED, checkpoint_report
    assert report["predictions"] == checkpoint_report["predictions"]
    assert report["top1"] == checkpoint_report["top1"] == pytest.approx(trained.final_eval["top1"])


@pytest.mark.e2e
@pytest.mark.timeout(2400)
def test_predict_on_the_export_names_what_evaluation_predicts_for_each_test_video(trained, checkpoint_report):
    samples = trained.test_samples
    predictions = predict(trained.export, [sample.url for sample in samples], top_k=1).predictions
    by_id = {sample.item_id: prediction.top_k[0][0] for sample, prediction in zip(samples, predictions, strict=True)}
    expected = checkpoint_report["predictions"]
    assert by_id.keys() == expected.keys()
    # predict computes at the CPU's best precision where the export's parity allows it (bf16 on
    # some CPUs): one video near a tie may go the other way, never more.
    differ = sorted(item for item in by_id if by_id[item] != expected[item])
    assert len(differ) <= 1, differ
    correct = sum(by_id[sample.item_id] == trained.classes[sample.label] for sample in samples)
    assert correct / len(samples) >= LEARNED, f"{correct} of {len(samples)}"


@pytest.mark.e2e
@pytest.mark.timeout(2400)
def test_fp16_and_int8_keep_a_trained_x3ds_top1_on_held_apart_validation_videos(trained, tmp_path):
    summary = check_precisions_on_validation(trained.export, trained.data, tmp_path)
    assert (summary["subset"], summary["calibration_subset"]) == ("test", "train")
    assert summary["num_videos"] == len(trained.test_samples)
    assert summary["top1"]["fp32"] >= LEARNED, summary  # a model that learned, not one at chance
    print(f"trained X3D-XS, six motions, {summary['num_videos']} validation videos: {summary}")
