"""Shared parts of the action-dataset importers: items with one video and one label."""

from __future__ import annotations

import os
from collections.abc import Iterator

from datumaro.components.annotation import AnnotationType, Label, LabelCategories
from datumaro.components.dataset_base import DatasetBase, DatasetItem
from datumaro.components.importer import ImportContext
from datumaro.components.media import Video

from actiontrain.errors import DataError

__all__ = ["ActionDatasetBase", "FLIP_PAIRS_INFO", "read_lines"]

FLIP_PAIRS_INFO = "flip_pairs"
"""Key in the dataset's Datumaro infos: label pairs that swap under a horizontal flip."""


def read_lines(path: str, *, dataset_url: str | None = None) -> list[str]:
    """Non-empty lines of a text annotation file, without BOM, CR or trailing spaces.

    Raises:
        DataError: the file is missing or not UTF-8 text.
    """
    shown = path if dataset_url is None else dataset_url
    try:
        with open(path, encoding="utf-8-sig") as file:
            return [line.rstrip() for line in file if line.strip()]
    except FileNotFoundError:
        raise DataError(f"annotation file missing: {shown}; is this the complete dataset?") from None
    except UnicodeDecodeError:
        raise DataError(f"annotation file {shown} is not UTF-8 text") from None


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
        annotations = []
        if label is not None:
            index = self._label_index(label)
            if index is None:
                self._report(item_id, subset, f"label {label!r} is not in the class list")
                return
            annotations.append(Label(index))
        self._items.append(
            DatasetItem(id=item_id, subset=subset, media=Video(media_path), annotations=annotations)
        )

    def _report(self, item_id: str, subset: str, message: str) -> None:
        self._ctx.error_policy.report_item_error(DataError(message), item_id=(item_id, subset))
