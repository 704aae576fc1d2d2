"""UCF101 in its public layout: ``UCF-101/<Class>/v_*.avi`` and ``ucfTrainTestlist/``."""

from __future__ import annotations

import os

from datumaro.components.format_detection import FormatDetectionConfidence, FormatDetectionContext
from datumaro.components.importer import ImportContext, Importer

from actiontrain.data.formats.common import ActionDatasetBase, check_split

__all__ = ["Ucf101Base", "Ucf101Importer"]

_LISTS = "ucfTrainTestlist"
_VIDEOS = "UCF-101"
class Ucf101Base(ActionDatasetBase):
    """Subsets ``train`` and ``test`` of one official split; test labels come from the folder name."""

    NAME = "ucf101"

    def __init__(self, path: str, *, split: int = 1, ctx: ImportContext | None = None):
        super().__init__(path, ctx=ctx)
        split = check_split(split, format_name="ucf101")
        lists = os.path.join(path, _LISTS)
        class_ids: dict[str, str] = {}
        for line in self._read_lines(os.path.join(lists, "classInd.txt")):
            number, _, name = line.partition(" ")
            class_ids[number.strip()] = name.strip()
        self._set_classes(list(class_ids.values()))
        by_folder = {name.lower(): name for name in class_ids.values()}

        for line in self._read_lines(os.path.join(lists, f"trainlist0{split}.txt")):
            relative, _, number = line.rpartition(" ")
            if not relative:  # a line without a class id
                relative, number = number, ""
            label = class_ids.get(number.strip())
            if label is None:
                self._report(_item_id(relative), "train", f"class id {number!r} is not in classInd.txt", kind="unknown_label")
                continue
            self._add_video(relative, "train", label)

        for line in self._read_lines(os.path.join(lists, f"testlist0{split}.txt")):
            relative = line.split(" ")[0]
            folder = relative.split("/")[0]
            label = by_folder.get(folder.lower())
            if label is None:
                self._report(_item_id(relative), "test", f"class folder {folder!r} is not in classInd.txt", kind="unknown_label")
                continue
            self._add_video(relative, "test", label)

    def _add_video(self, relative: str, subset: str, label: str) -> None:
        media = os.path.join(self._root, _VIDEOS, *relative.split("/"))
        self._add(item_id=_item_id(relative), subset=subset, media_path=media, label=label)


def _item_id(relative: str) -> str:
    return os.path.splitext(relative.strip())[0]


class Ucf101Importer(Importer):
    """Finds ``ucfTrainTestlist/classInd.txt``; the ``split`` option picks the official split."""

    NAME = "ucf101"

    @classmethod
    def detect(cls, context: FormatDetectionContext) -> FormatDetectionConfidence:
        context.require_file(f"{_LISTS}/classInd.txt")
        context.require_file(f"{_LISTS}/trainlist0[123].txt")
        return FormatDetectionConfidence.MEDIUM

    @classmethod
    def find_sources(cls, path: str) -> list[dict]:
        if os.path.isfile(os.path.join(path, _LISTS, "classInd.txt")):
            return [{"url": path, "format": Ucf101Base.NAME}]
        return []

    @classmethod
    def get_file_extensions(cls) -> list[str]:
        return [".txt"]
