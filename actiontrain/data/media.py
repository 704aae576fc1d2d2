"""A Datumaro ``Video`` whose path is an fsspec URL: a video file or a folder of frames."""

from __future__ import annotations

import os
import posixpath

from datumaro.components.media import Video

from actiontrain import storage

__all__ = ["FRAME_EXTENSIONS", "VIDEO_EXTENSIONS", "VideoRef", "is_frame_folder"]

VIDEO_EXTENSIONS = frozenset({".avi", ".mp4", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg"})
"""File suffixes read as video files; any other media URL is a folder of frame images."""
FRAME_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
"""Suffixes of the frame images in a frame folder (Jester, Something-Something frame dumps)."""


def is_frame_folder(url: str) -> bool:
    """True when ``url`` has no video suffix, so it names a folder of frame images (Jester's layout)."""
    name = posixpath.basename(url.rstrip("/"))
    return posixpath.splitext(name)[1].lower() not in VIDEO_EXTENSIONS


class VideoRef(Video):
    """Media of one dataset item, read lazily through fsspec; never decoded by Datumaro.

    Datumaro's exporters see an ordinary ``Video``; :meth:`save` copies the file (or the frame
    folder) from wherever it lives.
    """

    @property
    def is_frame_folder(self) -> bool:
        return is_frame_folder(self.path)

    @property
    def name(self) -> str:
        """The file or folder name of the media."""
        return posixpath.basename(self.path.rstrip("/"))

    def save(self, fp) -> None:
        if not isinstance(fp, str):
            raise TypeError("VideoRef.save() takes a destination path or URL")
        if self.is_frame_folder:
            for relative in storage.find(self.path):
                storage.copy(storage.join(self.path, relative), storage.join(fp, relative))
        elif os.path.abspath(fp) != os.path.abspath(self.path):
            storage.copy(self.path, fp)
