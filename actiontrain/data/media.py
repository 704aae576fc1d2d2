"""A Datumaro ``Video`` whose path is an fsspec URL: a video file or a folder of frames."""

from __future__ import annotations

import os
import posixpath

from datumaro.components.media import Video

from actiontrain import storage
from actiontrain.errors import DataError

__all__ = ["FRAME_EXTENSIONS", "VIDEO_EXTENSIONS", "VideoRef", "find_media", "is_frame_folder"]

VIDEO_EXTENSIONS = frozenset({".avi", ".mp4", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg"})
"""File suffixes read as video files; any other media URL is a folder of frame images."""
FRAME_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
"""Suffixes of the frame images in a frame folder (Jester, Something-Something frame dumps)."""


def is_frame_folder(url: str) -> bool:
    """True when ``url`` has no video suffix, so it names a folder of frame images (Jester's layout)."""
    name = posixpath.basename(url.rstrip("/"))
    return posixpath.splitext(name)[1].lower() not in VIDEO_EXTENSIONS


def find_media(url: str) -> list[str]:
    """The media ``url`` names: itself if it is a video file or a frame folder, else every video
    file and every subfolder (a frame folder) directly in the folder ``url``, sorted.

    Hidden entries (``.name``) are passed over; nothing deeper than one level is searched.

    Raises:
        NotFoundError: ``url`` is a folder that does not exist.
        DataError: a folder with neither frames, videos nor subfolders.
        StorageError: it cannot be listed.
    """
    if not is_frame_folder(url):
        return [url]
    entries = [(name, folder) for name, folder in storage.list_entries(url) if not name.startswith(".")]
    if any(not folder and posixpath.splitext(name)[1].lower() in FRAME_EXTENSIONS for name, folder in entries):
        return [url]
    found = [
        storage.join(url, name)
        for name, folder in entries
        if folder or posixpath.splitext(name)[1].lower() in VIDEO_EXTENSIONS
    ]
    if not found:
        raise DataError(
            f"{url} holds no video files ({', '.join(sorted(VIDEO_EXTENSIONS))}), frames or frame folders; "
            "pass videos, frame folders, or a folder of them"
        )
    return found


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
