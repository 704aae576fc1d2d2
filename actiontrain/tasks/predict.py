"""``actiontrain predict``: classify videos, frame folders, folders of them or a dataset subset with an OpenVINO export."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from actiontrain.config import check_positive
from actiontrain.data.catalog import Sample, load_dataset
from actiontrain.data.eval_split import VAL_SUBSETS, choose_val_subset
from actiontrain.data.media import find_media
from actiontrain.errors import ConfigError, NotFoundError
from actiontrain.inference import Prediction, Predictor

__all__ = ["PredictionReport", "predict", "prediction_samples"]


@dataclass(frozen=True, kw_only=True)
class PredictionReport:
    """The predictions of one ``predict`` run and how fast they came."""

    predictions: list[Prediction]
    """One per video, in input order."""
    model: str
    """The export folder used (for a serving repository's model folder, its newest version)."""
    inference_precision: str
    """What OpenVINO computed in: ``f32``, or the device's default where the export's check allows it."""
    precision_reason: str
    batch_size: int
    """Most clips per inference."""
    num_clips: int
    """Views that went through the model."""
    inference_seconds: float
    """Time spent in inferences (decoding excluded)."""
    elapsed_seconds: float
    """Wall time of the whole run, decoding included (the model's loading excluded)."""

    @property
    def clips_per_second(self) -> float:
        """Inference throughput."""
        return self.num_clips / self.inference_seconds if self.inference_seconds > 0 else float("nan")

    @property
    def videos_per_second(self) -> float:
        """End-to-end rate, decoding included."""
        return len(self.predictions) / self.elapsed_seconds if self.elapsed_seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "inference_precision": self.inference_precision,
            "inference_precision_reason": self.precision_reason,
            "batch_size": self.batch_size,
            "num_videos": len(self.predictions),
            "num_clips": self.num_clips,
            "throughput(clips/s)": round(self.clips_per_second, 2),
            "throughput(videos/s)": round(self.videos_per_second, 2),
            "predictions": [prediction.to_dict() for prediction in self.predictions],
        }


def prediction_samples(
    inputs: Sequence[str] = (),
    *,
    data_url: str | None = None,
    subset: str = "",
    format: str | None = None,
    split: int = 1,
) -> list[Sample]:
    """The videos to predict: each input (a folder stands for the videos and frame folders in it),
    then the samples of a dataset's subset.

    Raises:
        ConfigError: nothing to predict, or an unknown subset.
        NotFoundError: a folder, or the dataset's evaluation subset, does not exist.
        DataError: a folder holds no videos; the dataset cannot be read.
    """
    samples = [Sample(url=url, label=None, item_id=url) for given in inputs for url in find_media(given)]
    if data_url is not None:
        dataset = load_dataset(data_url, format=format, split=split)
        name = choose_val_subset(dataset, subset)
        if name is None:
            raise NotFoundError(f"{dataset.url} has no {', '.join(VAL_SUBSETS)} subset; name one with --subset")
        samples += dataset.samples(name)
    if not samples:
        raise ConfigError("nothing to predict: pass videos, frame folders, folders of them, or --data URL")
    return samples


def predict(
    model_url: str,
    inputs: Sequence[str] = (),
    *,
    data_url: str | None = None,
    subset: str = "",
    format: str | None = None,
    split: int = 1,
    top_k: int = 5,
    device: str = "CPU",
    batch_size: int | None = None,
) -> PredictionReport:
    """Classifies videos with the export at ``model_url``, several videos' views per inference.

    Args:
        model_url: An export folder (local, or any URL: pulled to the cache, checksums verified),
            or a model folder of a serving repository (its newest complete version).
        inputs: Video files, frame folders, or folders of them (local or remote).
        data_url: Also predict a dataset's subset.
        subset: That subset; default the first of validation, val, test.
        format: The dataset's layout, detected when None.
        split: Official split of UCF101/HMDB51.
        top_k: Classes to report per video.
        device: OpenVINO device.
        batch_size: Most clips per inference (default: 8, or one video's views if more).

    Returns:
        One prediction per video in order, the precision used and the throughput.

    Raises:
        NotFoundError: no export at ``model_url``, or an input does not exist.
        DataError: the export is corrupt, or an input cannot be decoded.
        ConfigError: a bad ``top_k``, ``batch_size`` or device, or nothing to predict.
    """
    check_positive("top_k", top_k)
    samples = prediction_samples(inputs, data_url=data_url, subset=subset, format=format, split=split)
    predictor = Predictor.from_url(model_url, device=device, batch_size=batch_size)
    started = time.perf_counter()
    predictions = list(predictor.predict_many(samples, top_k=top_k))
    return PredictionReport(
        predictions=predictions,
        model=predictor.export.url,
        inference_precision=predictor.inference_precision,
        precision_reason=predictor.precision_reason,
        batch_size=predictor.batch_size,
        num_clips=predictor.stats.num_clips,
        inference_seconds=predictor.stats.seconds,
        elapsed_seconds=time.perf_counter() - started,
    )
