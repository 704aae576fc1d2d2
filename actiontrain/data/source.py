"""A dataset's root URL and the local folder Datumaro parses: its annotations, media left remote.

Datumaro reads local paths only. For a remote dataset we fetch its small annotation files into a
content-addressed cache folder (a *mirror*) and leave every video where it is; importers then
resolve media paths inside the mirror and :meth:`DatasetSource.to_url` turns them back into URLs
that the data loader reads lazily through fsspec. A local dataset is its own mirror.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from actiontrain import storage
from actiontrain.errors import StorageError

__all__ = ["ANNOTATION_DIRS", "ANNOTATION_SUFFIXES", "DatasetSource"]

# Folders (directly under the dataset root) whose files are annotations in the supported layouts:
# UCF101's split lists, HMDB51's split files, Datumaro's own annotations.
ANNOTATION_DIRS = ("ucfTrainTestlist", "testTrainMulti_7030_splits", "annotations")
# Files with these suffixes directly under the root are annotations too (Jester, Kinetics CSV/JSON).
ANNOTATION_SUFFIXES = (".txt", ".csv", ".json")
_MARKER = ".actiontrain-source"  # no .json suffix: Kinetics reads every JSON at the root
_MAX_ANNOTATION_BYTES = 512 << 20  # a guard against mistaking a data dump for an annotation file


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset lives (``url``) and the local folder that stands for it (``local_root``)."""

    url: str
    """The dataset root as the user gave it (any fsspec URL)."""
    local_root: str
    """A local folder with the same relative layout: the dataset itself, or a mirror of its annotations."""

    @property
    def is_mirror(self) -> bool:
        """True when media are not in ``local_root`` but at ``url``."""
        return self.url != self.local_root

    @classmethod
    def open(cls, url: str) -> DatasetSource:
        """Opens a dataset root; remote annotations are fetched into the local cache.

        Raises:
            StorageError: the URL does not exist, is not a folder, or cannot be read.
        """
        url = url.rstrip("/") or "/"
        if storage.is_local(url):
            path = storage.local_path(url)
            if not os.path.isdir(path):
                what = "is a file" if os.path.exists(path) else "does not exist"
                raise StorageError(f"dataset folder {url} {what}; pass the folder that holds the dataset")
            return cls(url=path, local_root=path)
        return cls(url=url, local_root=_mirror(url))

    @classmethod
    def for_local_root(cls, local_root: str) -> DatasetSource:
        """The source a folder stands for: its marker's URL when it is a mirror, else itself."""
        marker = os.path.join(local_root, _MARKER)
        if os.path.isfile(marker):
            with open(marker, encoding="utf-8") as file:
                return cls(url=json.load(file)["url"], local_root=local_root)
        return cls(url=local_root, local_root=local_root)

    def to_url(self, local_path: str) -> str:
        """The URL of a path inside ``local_root`` (media paths Datumaro resolved in the mirror)."""
        relative = os.path.relpath(os.path.abspath(local_path), os.path.abspath(self.local_root))
        if relative == "." or relative.startswith(".."):
            if not self.is_mirror:
                return local_path
            raise ValueError(f"{local_path} is outside the dataset folder {self.local_root}")
        if not self.is_mirror:
            return os.path.join(self.url, relative)
        return storage.join(self.url, *relative.split(os.sep))

    def find(self, relative: str = "") -> list[str]:
        """Files below ``relative`` at the real location (remote listing for mirrors), relative to it."""
        url = storage.join(self.url, relative) if relative else self.url
        if not storage.exists(url):
            return []
        return storage.find(url)


def _mirror(url: str) -> str:
    entries = storage.list_entries(url)  # also raises a clear error for a missing bucket or prefix
    wanted = [name for name, is_folder in entries if not is_folder and name.lower().endswith(ANNOTATION_SUFFIXES)]
    folders: list[str] = []
    for name, is_folder in entries:
        if is_folder and name in ANNOTATION_DIRS:
            wanted.extend(f"{name}/{entry}" for entry in storage.find(storage.join(url, name), maxdepth=1))
        elif is_folder:
            folders.append(name)
    if not wanted:
        raise StorageError(
            f"no annotation files found at {url}; expected e.g. ucfTrainTestlist/, "
            "testTrainMulti_7030_splits/, annotations/, or CSV/JSON lists at the dataset root"
        )

    def fetch(relative: str) -> tuple[str, bytes]:
        data = storage.read_bytes(storage.join(url, relative))
        if len(data) > _MAX_ANNOTATION_BYTES:
            raise StorageError(f"{storage.join(url, relative)} is too large for an annotation file")
        return relative, data

    with ThreadPoolExecutor(max_workers=16) as pool:
        files = sorted(pool.map(fetch, wanted))

    digest = hashlib.sha256(url.encode())
    for relative, data in files:
        digest.update(relative.encode() + b"\0" + hashlib.sha256(data).digest())
    for name in folders:
        digest.update(b"dir\0" + name.encode())
    base = storage.cache_dir("datasets", hashlib.sha256(url.encode()).hexdigest()[:16])
    final = base / digest.hexdigest()[:16]
    if final.is_dir():
        return str(final)
    # Build in a private folder, then rename: ranks fetching at once never see a half-built mirror.
    staging = base / f".staging-{uuid.uuid4().hex}"
    for relative, data in files:
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    # Empty stand-ins for media folders: importers check that they exist.
    for name in folders:
        (staging / name).mkdir(parents=True, exist_ok=True)
    (staging / _MARKER).write_text(json.dumps({"url": url}), encoding="utf-8")
    try:
        os.rename(staging, final)
    except OSError:  # another process finished the same mirror first
        shutil.rmtree(staging, ignore_errors=True)
    return str(Path(final))
