"""The subset a model is evaluated on: which one, that its classes are the model's, and its loader.

Training-time evaluation, ``actiontrain eval`` (of a checkpoint or an export) and INT8 calibration
all start the same way; this module is that start, written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from actiontrain.config import DataConfig
from actiontrain.data.catalog import ActionDataset
from actiontrain.data.dataset import build_clip_dataset
from actiontrain.data.loader import ClipLoader
from actiontrain.errors import ConfigError, NotFoundError

__all__ = ["VAL_SUBSETS", "EvalSplit", "check_classes", "choose_val_subset", "eval_split"]

VAL_SUBSETS = ("validation", "val", "test")
"""Subsets evaluated by default, first found first."""


def choose_val_subset(dataset: ActionDataset, requested: str = "") -> str | None:
    """The requested subset, else the first of :data:`VAL_SUBSETS` the dataset has (None if none).

    Raises:
        ConfigError: the requested subset is not in the dataset.
    """
    if requested:
        if requested not in dataset.subsets:
            raise ConfigError(f"subset {requested!r} is not in {dataset.url}; available: {', '.join(dataset.subsets)}")
        return requested
    return next((name for name in VAL_SUBSETS if name in dataset.subsets), None)


def check_classes(dataset: ActionDataset, classes: Sequence[str], *, what: str) -> None:
    """Refuses a dataset whose classes (names and order) are not the model's.

    Raises:
        ConfigError: they differ; the message shows where, and says which dataset fits.
    """
    if list(dataset.classes) == list(classes):
        return
    differing = next(
        (index for index, (ours, theirs) in enumerate(zip(dataset.classes, classes)) if ours != theirs),
        min(len(dataset.classes), len(classes)),
    )
    raise ConfigError(
        f"{dataset.url} has {len(dataset.classes)} classes, {what} {len(classes)}, first difference at index "
        f"{differing} ({_name(dataset.classes, differing)!r} vs {_name(classes, differing)!r}); use the dataset "
        f"{what} was trained on"
    )


def _name(classes: Sequence[str], index: int) -> str:
    return classes[index] if index < len(classes) else "<none>"


@dataclass(frozen=True, kw_only=True)
class EvalSplit:
    """A subset ready to evaluate: its name and the loader of its evaluation views."""

    subset: str
    loader: ClipLoader


def eval_split(
    dataset: ActionDataset,
    *,
    classes: Sequence[str],
    what: str,
    config: DataConfig,
    subset: str = "",
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    required: bool = True,
) -> EvalSplit | None:
    """The evaluation loader of ``dataset`` for a model with ``classes``.

    Every video yields all its views (``num_eval_clips`` x ``num_eval_crops``), sampled as
    :mod:`actiontrain.data.views` does for any evaluation or prediction.

    Args:
        dataset: The loaded dataset.
        classes: The model's class names; the dataset must have exactly these.
        what: The model, for messages (``"the checkpoint"``, ``"the export"``).
        config: Sampling and transform settings (the model's recipe).
        subset: Subset to evaluate; default the first of :data:`VAL_SUBSETS`.
        batch_size: Videos per batch.
        rank: This process's rank (each rank evaluates a disjoint share).
        world_size: Number of evaluating processes.
        required: Raise when there is no subset to evaluate; else return None.

    Raises:
        ConfigError: other classes, or an unknown subset.
        NotFoundError: no subset to evaluate (with ``required``).
    """
    check_classes(dataset, classes, what=what)
    name = choose_val_subset(dataset, subset)
    if name is None:
        if required:
            raise NotFoundError(f"{dataset.url} has no {', '.join(VAL_SUBSETS)} subset; name one with --subset")
        return None
    clips = build_clip_dataset(dataset, subset=name, config=config, train=False)
    loader = ClipLoader(clips, batch_size=batch_size, rank=rank, world_size=world_size, shuffle=False)
    loader.set_epoch(0)  # fixed views; lets the loader fetch remote media ahead
    return EvalSplit(subset=name, loader=loader)
