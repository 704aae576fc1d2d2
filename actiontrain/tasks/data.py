"""``actiontrain data check|convert|synth``: inspect, convert and generate datasets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from actiontrain.data.catalog import load_dataset
from actiontrain.data.check import CheckReport, check_dataset
from actiontrain.data.convert import ConvertReport, convert_dataset
from actiontrain.data.synth import SynthSummary, synthesize

__all__ = ["ConvertResult", "check", "convert", "synth"]


def check(url: str, *, format: str | None = None, split: int = 1, deep: bool = False, max_bad_fraction: float = 0.0) -> CheckReport:
    """Imports the dataset at ``url`` and reports every problem (see :func:`~actiontrain.data.check.check_dataset`)."""
    return check_dataset(url, format=format, split=split, deep=deep, max_bad_fraction=max_bad_fraction)


@dataclass(frozen=True, kw_only=True)
class ConvertResult:
    """A conversion: what was written, and the source's lines that were skipped."""

    report: ConvertReport
    skipped: list[str]


def convert(
    source: str,
    destination: str,
    *,
    format: str | None = None,
    split: int = 1,
    flip_pairs: Sequence[tuple[str, str]] = (),
) -> ConvertResult:
    """Writes the dataset at ``source`` to ``destination`` in Datumaro's format, media first, annotations
    last, declaring ``flip_pairs`` (mirror-image classes) besides the source's own."""
    dataset = load_dataset(source, format=format, split=split)
    report = convert_dataset(dataset, destination, flip_pairs=flip_pairs)
    return ConvertResult(report=report, skipped=[str(problem) for problem in dataset.problems])


def synth(
    destination: str, *, format: str, num_classes: int, videos_per_class: int, num_frames: tuple[int, int], seed: int
) -> SynthSummary:
    """Generates a synthetic motion dataset in a public dataset's layout (see :func:`~actiontrain.data.synth.synthesize`)."""
    return synthesize(
        destination,
        format=format,
        num_classes=num_classes,
        videos_per_class=videos_per_class,
        num_frames=num_frames,
        seed=seed,
    )
