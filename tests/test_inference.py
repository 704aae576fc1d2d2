"""Predicting with an export: the right class for a trained model, views as in evaluation, batched
inference, the precision chosen by measurement, one-line errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from exported_models import motion_export

from actiontrain import inference
from actiontrain.data.catalog import Sample
from actiontrain.data.dataset import ClipDataset
from actiontrain.data.motion import render_clip
from actiontrain.data.media_writer import write_frame_folder, write_video
from actiontrain.data.video import open_media
from actiontrain.errors import ConfigError, DataError, NotFoundError
from actiontrain.export.convert import default_inference_precision, openvino_core
from actiontrain.inference import Prediction, Predictor, choose_inference_precision
from actiontrain.tasks.predict import predict


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    return motion_export(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(motion):
    return Predictor.from_url(motion.export)


def test_each_input_gets_its_ranked_classes_and_probabilities(motion):
    # Plumbing on the stand-in; a trained X3D's predictions: tests/tasks/test_trained_x3d_accuracy.py.
    predictions = predict(motion.export, [sample.url for sample in motion.test_samples], top_k=3).predictions
    assert len(predictions) == len(motion.test_samples)
    for sample, prediction in zip(motion.test_samples, predictions):
        assert prediction.input == sample.url
        labels = [label for label, _ in prediction.top_k]
        scores = [score for _, score in prediction.top_k]
        assert labels[0] == motion.classes[sample.label], sample.url
        assert sorted(labels) == sorted(motion.classes) and scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)


def test_views_are_the_evaluation_views(motion, predictor):
    sample = motion.test_samples[0]
    expected = ClipDataset([sample], config=motion.config.data, train=False)[0]["video"]
    assert torch.equal(predictor.read_views(sample.url), expected)


def test_probabilities_average_the_softmax_of_the_views(predictor, motion):
    views = predictor.read_views(motion.test_samples[0].url)
    views = torch.cat([views, views.flip(-1)])  # two different views
    expected = predictor.logits(views).softmax(dim=1).mean(dim=0)
    assert torch.allclose(predictor.probabilities(views), expected)


def test_a_frame_folder_is_classified_like_its_video(motion, predictor, tmp_path):
    sample = next(s for s in motion.test_samples if s.label == 2)
    with open_media(sample.url) as reader:
        frames = reader.get_frames(range(reader.num_frames)).permute(0, 2, 3, 1).numpy()
    folder = str(tmp_path / "frames")
    write_frame_folder(folder, frames)
    assert predictor.predict(folder, top_k=1).top_k[0][0] == motion.classes[2]


def test_to_dict_is_the_json_shape(predictor, motion):
    prediction = Prediction(input="a.mp4", top_k=[("MoveUp", 0.75), ("MoveLeft", 0.25)])
    assert prediction.to_dict() == {
        "input": "a.mp4",
        "top_k": [{"label": "MoveUp", "score": 0.75}, {"label": "MoveLeft", "score": 0.25}],
    }


def test_a_video_shorter_than_a_clip_is_read_as_evaluation_reads_it(motion, predictor, tmp_path):
    # 3 frames for a recipe of 4-frame clips: evaluation loops the video, and so does predict.
    short = str(tmp_path / "short.mp4")
    frames = render_clip("move_up", num_frames=3, height=96, width=128, seed=1)
    write_video(short, frames)
    sample = Sample(url=short, label=2, item_id="short")
    expected = ClipDataset([sample], config=motion.config.data, train=False)[0]["video"]
    assert torch.equal(predictor.read_views(short), expected)
    assert predictor.predict(short, top_k=1).input == short


def test_an_undecodable_video_is_one_line(predictor, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 100)
    with pytest.raises(DataError, match="broken.mp4") as raised:
        predictor.predict(str(broken))
    assert "\n" not in str(raised.value)


def test_a_missing_video_is_one_line(predictor, tmp_path):
    with pytest.raises(NotFoundError, match="not found: .*nothing.mp4"):
        predictor.predict(str(tmp_path / "nothing.mp4"))


def test_a_missing_model_is_one_line(tmp_path):
    with pytest.raises(NotFoundError, match="no export at .*nowhere"):
        predict(str(tmp_path / "nowhere"), ["a.mp4"])


def test_an_unknown_device_names_the_available_ones(motion):
    with pytest.raises(ConfigError, match=r"cannot (use|compile the model for) OpenVINO device 'NOPE' \(available: .*CPU"):
        Predictor.from_url(motion.export, device="NOPE")


def test_top_k_must_be_positive(predictor, motion):
    with pytest.raises(ConfigError, match="top_k must be > 0, got 0"):
        predictor.predict(motion.test_samples[0].url, top_k=0)


def test_views_of_several_videos_share_an_inference_and_give_the_same_logits(motion):
    views = torch.cat([Predictor.from_url(motion.export).read_views(s.url) for s in motion.test_samples[:5]])
    single = Predictor.from_url(motion.export, batch_size=1)
    batched = Predictor.from_url(motion.export, batch_size=4)
    expected = single.logits(views)
    assert torch.allclose(batched.logits(views), expected, atol=1e-5)
    assert single.stats.num_inferences == len(views) and batched.stats.num_inferences == -(-len(views) // 4)
    assert batched.stats.num_clips == len(views) and batched.stats.clips_per_second > 0


def test_the_ir_on_disk_keeps_one_view_for_model_api(motion, predictor):
    on_disk = openvino_core().read_model(str(predictor.export.model_xml))
    assert list(on_disk.input(0).get_partial_shape().to_shape()) == list(motion.result.manifest.input_shape)


def test_predict_many_matches_one_video_at_a_time(motion, predictor):
    samples = motion.test_samples[:6]
    batched = list(Predictor.from_url(motion.export, batch_size=4).predict_many(samples, top_k=3))
    assert [prediction.input for prediction in batched] == [sample.url for sample in samples]
    for sample, prediction in zip(samples, batched):
        alone = predictor.predict(sample.url, top_k=3)
        assert [label for label, _ in prediction.top_k] == [label for label, _ in alone.top_k]
        assert [score for _, score in prediction.top_k] == pytest.approx([score for _, score in alone.top_k], abs=1e-5)


def test_an_unreadable_video_among_many_is_named(motion, predictor, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    samples = [motion.test_samples[0], Sample(url=str(broken), label=None, item_id="broken")]
    with pytest.raises(DataError, match="cannot predict .*broken.mp4") as raised:
        list(predictor.predict_many(samples))
    assert "\n" not in str(raised.value)


def test_precision_is_what_openvino_reports_never_what_was_asked(motion):
    # Asking for bf16 on a CPU without it compiles f32: the predictor says f32.
    asked = Predictor.from_url(motion.export, inference_precision="bf16")
    if default_inference_precision() == "f32":
        assert asked.inference_precision == "f32"
    automatic = Predictor.from_url(motion.export)
    assert automatic.inference_precision == "f32" or automatic.inference_precision == default_inference_precision()


def test_auto_uses_f32_where_it_is_the_default(motion, monkeypatch):
    monkeypatch.setattr(inference, "default_inference_precision", lambda device="CPU": "f32")
    assert choose_inference_precision(motion.result.manifest) == ("f32", "f32, OpenVINO's default on this device")


def _default_checked(manifest, *, precision: str, agreement: float):
    record = {**manifest.parity, "inference_precision": precision, "top1_agreement": agreement}
    return replace(manifest, default_precision=precision, default_parity=record)


def test_auto_takes_the_faster_default_only_where_the_export_checked_it(motion, monkeypatch):
    # The decision alone (this CPU computes in f32 whatever is asked): a CPU whose default is bf16.
    monkeypatch.setattr(inference, "default_inference_precision", lambda device="CPU": "bf16")
    manifest = motion.result.manifest
    precision, reason = choose_inference_precision(manifest)
    assert precision == "f32" and "never checked at bf16 (its default precision was f32)" in reason
    assert choose_inference_precision(_default_checked(manifest, precision="bf16", agreement=1.0))[0] == "bf16"
    precision, reason = choose_inference_precision(_default_checked(manifest, precision="bf16", agreement=0.75))
    assert precision == "f32" and "bf16 failed the export's check" in reason
    precision, reason = choose_inference_precision(_default_checked(manifest, precision="f16", agreement=1.0))
    assert precision == "f32" and "its default precision was f16" in reason


def test_batch_size_must_be_positive(motion):
    with pytest.raises(ConfigError, match="batch_size must be > 0, got 0"):
        Predictor.from_url(motion.export, batch_size=0)
