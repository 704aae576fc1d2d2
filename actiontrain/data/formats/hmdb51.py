"""HMDB51 in its public layout: ``hmdb51_org/<class>/*.avi`` and ``testTrainMulti_7030_splits/``."""

from __future__ import annotations

import glob
import os

from datumaro.components.format_detection import FormatDetectionConfidence, FormatDetectionContext
from datumaro.components.importer import ImportContext, Importer

from actiontrain.data.formats.common import ActionDatasetBase, check_split
from actiontrain.errors import DataError

__all__ = ["Hmdb51Base", "Hmdb51Importer"]

_SPLITS_DIR = "testTrainMulti_7030_splits"
_VIDEOS = "hmdb51_org"
_SUBSET_OF_FLAG = {"1": "train", "2": "test"}  # "0": not used in this split


class Hmdb51Base(ActionDatasetBase):
    """Subsets ``train`` and ``test`` of one official split (videos marked 0 are left out)."""

    NAME = "hmdb51"

    def __init__(self, path: str, *, split: int = 1, ctx: ImportContext | None = None):
        super().__init__(path, ctx=ctx)
        split = check_split(split, format_name="hmdb51")
        suffix = f"_test_split{split}.txt"
        split_files = sorted(glob.glob(os.path.join(glob.escape(path), _SPLITS_DIR, f"*{suffix}")))
        if not split_files:
            raise DataError(f"no {_SPLITS_DIR}/*{suffix} files in the dataset; is this HMDB51?")
        classes = [os.path.basename(name)[: -len(suffix)] for name in split_files]
        self._set_classes(classes)
        # Some copies are extracted without the hmdb51_org/ folder: classes sit at the root.
        videos = os.path.join(path, _VIDEOS)
        if not os.path.isdir(videos):
            videos = path

        for label, split_file in zip(classes, split_files):
            for line in self._read_lines(split_file):
                name, _, flag = line.rpartition(" ")
                name, flag = name.strip(), flag.strip()
                item_id = f"{label}/{os.path.splitext(name)[0]}"
                if flag == "0":
                    continue
                subset = _SUBSET_OF_FLAG.get(flag)
                if subset is None or not name:
                    self._report(item_id, "train", f"bad line {line!r} in {os.path.basename(split_file)}")
                    continue
                media = os.path.join(videos, label, name)
                self._add(item_id=item_id, subset=subset, media_path=media, label=label)


class Hmdb51Importer(Importer):
    """Finds ``testTrainMulti_7030_splits/*_test_split1.txt``; ``split`` picks the official split."""

    NAME = "hmdb51"

    @classmethod
    def detect(cls, context: FormatDetectionContext) -> FormatDetectionConfidence:
        context.require_file(f"{_SPLITS_DIR}/*_test_split[123].txt")
        return FormatDetectionConfidence.MEDIUM

    @classmethod
    def find_sources(cls, path: str) -> list[dict]:
        if glob.glob(os.path.join(glob.escape(path), _SPLITS_DIR, "*_test_split*.txt")):
            return [{"url": path, "format": Hmdb51Base.NAME}]
        return []

    @classmethod
    def get_file_extensions(cls) -> list[str]:
        return [".txt"]
