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
    """Kinetics-style CSV/JSON lists; videos found under ``<split>/`` at the dataset's real URL."""

    NAME = "kinetics"

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
            if extension.lstrip(".").lower() in VIDEO_EXTENSIONS:
                files[key] = os.path.join(subset_path, *name.split("/"))
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
