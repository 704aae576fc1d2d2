"""Shared parts of the action-dataset importers: items with one video and one label."""

from __future__ import annotations

import os
from collections.abc import Iterator

from datumaro.components.annotation import AnnotationType, Label, LabelCategories
from datumaro.components.dataset_base import DatasetBase, DatasetItem
from datumaro.components.importer import ImportContext
from datumaro.components.media import Video

from actiontrain.data.source import DatasetSource
from actiontrain.errors import ConfigError, DataError

__all__ = ["ActionDatasetBase", "FLIP_PAIRS_INFO", "ItemProblem", "check_split", "read_lines"]

SPLITS = (1, 2, 3)
"""Official train/test splits of UCF101 and HMDB51."""

FLIP_PAIRS_INFO = "flip_pairs"
"""Key in the dataset's Datumaro infos: label pairs that swap under a horizontal flip."""


def check_split(split: int, *, format_name: str) -> int:
    """Validates the official split number (1, 2 or 3) of UCF101/HMDB51."""
    try:
        value = int(split)
    except (TypeError, ValueError):
        value = -1
    if value not in SPLITS:
        raise ConfigError(f"{format_name} split must be 1, 2 or 3, got {split!r}")
    return value


def read_lines(path: str, *, shown: str | None = None) -> list[str]:
    """Non-empty lines of a text annotation file, without BOM, CR or trailing spaces.

    Args:
        path: The local file.
        shown: How to name it in errors (its dataset URL when ``path`` is in a mirror).

    Raises:
        DataError: the file is missing or not UTF-8 text.
    """
    shown = shown or path
    try:
        with open(path, encoding="utf-8-sig") as file:
            return [line.rstrip() for line in file if line.strip()]
    except FileNotFoundError as error:
        raise DataError(f"annotation file missing: {shown}; is this the complete dataset?") from error
    except UnicodeDecodeError as error:
        raise DataError(f"annotation file {shown} is not UTF-8 text") from error


class ActionDatasetBase(DatasetBase):
    """A Datumaro extractor whose items are whole videos (or frame folders) with one label each.

    Subclasses parse their layout in ``__init__`` with :meth:`_set_classes` and :meth:`_add`;
    a bad line is reported through the import context's error policy (which either raises or
    records it) and its item is skipped.
    """

    def __init__(self, path: str, *, ctx: ImportContext | None = None):
        if not os.path.isdir(path):
            raise DataError(f"dataset folder not found: {path}")
        super().__init__(media_type=Video, ann_types={AnnotationType.label}, ctx=ctx)
        self._root = path
        self._source = DatasetSource.for_local_root(path)
        self._subset_of: dict[str, str] = {}
        self._seen: set[tuple[str, str]] = set()
        self._items: list[DatasetItem] = []
        self._labels = LabelCategories()
        self._infos: dict = {}

    def __iter__(self) -> Iterator[DatasetItem]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def categories(self):
        return {AnnotationType.label: self._labels}

    def infos(self):
        return self._infos

    def _read_lines(self, path: str) -> list[str]:
        """:func:`read_lines` of a file under the dataset root, named by its real URL in errors."""
        return read_lines(path, shown=self._source.to_url(path))

    def _set_classes(self, names: list[str]) -> None:
        for name in names:
            self._labels.add(name)

    def _set_flip_pairs(self, pairs: list[tuple[str, str]]) -> None:
        known = {label.name for label in self._labels}
        present = [[a, b] for a, b in pairs if a in known and b in known]
        if present:
            self._infos[FLIP_PAIRS_INFO] = present

    def _label_index(self, name: str) -> int | None:
        index, _ = self._labels.find(name)
        return index

    def _add(self, *, item_id: str, subset: str, media_path: str, label: str | None) -> None:
        first_subset = self._subset_of.setdefault(item_id, subset)
        if first_subset != subset:
            message = f"item is also in subset {first_subset!r}; the subsets would leak into each other"
            self._report(item_id, subset, message, kind="duplicate_item")
            return
        if (item_id, subset) in self._seen:
            self._report(item_id, subset, "item is listed twice", kind="duplicate_item")
            return
        self._seen.add((item_id, subset))
        annotations = []
        if label is not None:
            index = self._label_index(label)
            if index is None:
                self._report(item_id, subset, f"label {label!r} is not in the class list", kind="unknown_label")
                return
            annotations.append(Label(index))
        self._items.append(
            DatasetItem(id=item_id, subset=subset, media=Video(media_path), annotations=annotations)
        )

    def _report(self, item_id: str, subset: str, message: str, *, kind: str = "bad_annotation") -> None:
        """Hands a bad line to the import's error policy (which raises or records it); skips the item."""
        self._ctx.error_policy.report_item_error(ItemProblem(message, kind=kind), item_id=(item_id, subset))


class ItemProblem(DataError):
    """A dataset line that cannot become an item; ``kind`` classifies it for ``data check``."""

    def __init__(self, message: str, *, kind: str):
        super().__init__(message)
        self.kind = kind
