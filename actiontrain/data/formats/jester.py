"""20BN-Jester v1 in its public layout: JPEG frame folders and ``jester-v1-*.csv`` lists."""

from __future__ import annotations

import os

from datumaro.components.format_detection import FormatDetectionConfidence, FormatDetectionContext
from datumaro.components.importer import ImportContext, Importer

from actiontrain.data.formats.common import ActionDatasetBase

__all__ = ["JESTER_FLIP_PAIRS", "JesterBase", "JesterImporter"]

_FRAMES = "20bn-jester-v1"
_LABELS = "jester-v1-labels.csv"
_SUBSET_FILES = (("train", "jester-v1-train.csv"), ("validation", "jester-v1-validation.csv"))
_TEST_FILE = "jester-v1-test.csv"

JESTER_FLIP_PAIRS: list[tuple[str, str]] = [
    ("Swiping Left", "Swiping Right"),
    ("Sliding Two Fingers Left", "Sliding Two Fingers Right"),
    ("Turning Hand Clockwise", "Turning Hand Counterclockwise"),
]
"""Gestures that become each other when the video is mirrored left-right."""


class JesterBase(ActionDatasetBase):
    """Subsets ``train``, ``validation`` (labelled) and ``test`` (unlabelled); media are frame folders."""

    NAME = "jester"

    def __init__(self, path: str, *, ctx: ImportContext | None = None):
        super().__init__(path, ctx=ctx)
        self._set_classes(self._read_lines(os.path.join(path, _LABELS)))
        self._set_flip_pairs(JESTER_FLIP_PAIRS)
        for subset, name in _SUBSET_FILES:
            for line in self._read_lines(os.path.join(path, name)):
                video_id, separator, label = line.partition(";")
                if not separator:
                    self._report(video_id, subset, f"line {line!r} of {name} has no ';label'")
                    continue
                self._add_folder(video_id.strip(), subset, label.strip())
        test_list = os.path.join(path, _TEST_FILE)
        if os.path.isfile(test_list):
            for line in self._read_lines(test_list):
                self._add_folder(line.partition(";")[0].strip(), "test", None)

    def _add_folder(self, video_id: str, subset: str, label: str | None) -> None:
        media = os.path.join(self._root, _FRAMES, video_id)
        self._add(item_id=video_id, subset=subset, media_path=media, label=label)


class JesterImporter(Importer):
    """Finds ``jester-v1-labels.csv`` beside ``jester-v1-train.csv``."""

    NAME = "jester"

    @classmethod
    def detect(cls, context: FormatDetectionContext) -> FormatDetectionConfidence:
        context.require_file(_LABELS)
        context.require_file(_SUBSET_FILES[0][1])
        return FormatDetectionConfidence.MEDIUM

    @classmethod
    def find_sources(cls, path: str) -> list[dict]:
        if os.path.isfile(os.path.join(path, _LABELS)):
            return [{"url": path, "format": JesterBase.NAME}]
        return []

    @classmethod
    def get_file_extensions(cls) -> list[str]:
        return [".csv"]
