"""``eval`` of a checkpoint and of its exports: the same views and keys; FP32 agrees with the checkpoint to the video."""

from __future__ import annotations

import pytest
from exported_models import motion_export, x3d_export

from actiontrain.data.synth import synthesize
from actiontrain.errors import ConfigError, NotFoundError
from actiontrain.export.store import publish_version
from actiontrain.tasks.evaluate import evaluate_checkpoint, evaluate_export
from actiontrain.tasks.export import export_checkpoint
from actiontrain.tasks.optimize import quantize_export

CHECKPOINT_KEYS = {"top1", "top5", "loss", "mean_class_accuracy", "num_videos", "num_unlabeled", "num_skipped", "subset", "step"}


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    return motion_export(tmp_path_factory)


@pytest.fixture(scope="module")
def x3d(tmp_path_factory):
    return x3d_export(tmp_path_factory)


@pytest.fixture(scope="module")
def checkpoint_report(x3d, motion):
    # The X3D checkpoint has the motion dataset's classes: its test videos are its validation set.
    return evaluate_checkpoint(x3d.run, motion.data, per_video=True)


def test_the_fp32_export_agrees_with_its_checkpoint_to_the_video(x3d, motion, checkpoint_report):
    report = evaluate_export(x3d.export, motion.data, per_video=True)
    assert CHECKPOINT_KEYS <= report.keys() and set(checkpoint_report) <= set(report)
    assert report["predictions"] == checkpoint_report["predictions"]
    assert len(report["predictions"]) == report["num_videos"] == 12
    for key in ("top1", "top5", "mean_class_accuracy", "num_videos", "subset", "step"):
        assert report[key] == checkpoint_report[key], key
    assert report["loss"] == pytest.approx(checkpoint_report["loss"], rel=1e-4)
    assert (report["precision"], report["inference_precision"]) == ("fp32", "f32")
    assert report["model"] == x3d.export and report["throughput(clips/s)"] > 0


@pytest.mark.e2e
def test_fp16_and_int8_exports_report_their_figures_on_the_same_videos(x3d, motion, checkpoint_report, tmp_path):
    fp16 = export_checkpoint(x3d.run, str(tmp_path / "fp16"), precision="fp16").url
    int8 = quantize_export(x3d.export, motion.data, str(tmp_path / "int8"), subset_size=8).url
    for url, precision in ((fp16, "fp16"), (int8, "int8")):
        report = evaluate_export(url, motion.data, per_video=True)
        assert report["precision"] == precision and report["inference_precision"] == "f32"
        assert report["predictions"].keys() == checkpoint_report["predictions"].keys()
        assert 0.0 <= report["top1"] <= report["top5"] <= 1.0 and report["step"] == 7


def test_a_model_folder_of_a_serving_repository_is_evaluated_at_its_newest_version(motion, tmp_path):
    for _ in range(2):
        publish_version(motion.export, str(tmp_path / "models"), "motion", motion.result.manifest)
    report = evaluate_export(str(tmp_path / "models" / "motion"), motion.data)
    assert report["model"] == f"{tmp_path}/models/motion/2" and report["top1"] == 1.0


def test_an_export_of_other_classes_or_nowhere_is_one_line(motion, tmp_path):
    other = str(tmp_path / "other")
    synthesize(other, format="ucf101", num_classes=2, videos_per_class=3, num_frames=(12, 14))
    with pytest.raises(ConfigError, match="has 2 classes, the export 3, .*; use the dataset the export was trained on"):
        evaluate_export(motion.export, other)
    with pytest.raises(NotFoundError, match="no export at"):
        evaluate_export(str(tmp_path / "nowhere"), motion.data)
