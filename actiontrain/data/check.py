"""``data check``: what a dataset holds and everything wrong with it, before a training job finds out."""

from __future__ import annotations

import logging
import posixpath
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from actiontrain import storage
from actiontrain.data.catalog import ActionDataset, load_dataset
from actiontrain.data.media import FRAME_EXTENSIONS
from actiontrain.data.problems import Problem
from actiontrain.errors import ActionTrainError

__all__ = ["CheckReport", "check_dataset"]

logger = logging.getLogger(__name__)
_DEEP_CHUNK = 32  # frames decoded at a time in --deep, to bound memory on long videos


_MEDIA_KINDS = ("missing_media", "undecodable")
"""Problems of single media files: training skips those items, up to data.max_bad_fraction."""


@dataclass(frozen=True, kw_only=True)
class CheckReport:
    """Summary of a dataset and the problems found in it."""

    url: str
    format: str
    classes: list[str]
    subsets: dict[str, int]
    problems: list[Problem] = field(default_factory=list)
    flip_pairs: list[tuple[str, str]] = field(default_factory=list)
    max_bad_fraction: float = 0.0
    """Share of items with missing or undecodable media that training tolerates."""

    @property
    def bad_media_fraction(self) -> float:
        """Share of the items whose media are missing or undecodable."""
        bad = {problem.item for problem in self.problems if problem.kind in _MEDIA_KINDS}
        return len(bad) / max(sum(self.subsets.values()), 1)

    @property
    def usable(self) -> bool:
        """False when an annotation error exists, or more media are bad than training tolerates."""
        structural = any(p.severity == "error" and p.kind not in _MEDIA_KINDS for p in self.problems)
        return bool(self.subsets) and not structural and self.bad_media_fraction <= self.max_bad_fraction

    def to_dict(self) -> dict:
        return {
            "url": self.url,
            "format": self.format,
            "classes": self.classes,
            "subsets": self.subsets,
            "flip_pairs": [list(pair) for pair in self.flip_pairs],
            "usable": self.usable,
            "bad_media_fraction": round(self.bad_media_fraction, 6),
            "max_bad_fraction": self.max_bad_fraction,
            "problems": [problem.to_dict() for problem in self.problems],
        }


def check_dataset(
    url: str,
    *,
    format: str | None = None,
    split: int = 1,
    deep: bool = False,
    max_bad_fraction: float = 0.0,
    workers: int = 8,
) -> CheckReport:
    """Imports the dataset at ``url`` and looks for problems.

    Finds lines the importer could not use (unknown labels, malformed lines, duplicates), missing
    media, classes without items and, with ``deep``, media that cannot be decoded to the last
    frame. The dataset is usable when no annotation is wrong and at most ``max_bad_fraction`` of
    its items have missing or undecodable media (training skips those).

    Raises:
        ActionTrainError: the dataset cannot be read at all (wrong URL, format or layout).
    """
    dataset = load_dataset(url, format=format, split=split)
    problems = list(dataset.problems)
    present = _find_present_media(dataset)
    problems += [  # items without any media were reported by the import already
        Problem(
            severity="error",
            kind="missing_media",
            message=f"media not found: {item.media.path}",
            item=f"{item.subset}/{item.id}",
        )
        for item in dataset.dataset
        if item.media is not None and item.media.path not in present
    ]
    problems += _empty_classes(dataset)
    if deep:
        problems += _undecodable(dataset, present, workers=workers)
    return CheckReport(
        url=dataset.url,
        format=dataset.format,
        classes=dataset.classes,
        subsets=dataset.subsets,
        problems=problems,
        flip_pairs=dataset.flip_pairs,
        max_bad_fraction=max_bad_fraction,
    )


def _find_present_media(dataset: ActionDataset) -> set[str]:
    # One recursive listing of the whole dataset instead of a request per item.
    root = dataset.url
    files = storage.find(root)
    present: set[str] = set()
    for relative in files:
        url = storage.join(root, relative) if "://" in root else f"{root.rstrip('/')}/{relative}"
        present.add(url)
        if posixpath.splitext(relative)[1].lower() in FRAME_EXTENSIONS:
            present.add(url.rsplit("/", 1)[0])  # a frame folder with at least one frame
    return present


def _empty_classes(dataset: ActionDataset) -> list[Problem]:
    counts: Counter[tuple[str, int]] = Counter()
    for sample_subset in dataset.subsets:
        for sample in dataset.samples(sample_subset):
            if sample.label is not None:
                counts[(sample_subset, sample.label)] += 1
    totals = Counter()
    for (_, label), count in counts.items():
        totals[label] += count
    problems = []
    labelled_subsets = sorted({subset for subset, _ in counts})
    for index, name in enumerate(dataset.classes):
        if totals[index] == 0:
            problems.append(
                Problem(severity="error", kind="empty_class", message=f"class {name!r} has no items in any subset")
            )
            continue
        for subset in labelled_subsets:
            if counts[(subset, index)] == 0:
                problems.append(
                    Problem(
                        severity="warning",
                        kind="empty_class",
                        message=f"class {name!r} has no items in subset {subset!r}",
                    )
                )
    return problems


def _undecodable(dataset: ActionDataset, present: set[str], *, workers: int) -> list[Problem]:
    # Start-up: decoding imports torch (seconds); only --deep decodes.
    from actiontrain.data.video import open_media  # noqa: PLC0415

    def decode_all(item) -> Problem | None:
        try:
            with open_media(item.media.path) as reader:
                for start in range(0, reader.num_frames, _DEEP_CHUNK):
                    reader.get_frames(list(range(start, min(start + _DEEP_CHUNK, reader.num_frames))))
                claimed = reader.header_num_frames
                if claimed and reader.num_frames < claimed:
                    message = (
                        f"truncated video {item.media.path}: holds {reader.num_frames} of the {claimed} frames "
                        "its header claims; re-download or re-encode it"
                    )
                    return Problem(severity="error", kind="undecodable", message=message, item=f"{item.subset}/{item.id}")
        except ActionTrainError as error:
            return Problem(severity="error", kind="undecodable", message=str(error), item=f"{item.subset}/{item.id}")
        return None

    items = [item for item in dataset.dataset if item.media is not None and item.media.path in present]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [problem for problem in pool.map(decode_all, items) if problem is not None]
