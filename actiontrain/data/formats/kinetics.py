"""Datumaro's ``kinetics`` layout, with media listed where they really are (local or remote).

Datumaro's own reader walks the local disk to match videos to ``youtube_id``; on a mirror of a
remote dataset the videos are not there, so this subclass lists them at the dataset's URL and
otherwise keeps Datumaro's parsing unchanged.
"""

from __future__ import annotations

import os

from datumaro.plugins.data_formats.kinetics import KineticsBase as _DatumaroKineticsBase
from datumaro.plugins.data_formats.kinetics import KineticsImporter as _DatumaroKineticsImporter
from datumaro.plugins.data_formats.video import VIDEO_EXTENSIONS

from actiontrain.data.source import DatasetSource

__all__ = ["KineticsBase", "KineticsImporter"]


class KineticsBase(_DatumaroKineticsBase):
    """Kinetics-style CSV/JSON lists; videos found under ``<split>/`` at the dataset's real URL.

    Videos are matched to ``youtube_id`` exactly, through an index of file names: either
    ``<id>.mp4`` or the downloaders' ``<id>_<start>_<end>.mp4``. (Datumaro scans every name for
    each item, which is quadratic and can pick a wrong video whose name contains the id.)
    """

    NAME = "kinetics"

    def _search_media_by_id(self, media_files: dict[str, str], item_id: str) -> str | None:
        return media_files.get(item_id)

    def _media_files(self, subset: str) -> dict[str, str]:
        if subset in self._subset_media_files:
            return self._subset_media_files[subset]
        subset_path = self._subset_path(subset)
        relative = os.path.relpath(subset_path, self._path)
        relative = "" if relative == "." else relative
        source = DatasetSource.for_local_root(self._path)
        files: dict[str, str] = {}
        for name in source.find(relative):
            key, extension = os.path.splitext(os.path.basename(name))
            if extension.lstrip(".").lower() not in VIDEO_EXTENSIONS:
                continue
            path = os.path.join(subset_path, *name.split("/"))
            files.setdefault(key, path)
            youtube_id, start, end = (key.rsplit("_", 2) + ["", ""])[:3]
            if start.isdigit() and end.isdigit():  # <youtube_id>_<start>_<end>, the downloaders' names
                files.setdefault(youtube_id, path)
        self._subset_media_files[subset] = files
        return files


class KineticsImporter(_DatumaroKineticsImporter):
    """Datumaro's detection (a CSV with ``youtube_id`` or a JSON with YouTube URLs)."""

    NAME = "kinetics"

    @classmethod
    def find_sources(cls, path: str) -> list[dict]:
        # Datumaro's version tests a generator for truth, so it "finds" a source in any folder.
        if any(name.lower().endswith((".csv", ".json")) for name in os.listdir(path)):
            return [{"url": path, "format": KineticsBase.NAME}]
        return []
