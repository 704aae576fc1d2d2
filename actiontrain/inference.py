"""Classifying videos with an OpenVINO export: views sampled as in evaluation, softmax averaged over them."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from actiontrain.config import check_positive
from actiontrain.data.video import open_media
from actiontrain.data.views import EvalViews
from actiontrain.export.convert import compile_model
from actiontrain.export.store import LocalExport, local_export

__all__ = ["Prediction", "Predictor"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """The most probable classes of one video."""

    input: str
    """The video file or frame folder, as given."""
    top_k: list[tuple[str, float]]
    """``(label, probability)``, most probable first; probabilities are softmax averaged over the views."""

    def to_dict(self) -> dict:
        return {"input": self.input, "top_k": [{"label": label, "score": score} for label, score in self.top_k]}


class Predictor:
    """An export compiled for one OpenVINO device, with the sampling and transform of its recipe.

    A video is read through :class:`~actiontrain.data.views.EvalViews`, exactly as evaluation
    reads it (``data.num_eval_clips`` clips x ``data.num_eval_crops`` crops; short videos loop);
    every view goes through the model and the softmax probabilities are averaged.

    Example:
        predictor = Predictor.from_url("s3://bucket/run-1/export")
        print(predictor.predict("clip.mp4", top_k=3).top_k)
    """

    def __init__(self, export: LocalExport, *, device: str = "CPU", inference_precision: str | None = None) -> None:
        """Compiles a verified export.

        Args:
            export: From :func:`~actiontrain.export.store.local_export`.
            device: OpenVINO device (``CPU``, ``GPU``, ``AUTO``...).
            inference_precision: OpenVINO's ``INFERENCE_PRECISION_HINT``; None keeps the device's
                default (bf16 on CPUs with AVX512-BF16 or AMX, as Model API would run it), ``f32``
                computes FP32 exports exactly in float32.

        Raises:
            ConfigError: the device is not available.
        """
        self.export = export
        self.manifest = export.manifest
        self.classes = list(self.manifest.classes)
        self.config = self.manifest.config
        self.device = device
        self._compiled = compile_model(export.model_xml, device=device, inference_precision=inference_precision)
        self._request = self._compiled.create_infer_request()
        self._views = EvalViews(self.config.data)

    @classmethod
    def from_url(cls, url: str, *, device: str = "CPU", inference_precision: str | None = None) -> Predictor:
        """Opens the export at ``url`` (a local folder, or any URL: pulled to the cache and verified).

        Raises:
            NotFoundError: no export there (no manifest).
            DataError: the manifest is invalid or a file does not match its checksum.
            ConfigError: the device is not available.
        """
        return cls(local_export(url), device=device, inference_precision=inference_precision)

    def logits(self, clips: torch.Tensor) -> torch.Tensor:
        """``(N, 3, T, H, W)`` normalised clips -> ``(N, K)`` float32 logits, one inference per clip."""
        output = self._compiled.output(0)
        rows = [self._request.infer({0: clip[None, None].numpy()})[output][0] for clip in clips.to(torch.float32)]
        return torch.from_numpy(np.stack(rows)) if rows else torch.empty(0, len(self.classes))

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
        probabilities = self.probabilities(self.read_views(url))
        scores, indices = probabilities.topk(min(top_k, len(self.classes)))
        return Prediction(
            input=url, top_k=[(self.classes[int(i)], float(s)) for s, i in zip(scores.tolist(), indices.tolist())]
        )

    def as_module(self) -> nn.Module:
        """This predictor as a module mapping clips to logits, for :func:`~actiontrain.evaluate.evaluate`."""
        return _LogitsModule(self)


class _LogitsModule(nn.Module):
    def __init__(self, predictor: Predictor) -> None:
        super().__init__()
        self._predictor = predictor

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self._predictor.logits(clips)
