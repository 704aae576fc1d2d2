"""Video-level evaluation of any model on a loader: every view scored, softmax averaged, gathered over ranks."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from actiontrain.errors import ConfigError

__all__ = ["EvalResult", "evaluate"]

# Per-video row exchanged between ranks: index, label, probability of the label, then the top
# classes. float64 holds integers exactly up to 2**53, so one tensor and one collective carry all.
_INDEX, _LABEL, _LABEL_PROB, _TOP = 0, 1, 2, 3
# A probability of 0 for the true class would make the loss infinite.
_MIN_PROB = 1e-12


@dataclass(kw_only=True)
class EvalResult:
    """Video-level metrics of one evaluation; the same on every rank.

    Accuracies and the loss cover labelled videos only; they are NaN when there are none.
    """

    top1: float
    """Fraction of labelled videos whose most probable class is their label."""
    top5: float
    """Fraction of labelled videos whose label is among the five most probable classes."""
    loss: float
    """Mean cross-entropy of the view-averaged probabilities."""
    mean_class_accuracy: float
    """Top-1 accuracy of each class that has labelled videos, averaged over those classes."""
    num_videos: int
    """Labelled videos scored (each counted once, whichever ranks saw it)."""
    num_unlabeled: int
    """Videos without a label (label -1): predicted, not scored."""
    num_skipped: int
    """Videos the loader could not read."""
    confusion: torch.Tensor = field(repr=False)
    """``(K, K)`` int64 counts of labelled videos; rows the true class, columns the prediction."""
    predictions: dict[int, int] = field(repr=False)
    """Sample index -> most probable class, for every video scored (unlabelled ones too)."""

    def summary(self) -> dict[str, float | int]:
        """The scalar metrics: what a metrics record needs.

        NaN stays a float (arithmetic and formatting keep working); :class:`MetricsWriter`
        writes it as ``null``.
        """
        return {
            "top1": self.top1,
            "top5": self.top5,
            "loss": self.loss,
            "mean_class_accuracy": self.mean_class_accuracy,
            "num_videos": self.num_videos,
            "num_unlabeled": self.num_unlabeled,
            "num_skipped": self.num_skipped,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain Python values: :meth:`summary`, the confusion matrix as nested
        lists and the predictions (keys stay ``int``; ``json`` writes them as strings)."""
        return {
            **self.summary(),
            "confusion": self.confusion.tolist(),
            "predictions": dict(self.predictions),
        }


def _views(video: torch.Tensor) -> torch.Tensor:
    # (B, V, C, T, H, W) eval batches; a (B, C, T, H, W) batch is one view per video.
    if video.ndim == 5:
        return video.unsqueeze(1)
    if video.ndim != 6:
        raise ValueError(f"expected a (B, V, C, T, H, W) or (B, C, T, H, W) batch, got shape {tuple(video.shape)}")
    return video


def _score_batch(
    model: nn.Module,
    video: torch.Tensor,
    *,
    num_classes: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    max_clips_per_forward: int | None,
    memory_format: torch.memory_format,
) -> torch.Tensor:
    """``(B, K)`` float32 probabilities, averaged over each video's views."""
    video = _views(video)
    batch, num_views = video.shape[:2]
    clips = video.reshape(batch * num_views, *video.shape[2:])
    chunk = max_clips_per_forward or clips.shape[0]
    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    probabilities = []
    with autocast:
        for part in clips.split(chunk):
            logits = model(part.to(device, non_blocking=True, memory_format=memory_format))
            if logits.ndim != 2 or logits.shape[1] != num_classes:
                raise ConfigError(
                    f"the model outputs shape {tuple(logits.shape)} for {part.shape[0]} clips, expected "
                    f"({part.shape[0]}, {num_classes}); does model.num_classes match the dataset's classes?"
                )
            # Softmax in float32: bf16 probabilities of near-ties would round to the same value.
            probabilities.append(logits.float().softmax(dim=1))
    return torch.cat(probabilities).view(batch, num_views, num_classes).mean(dim=1)


def _local_rows(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    *,
    num_classes: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    max_clips_per_forward: int | None,
    memory_format: torch.memory_format,
) -> tuple[torch.Tensor, set[int]]:
    """This rank's per-video rows (see ``_INDEX``...) on the CPU, and the indices it could not read."""
    top_k = min(5, num_classes)
    rows = []
    skipped: set[int] = set()
    for batch in loader:
        skipped.update(int(index) for index, _ in batch.get("errors", ()))
        if batch["video"] is None:  # every sample of the batch was unreadable
            continue
        # Checked on the CPU, before the batch reaches the device: no synchronisation per batch.
        labels = torch.as_tensor(batch["label"], dtype=torch.long).cpu()
        invalid = (labels >= num_classes) | (labels < -1)
        if bool(invalid.any()):
            raise ConfigError(
                f"label {int(labels[invalid][0])} is outside the model's {num_classes} classes [0, {num_classes - 1}]"
            )
        probs = _score_batch(
            model,
            batch["video"],
            num_classes=num_classes,
            device=device,
            amp_dtype=amp_dtype,
            max_clips_per_forward=max_clips_per_forward,
            memory_format=memory_format,
        ).to(torch.float64)
        labels = labels.to(probs.device)
        indices = torch.as_tensor(batch["index"], dtype=torch.long).to(probs.device)
        labelled = labels >= 0
        label_prob = probs.gather(1, labels.clamp(min=0).view(-1, 1)).squeeze(1)
        label_prob = torch.where(labelled, label_prob, torch.full_like(label_prob, math.nan))
        top = probs.topk(top_k, dim=1).indices
        row = torch.cat(
            [indices.view(-1, 1).double(), labels.view(-1, 1).double(), label_prob.view(-1, 1), top.double()], dim=1
        )
        rows.append(row.cpu())
    if not rows:
        return torch.empty(0, _TOP + top_k, dtype=torch.float64), skipped
    return torch.cat(rows), skipped


def _gather_rows(rows: torch.Tensor, num_skipped: int, *, device: torch.device) -> tuple[torch.Tensor, int]:
    """Every rank's rows, concatenated in rank order, and the total skipped count."""
    # NCCL only moves CUDA tensors; gloo only CPU ones.
    comm_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    world_size = dist.get_world_size()
    sizes = torch.tensor([rows.shape[0], num_skipped], dtype=torch.long, device=comm_device)
    all_sizes = [torch.empty_like(sizes) for _ in range(world_size)]
    dist.all_gather(all_sizes, sizes)
    counts = [int(size[0]) for size in all_sizes]
    # all_gather needs equal shapes: pad to the longest rank (ranks may differ by a few videos).
    longest = max(max(counts), 1)
    padded = torch.zeros(longest, rows.shape[1], dtype=rows.dtype, device=comm_device)
    padded[: rows.shape[0]] = rows.to(comm_device)
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    merged = torch.cat([part[:count].cpu() for part, count in zip(gathered, counts)])
    return merged, sum(int(size[1]) for size in all_sizes)


def _dedup(rows: torch.Tensor) -> torch.Tensor:
    # A sampler that pads its last batch shows some videos twice: each counts once.
    indices = rows[:, _INDEX].long()
    order = torch.argsort(indices, stable=True)
    rows, indices = rows[order], indices[order]
    first = torch.ones_like(indices, dtype=torch.bool)
    first[1:] = indices[1:] != indices[:-1]
    return rows[first]


def _metrics(rows: torch.Tensor, *, num_classes: int, num_skipped: int) -> EvalResult:
    labels = rows[:, _LABEL].long()
    top = rows[:, _TOP:].long()
    predicted = top[:, 0]
    predictions = dict(zip(rows[:, _INDEX].long().tolist(), predicted.tolist()))
    labelled = labels >= 0
    labels, top, predicted = labels[labelled], top[labelled], predicted[labelled]
    count = int(labelled.sum())
    confusion = torch.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    confusion = confusion.view(num_classes, num_classes)
    if count:
        top1 = float((predicted == labels).double().mean())
        top5 = float((top == labels.view(-1, 1)).any(dim=1).double().mean())
        loss = float(-rows[labelled, _LABEL_PROB].clamp(min=_MIN_PROB).log().mean())
        per_class = confusion.sum(dim=1)
        present = per_class > 0
        mean_class_accuracy = float((confusion.diagonal()[present].double() / per_class[present]).mean())
    else:
        top1 = top5 = loss = mean_class_accuracy = math.nan
    return EvalResult(
        top1=top1,
        top5=top5,
        loss=loss,
        mean_class_accuracy=mean_class_accuracy,
        num_videos=count,
        num_unlabeled=int((~labelled).sum()),
        num_skipped=num_skipped,
        confusion=confusion,
        predictions=predictions,
    )


def evaluate(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    *,
    num_classes: int,
    device: torch.device | str,
    rank: int = 0,
    world_size: int = 1,
    amp_dtype: torch.dtype | None = None,
    max_clips_per_forward: int | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> EvalResult:
    """Scores every video of ``loader`` and gathers the metrics of all ranks.

    Each view of a video (``num_eval_clips * num_eval_crops`` of them) goes through the model;
    the video's prediction is the mean of the views' softmax probabilities (SlowFast's multi-view
    testing). With ``torch.distributed`` initialised and ``world_size > 1`` every rank scores its
    share, the per-video results are gathered (ranks may hold different numbers of videos) and
    counted once per sample index, so every rank returns the same result. Call this on every rank.

    The model is put in eval mode and each module's previous mode is restored afterwards.

    Args:
        model: Maps ``(N, C, T, H, W)`` clips to ``(N, num_classes)`` logits.
        loader: A :class:`~actiontrain.data.loader.ClipLoader` of an evaluation dataset (or any
            iterable of its batches: ``video`` ``(B, V, C, T, H, W)``, ``label``, ``index``,
            optional ``errors``). Call its ``set_epoch`` beforehand as for training.
        num_classes: The model's classes ``K``.
        device: Where the model runs.
        rank: This process's rank.
        world_size: Number of processes evaluating disjoint shares.
        amp_dtype: Autocast dtype (``torch.bfloat16``, ``torch.float16``); None runs in the
            model's own precision.
        max_clips_per_forward: Most clips per forward pass (a batch of 8 videos with 30 views
            is 240 clips); None sends each batch's views at once.
        memory_format: Layout of the clips fed to the model (the trainer's, e.g. channels-last-3d).

    Returns:
        The metrics over the labelled videos of all ranks.

    Raises:
        ConfigError: the model's outputs or a label do not match ``num_classes``.
        ValueError: ``world_size > 1`` without an initialised process group, or a bad argument.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if max_clips_per_forward is not None and max_clips_per_forward < 1:
        raise ValueError(f"max_clips_per_forward must be >= 1 or None, got {max_clips_per_forward}")
    distributed = world_size > 1
    if distributed:
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(f"world_size={world_size} needs an initialised torch.distributed process group")
        if dist.get_world_size() != world_size or dist.get_rank() != rank:
            raise ValueError(
                f"rank {rank} of {world_size} given, but the process group has rank "
                f"{dist.get_rank()} of {dist.get_world_size()}"
            )
    device = torch.device(device)
    # Per module, not just the top: a frozen submodule may have been in eval mode on purpose.
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():
            rows, skipped = _local_rows(
                model,
                loader,
                num_classes=num_classes,
                device=device,
                amp_dtype=amp_dtype,
                max_clips_per_forward=max_clips_per_forward,
                memory_format=memory_format,
            )
    finally:
        for module, training in modes:
            module.training = training
    num_skipped = len(skipped)
    if distributed:
        rows, num_skipped = _gather_rows(rows, num_skipped, device=device)
    return _metrics(_dedup(rows), num_classes=num_classes, num_skipped=num_skipped)
