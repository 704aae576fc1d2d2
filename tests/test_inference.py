"""Predicting with an export: the right class for a trained model, views as in evaluation, one-line errors."""

from __future__ import annotations

import pytest
import torch
from exported_models import motion_export

from actiontrain.data.catalog import Sample
from actiontrain.data.dataset import ClipDataset
from actiontrain.data.motion import render_clip
from actiontrain.data.media_writer import write_frame_folder, write_video
from actiontrain.data.video import open_media
from actiontrain.errors import ConfigError, DataError, NotFoundError
from actiontrain.inference import Prediction, Predictor
from actiontrain.tasks.predict import predict


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    return motion_export(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(motion):
    return Predictor.from_url(motion.export)


def test_every_test_video_gets_its_class(motion):
    predictions = predict(motion.export, [sample.url for sample in motion.test_samples], top_k=3)
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
    with pytest.raises(ConfigError, match=r"cannot compile the model for OpenVINO device 'NOPE' \(available: .*CPU"):
        Predictor.from_url(motion.export, device="NOPE")


def test_top_k_must_be_positive(predictor, motion):
    with pytest.raises(ConfigError, match="top_k must be > 0, got 0"):
        predictor.predict(motion.test_samples[0].url, top_k=0)
