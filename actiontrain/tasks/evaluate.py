"""``actiontrain eval``: the video-level accuracy of a checkpoint, or of an OpenVINO export, on a dataset subset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from actiontrain.data.catalog import load_dataset
from actiontrain.data.eval_split import EvalSplit, eval_split
from actiontrain.evaluation import EvalResult, evaluate
from actiontrain.export.store import local_export
from actiontrain.inference import AUTO, Predictor
from actiontrain.model import memory_format_for
from actiontrain.trained_model import TrainedModel

__all__ = ["evaluate_checkpoint", "evaluate_export", "per_video_predictions", "score_export"]


def evaluate_checkpoint(
    checkpoint_url: str,
    data_url: str,
    *,
    subset: str = "",
    format: str | None = None,
    split: int = 1,
    overrides: Sequence[str] = (),
    per_video: bool = False,
) -> dict[str, Any]:
    """A checkpoint (or a run's newest) on a dataset subset, in this process, on the CPU.

    Args:
        checkpoint_url: A ``checkpoints/step-N`` folder, or a training output URL.
        data_url: Dataset root.
        subset: Subset to evaluate; default the first of validation, val, test.
        format: Dataset layout, detected when None.
        split: Official split of UCF101/HMDB51.
        overrides: ``data.*`` overrides of the recipe saved in the checkpoint (e.g. more views).
        per_video: Add ``predictions``: each video's item id -> predicted class.

    Returns:
        The summary (``top1``, ``top5``, ``num_videos``, ...) plus ``subset`` and ``step``.

    Raises:
        NotFoundError: no committed checkpoint there, or no subset to evaluate.
        ConfigError: the dataset's classes differ from the checkpoint's.
    """
    trained = TrainedModel.load(checkpoint_url, overrides=overrides)
    dataset = load_dataset(data_url, format=format, split=split)
    chosen = eval_split(
        dataset,
        classes=trained.classes,
        what="the checkpoint",
        config=trained.config.data,
        subset=subset,
        batch_size=trained.config.train.batch_size,
    )
    layout = memory_format_for("cpu", trained.config.train.channels_last)
    result = evaluate(
        trained.build_model().to(memory_format=layout),
        chosen.loader,
        num_classes=len(trained.classes),
        device=torch.device("cpu"),
        max_clips_per_forward=2 * trained.config.train.batch_size,
        memory_format=layout,
    )
    report = {**result.summary(), "subset": chosen.subset, "step": trained.step}
    if per_video:
        report["predictions"] = per_video_predictions(result, chosen, trained.classes)
    return report


def evaluate_export(
    model_url: str,
    data_url: str,
    *,
    subset: str = "",
    format: str | None = None,
    split: int = 1,
    device: str = "CPU",
    inference_precision: str | None = AUTO,
    per_video: bool = False,
) -> dict[str, Any]:
    """An OpenVINO export (FP32, FP16 or INT8) on a dataset subset: the same views, metrics and keys as a checkpoint.

    Args:
        model_url: An export folder (local or any URL, verified), or a model folder of a serving
            repository (its newest complete version).
        data_url: Dataset root; its classes must be the export's.
        subset: Subset to evaluate; default the first of validation, val, test.
        format: Dataset layout, detected when None.
        split: Official split of UCF101/HMDB51.
        device: OpenVINO device.
        inference_precision: ``auto``: the device's default where the export's recorded parity
            allows it, else f32 (see :func:`~actiontrain.inference.choose_inference_precision`);
            or an OpenVINO precision such as ``f32``.
        per_video: Add ``predictions``: each video's item id -> predicted class.

    Returns:
        The keys of :func:`evaluate_checkpoint` (``step`` is the exported weights') plus
        ``precision`` (the weights), ``inference_precision`` (what OpenVINO computed in) and why,
        ``model`` (the export folder used) and ``throughput(clips/s)``.

    Raises:
        NotFoundError: no export there, or no subset to evaluate.
        DataError: the export is corrupt.
        ConfigError: the dataset's classes differ from the export's, or a bad device.
    """
    export = local_export(model_url)
    manifest = export.manifest
    dataset = load_dataset(data_url, format=format, split=split)
    chosen = eval_split(
        dataset,
        classes=manifest.classes,
        what="the export",
        config=manifest.config.data,
        subset=subset,
        batch_size=manifest.config.train.batch_size,
    )
    predictor = Predictor(export, device=device, inference_precision=inference_precision)
    result = score_export(predictor, chosen)
    report = {
        **result.summary(),
        "subset": chosen.subset,
        "step": manifest.step,
        "precision": manifest.precision,
        "inference_precision": predictor.inference_precision,
        "inference_precision_reason": predictor.precision_reason,
        "model": export.url,
        "throughput(clips/s)": predictor.stats.clips_per_second,
    }
    if per_video:
        report["predictions"] = per_video_predictions(result, chosen, manifest.classes)
    return report


def score_export(predictor: Predictor, split: EvalSplit) -> EvalResult:
    """An OpenVINO export's video-level accuracy on an evaluation split, the same views as checkpoints get.

    Args:
        predictor: The compiled export (its precision is the caller's choice).
        split: From :func:`~actiontrain.data.eval_split.eval_split` with the export's recipe.
    """
    # Each loader batch (train.batch_size videos, all their views) goes to the predictor at once;
    # it runs them batch_size clips per inference.
    return evaluate(predictor.as_module(), split.loader, num_classes=len(predictor.classes), device="cpu")


def per_video_predictions(result: EvalResult, split: EvalSplit, classes: Sequence[str]) -> dict[str, str]:
    """Each scored video's item id -> its predicted class name, in the split's order."""
    samples = split.loader.dataset.samples
    return {samples[index].item_id: classes[label] for index, label in sorted(result.predictions.items())}
