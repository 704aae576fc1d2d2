"""Classifying videos with an OpenVINO export: views sampled as in evaluation, batched, softmax averaged over them."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from actiontrain.config import check_positive
from actiontrain.data.catalog import Sample
from actiontrain.data.dataset import ClipDataset
from actiontrain.data.loader import BadSampleTracker, ClipLoader
from actiontrain.data.video import open_media
from actiontrain.data.views import EvalViews
from actiontrain.errors import DataError
from actiontrain.export.convert import (
    Parity,
    compile_model,
    compiled_precision,
    default_inference_precision,
    read_batched_model,
)
from actiontrain.export.manifest import Manifest
from actiontrain.export.store import LocalExport, local_export

__all__ = ["AUTO", "DEFAULT_BATCH_SIZE", "InferenceStats", "Prediction", "Predictor", "choose_inference_precision"]

logger = logging.getLogger(__name__)

AUTO = "auto"
"""``inference_precision`` that lets the export's recorded parity decide (see :func:`choose_inference_precision`)."""
DEFAULT_BATCH_SIZE = 8
"""Clips per inference unless a video has more views (then all of them)."""


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """The most probable classes of one video."""

    input: str
    """The video file or frame folder, as given."""
    top_k: list[tuple[str, float]]
    """``(label, probability)``, most probable first; probabilities are softmax averaged over the views."""

    def to_dict(self) -> dict:
        return {"input": self.input, "top_k": [{"label": label, "score": score} for label, score in self.top_k]}


@dataclass(kw_only=True)
class InferenceStats:
    """Clips a predictor ran and the seconds its inferences took (decoding not included)."""

    num_clips: int = 0
    num_inferences: int = 0
    seconds: float = 0.0

    @property
    def clips_per_second(self) -> float:
        return self.num_clips / self.seconds if self.seconds > 0 else float("nan")


def choose_inference_precision(manifest: Manifest, device: str = "CPU") -> tuple[str, str]:
    """The inference precision to run an export at on ``device``, and why, in a few words.

    The device's default precision (bf16 or f16 where the CPU has it) is taken only when the
    export recorded a parity check at that same precision and it passed: logits within tolerance
    and top-1 agreement of at least :data:`~actiontrain.export.convert.MIN_TOP1_AGREEMENT`.
    Otherwise f32, which every export was checked at.

    Raises:
        ConfigError: the device is not available.
    """
    default = default_inference_precision(device)
    if default == "f32":
        return "f32", "f32, OpenVINO's default on this device"
    record = manifest.default_parity
    if record is None or manifest.default_precision != default:
        exported_at = manifest.default_precision or "unrecorded"
        return "f32", (
            f"f32: {default} is this device's default, but the export was never checked at {default} "
            f"(its default precision was {exported_at})"
        )
    parity = Parity.from_dict(record)
    if not parity.passed:
        return "f32", f"f32: {default} failed the export's check ({parity.describe()})"
    return default, f"{default}, this device's default: the export's check passed ({parity.describe()})"


class Predictor:
    """An export compiled for one OpenVINO device, with the sampling and transform of its recipe.

    A video is read through :class:`~actiontrain.data.views.EvalViews`, exactly as evaluation
    reads it (``data.num_eval_clips`` clips x ``data.num_eval_crops`` crops; short videos loop);
    every view goes through the model and the softmax probabilities are averaged.

    The IR on disk takes one view (N = S = 1, as Model API and model servers expect); the
    predictor reshapes it at load time to a dynamic N, so ``batch_size`` views, of one video or
    of several, go through one inference.

    Example:
        predictor = Predictor.from_url("s3://bucket/run-1/export")
        print(predictor.predict("clip.mp4", top_k=3).top_k)
    """

    def __init__(
        self,
        export: LocalExport,
        *,
        device: str = "CPU",
        inference_precision: str | None = AUTO,
        batch_size: int | None = None,
    ) -> None:
        """Compiles a verified export.

        Args:
            export: From :func:`~actiontrain.export.store.local_export`.
            device: OpenVINO device (``CPU``, ``GPU``, ``AUTO``...).
            inference_precision: ``auto`` (the default): the device's default precision where the
                export's recorded parity allows it, else f32 (:func:`choose_inference_precision`);
                None: the device's default regardless (as Model API and OVMS run it); or an
                OpenVINO ``INFERENCE_PRECISION_HINT`` such as ``f32``.
            batch_size: Most clips per inference; default the larger of
                :data:`DEFAULT_BATCH_SIZE` and the views of one video.

        Raises:
            ConfigError: the device is not available, or a bad ``batch_size``.
        """
        self.export = export
        self.manifest = export.manifest
        self.classes = list(self.manifest.classes)
        self.config = self.manifest.config
        self.device = device
        self._views = EvalViews(self.config.data)
        if batch_size is not None:
            check_positive("batch_size", batch_size)
        self.batch_size = batch_size or max(DEFAULT_BATCH_SIZE, self._views.num_views)
        if inference_precision == AUTO:
            hint, reason = choose_inference_precision(self.manifest, device)
        else:
            hint, reason = inference_precision, "as asked" if inference_precision else "the device's default, as asked"
        self._compiled = compile_model(
            read_batched_model(export.model_xml), device=device, inference_precision=hint
        )
        self.inference_precision = compiled_precision(self._compiled)
        """What OpenVINO computes in (``f32``, ``bf16``, ``f16``), as the compiled model reports it."""
        self.precision_reason = reason
        """Why that precision, in a few words."""
        self._request = self._compiled.create_infer_request()
        self.stats = InferenceStats()
        logger.info("OpenVINO on %s computes in %s (%s); up to %d clips per inference",
                    device, self.inference_precision, reason, self.batch_size)

    @classmethod
    def from_url(
        cls, url: str, *, device: str = "CPU", inference_precision: str | None = AUTO, batch_size: int | None = None
    ) -> Predictor:
        """Opens the export at ``url`` (a local folder, or any URL: pulled to the cache and verified).

        ``url`` may be a model folder of a serving repository: its newest complete version opens.

        Raises:
            NotFoundError: no export there (no manifest).
            DataError: the manifest is invalid or a file does not match its checksum.
            ConfigError: the device is not available.
        """
        return cls(local_export(url), device=device, inference_precision=inference_precision, batch_size=batch_size)

    def logits(self, clips: torch.Tensor) -> torch.Tensor:
        """``(N, 3, T, H, W)`` normalised clips -> ``(N, K)`` float32 logits, ``batch_size`` clips per inference."""
        output = self._compiled.output(0)
        rows = []
        for chunk in clips.to(torch.float32).split(self.batch_size):
            started = time.perf_counter()
            rows.append(self._request.infer({0: chunk[:, None].numpy()})[output].copy())
            self.stats.seconds += time.perf_counter() - started
            self.stats.num_clips += chunk.shape[0]
            self.stats.num_inferences += 1
        return torch.from_numpy(np.concatenate(rows)) if rows else torch.empty(0, len(self.classes))

    def read_views(self, url: str) -> torch.Tensor:
        """Every view of a video, ``(V, 3, T, H, W)`` normalised, exactly as evaluation reads it.

        Raises:
            DataError: the video cannot be decoded.
            StorageError: it cannot be read.
        """
        with open_media(url, decoder=self.config.data.decoder) as reader:
            return self._views.read(reader)

    def probabilities(self, views: torch.Tensor) -> torch.Tensor:
        """``(V, 3, T, H, W)`` views of one video -> ``(K,)`` softmax probabilities averaged over the views."""
        return self.logits(views).softmax(dim=1).mean(dim=0)

    def predict(self, url: str, *, top_k: int = 5) -> Prediction:
        """The ``top_k`` most probable classes of the video file or frame folder at ``url``.

        Raises:
            ConfigError: ``top_k`` is not a positive integer.
            DataError: the video cannot be decoded.
            StorageError: it cannot be read.
        """
        check_positive("top_k", top_k)
        return self._prediction(url, self.probabilities(self.read_views(url)), top_k)

    def predict_many(self, samples: Sequence[Sample], *, top_k: int = 5) -> Iterator[Prediction]:
        """Predictions for many videos, in order: several videos' views per inference.

        Videos are decoded by the recipe's loader (``data.num_workers`` processes ahead of the
        model), ``batch_size // views`` videos per batch, so decoding overlaps inference.

        Raises:
            ConfigError: ``top_k`` is not a positive integer.
            DataError: a video cannot be decoded (the first one is named).
            StorageError: a video cannot be read.
        """
        check_positive("top_k", top_k)
        if not samples:
            return
        dataset = ClipDataset(list(samples), config=self.config.data, train=False)
        loader = ClipLoader(
            dataset,
            batch_size=max(1, self.batch_size // self._views.num_views),
            shuffle=False,
            tracker=_FirstBadSampleFails(dataset),
        )
        loader.set_epoch(0)
        for batch in loader:
            videos = batch["video"]
            views = self.logits(videos.flatten(0, 1)).softmax(dim=1).view(*videos.shape[:2], -1).mean(dim=1)
            for index, probabilities in zip(batch["index"].tolist(), views):
                yield self._prediction(samples[index].url, probabilities, top_k)

    def _prediction(self, url: str, probabilities: torch.Tensor, top_k: int) -> Prediction:
        scores, indices = probabilities.topk(min(top_k, len(self.classes)))
        return Prediction(
            input=url, top_k=[(self.classes[int(i)], float(s)) for s, i in zip(scores.tolist(), indices.tolist())]
        )

    def as_module(self) -> nn.Module:
        """This predictor as a module mapping clips to logits, for :func:`~actiontrain.evaluate.evaluate`."""
        return _LogitsModule(self)


class _FirstBadSampleFails(BadSampleTracker):
    """Every input was asked for by name: the first that cannot be read ends the run, named."""

    def __init__(self, dataset: ClipDataset) -> None:
        super().__init__(num_samples=len(dataset), max_fraction=0.0)
        self._samples = dataset.samples

    def record(self, errors: list[tuple[int, str]]) -> None:
        if errors:
            index, message = errors[0]
            raise DataError(f"cannot predict {self._samples[index].url}: {message}")


class _LogitsModule(nn.Module):
    def __init__(self, predictor: Predictor) -> None:
        super().__init__()
        self._predictor = predictor

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self._predictor.logits(clips)
