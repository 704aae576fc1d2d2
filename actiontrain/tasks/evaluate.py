"""``actiontrain eval``: a checkpoint's video-level accuracy on a dataset subset."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from actiontrain.data.catalog import load_dataset
from actiontrain.data.eval_split import EvalSplit, eval_split
from actiontrain.evaluation import EvalResult, evaluate
from actiontrain.export.store import LocalExport
from actiontrain.inference import Predictor
from actiontrain.model import memory_format_for
from actiontrain.trained_model import TrainedModel

__all__ = ["evaluate_checkpoint", "score_export"]


def evaluate_checkpoint(
    checkpoint_url: str,
    data_url: str,
    *,
    subset: str = "",
    format: str | None = None,
    split: int = 1,
    overrides: Sequence[str] = (),
) -> dict:
    """A checkpoint (or a run's newest) on a dataset subset, in this process, on the CPU.

    Args:
        checkpoint_url: A ``checkpoints/step-N`` folder, or a training output URL.
        data_url: Dataset root.
        subset: Subset to evaluate; default the first of validation, val, test.
        format: Dataset layout, detected when None.
        split: Official split of UCF101/HMDB51.
        overrides: ``data.*`` overrides of the recipe saved in the checkpoint (e.g. more views).

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
    return {**result.summary(), "subset": chosen.subset, "step": trained.step}


def score_export(export: LocalExport, split: EvalSplit, *, inference_precision: str | None = "f32") -> EvalResult:
    """An OpenVINO export's video-level accuracy on an evaluation split, the same views as checkpoints get.

    Args:
        export: A verified local export.
        split: From :func:`~actiontrain.data.eval_split.eval_split` with the export's recipe.
        inference_precision: OpenVINO's inference precision; ``f32`` computes FP32 exactly.
    """
    predictor = Predictor(export, inference_precision=inference_precision)
    return evaluate(predictor.as_module(), split.loader, num_classes=len(predictor.classes), device="cpu")
