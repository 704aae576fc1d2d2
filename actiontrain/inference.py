"""Classifying videos with an OpenVINO export: views sampled as in evaluation, softmax averaged over them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from actiontrain.config import check_positive
from actiontrain.data.sampling import eval_clip_indices
from actiontrain.data.transforms import build_eval_transform
from actiontrain.data.video import open_media
from actiontrain.errors import DataError
from actiontrain.export.convert import compile_model
from actiontrain.export.store import LocalExport, local_export

__all__ = ["Prediction", "Predictor", "predict"]

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

    A video is read as evaluation reads it: ``data.num_eval_clips`` clips of ``data.clip_len``
    frames ``data.frame_interval`` apart, spread over the whole video, each resized to
    ``data.eval_short_side`` and centre-cropped (or three crops); every view goes through the
    model and the softmax probabilities are averaged.

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
        data = self.config.data
        self.device = device
        self._compiled = compile_model(export.model_xml, device=device, inference_precision=inference_precision)
        self._request = self._compiled.create_infer_request()
        self._transform = build_eval_transform(
            short_side=data.eval_short_side,
            crop_size=data.crop_size,
            num_crops=data.num_eval_crops,
            mean=data.mean,
            std=data.std,
        )

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
        """Every view of a video, ``(V, 3, T, H, W)`` normalised, as evaluation samples it.

        Raises:
            DataError: the video cannot be decoded, or has fewer frames than one clip.
            StorageError: it cannot be read.
        """
        data = self.config.data
        with open_media(url, decoder=data.decoder) as reader:
            # Shorter videos than a clip's span loop (as in evaluation), but fewer frames than the
            # clip itself would show the model the same frames twice: no longer the same motion.
            if reader.num_frames < data.clip_len:
                raise DataError(
                    f"{url} is too short: {reader.num_frames} frames, the model needs at least {data.clip_len} "
                    f"(clips of {data.clip_len} frames {data.frame_interval} apart)"
                )
            clips = eval_clip_indices(
                reader.num_frames,
                clip_len=data.clip_len,
                frame_interval=data.frame_interval,
                num_clips=data.num_eval_clips,
            )
            frames = reader.get_frames([index for clip in clips for index in clip])
        return torch.cat([self._transform(clip) for clip in frames.split(data.clip_len)])

    def probabilities(self, views: torch.Tensor) -> torch.Tensor:
        """``(V, 3, T, H, W)`` views of one video -> ``(K,)`` softmax probabilities averaged over the views."""
        return self.logits(views).softmax(dim=1).mean(dim=0)

    def predict(self, url: str, *, top_k: int = 5) -> Prediction:
        """The ``top_k`` most probable classes of the video file or frame folder at ``url``.

        Raises:
            ConfigError: ``top_k`` is not a positive integer.
            DataError: the video cannot be decoded or is too short.
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


def predict(
    model_url: str,
    inputs: Sequence[str],
    *,
    top_k: int = 5,
    device: str = "CPU",
) -> list[Prediction]:
    """``actiontrain predict``: classify each video file or frame folder with the export at ``model_url``.

    Args:
        model_url: An export folder: local, or any URL (pulled to the cache, checksums verified).
        inputs: Video files or frame folders, local or remote.
        top_k: Classes to report per input.
        device: OpenVINO device.

    Returns:
        One prediction per input, in order.

    Raises:
        NotFoundError: no export at ``model_url``, or an input does not exist.
        DataError: the export is corrupt, or an input cannot be decoded or is too short.
        ConfigError: a bad ``top_k`` or device.
    """
    check_positive("top_k", top_k)
    predictor = Predictor.from_url(model_url, device=device)
    return [predictor.predict(url, top_k=top_k) for url in inputs]
