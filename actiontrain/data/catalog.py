"""Opening an action dataset from any URL: format detection, import through Datumaro, media as URLs."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from datumaro.components.annotation import AnnotationType, Label
from datumaro.components.dataset import Dataset
from datumaro.components.errors import DatasetImportError, DatasetNotFoundError, DatumaroError
from datumaro.components.media import Video

from actiontrain.data.formats import FLIP_PAIRS_INFO, build_environment
from actiontrain.data.layouts import FORMATS, LAYOUT_HINTS, SPLIT_FORMATS
from actiontrain.data.media import VideoRef
from actiontrain.data.problems import CollectingErrorPolicy, Problem
from actiontrain.data.source import DatasetSource
from actiontrain.errors import ActionTrainError, ConfigError, DataError
from actiontrain.storage import redact

__all__ = ["ActionDataset", "Sample", "detect_format", "load_dataset"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True, kw_only=True)
class Sample:
    """What the data loader needs of one item."""

    url: str
    """Media URL: a video file or a folder of frames."""
    label: int | None
    """Class index, or None for unlabelled items (e.g. Jester's test subset)."""
    item_id: str


@dataclass(frozen=True, kw_only=True)
class ActionDataset:
    """A dataset imported through Datumaro; every item's media is a :class:`VideoRef` URL."""

    url: str
    format: str
    dataset: Dataset
    problems: list[Problem] = field(default_factory=list)
    """Lines the importer could not use (unknown labels, malformed lines, duplicates) and items
    without media; the items stay out of :meth:`samples`."""

    @property
    def classes(self) -> list[str]:
        return [label.name for label in self.dataset.categories()[AnnotationType.label]]

    @property
    def flip_pairs(self) -> list[tuple[str, str]]:
        """Label pairs that swap under a horizontal flip, as declared by the dataset."""
        return [tuple(pair) for pair in self.dataset.infos().get(FLIP_PAIRS_INFO, [])]

    @property
    def subsets(self) -> dict[str, int]:
        """Item count per subset."""
        counts = Counter(item.subset for item in self.dataset)
        return dict(sorted(counts.items()))

    def samples(self, subset: str) -> list[Sample]:
        """The items of ``subset`` in a stable order (sorted by id).

        Raises:
            DataError: the subset does not exist.
        """
        if subset not in self.subsets:
            raise DataError(
                f"subset {subset!r} not in {self.url}; available: {', '.join(self.subsets) or 'none'}"
            )
        samples = []
        for item in self.dataset.get_subset(subset):
            if item.media is None:
                continue
            labels = [a.label for a in item.annotations if isinstance(a, Label)]
            samples.append(Sample(url=item.media.path, label=labels[0] if labels else None, item_id=item.id))
        return sorted(samples, key=lambda sample: sample.item_id)


def detect_format(source: DatasetSource) -> str:
    """The supported format whose layout ``source`` has.

    Raises:
        DataError: no supported layout, or several.
    """
    found = [name for name in build_environment().detect_dataset(source.local_root, depth=0) if name in FORMATS]
    if len(found) == 1:
        return found[0]
    hints = "; ".join(f"{name}: {hint}" for name, hint in LAYOUT_HINTS.items())
    if not found:
        raise DataError(f"no supported dataset layout at {source.url} ({hints}); pass --format if it is one of these")
    raise DataError(f"{source.url} looks like several formats ({', '.join(found)}); pass --format")


def load_dataset(url: str, *, format: str | None = None, split: int = 1) -> ActionDataset:
    """Imports the dataset at ``url`` (any fsspec URL), detecting the format when not given.

    Malformed lines and unknown labels are skipped and listed in ``problems``; a dataset that
    cannot be read at all raises.

    Args:
        url: dataset root.
        format: one of :data:`~actiontrain.data.formats.FORMATS`, or None to detect it.
        split: official split (1-3) for UCF101 and HMDB51.

    Raises:
        ConfigError: unknown format or split.
        DataError: the layout does not match or the annotations cannot be parsed.
        StorageError: the URL cannot be read.
    """
    if format is not None and format not in FORMATS:
        raise ConfigError(f"unknown dataset format {format!r}; valid: {', '.join(FORMATS)}")
    source = DatasetSource.open(url)
    format = format or detect_format(source)
    options = {"split": split} if format in SPLIT_FORMATS else {}
    policy = CollectingErrorPolicy()
    try:
        imported = Dataset.import_from(source.local_root, format, env=build_environment(), error_policy=policy, **options)
        items = [_with_url_media(item, source) for item in imported]
    except ActionTrainError:
        raise
    except DatasetNotFoundError as error:
        raise DataError(
            f"{source.url} is not a {format} dataset (expected {LAYOUT_HINTS[format]}); check --format"
        ) from error
    except (DatumaroError, DatasetImportError, OSError, ValueError, KeyError) as error:
        raise _import_error(error, source.url, format) from error
    if not items and not policy.problems:
        raise DataError(f"no items found in {source.url} read as {format}; check --format and the layout")
    problems = policy.problems + [
        Problem(
            severity="error",
            kind="missing_media",
            message=f"no video found for this item under {source.url}",
            item=f"{item.subset}/{item.id}",
        )
        for item in items
        if item.media is None
    ]
    dataset = Dataset.from_iterable(
        items, categories=imported.categories(), media_type=Video, infos=dict(imported.infos())
    )
    return ActionDataset(url=source.url, format=format, dataset=dataset, problems=problems)


def _with_url_media(item, source: DatasetSource):
    if item.media is None:
        return item
    return item.wrap(media=VideoRef(source.to_url(item.media.path)))


def _import_error(error: BaseException, url: str, format: str) -> ActionTrainError:
    cause: BaseException | None = error
    while cause is not None:  # Datumaro wraps our own errors: surface the first one
        if isinstance(cause, ActionTrainError):
            return cause
        cause = cause.__cause__ or cause.__context__
    detail = redact(str(error.__cause__ or error)).splitlines()[0] if str(error.__cause__ or error) else type(error).__name__
    return DataError(f"cannot read {url} as {format}: {detail}")
