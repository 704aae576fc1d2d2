"""Exports in storage: published with the manifest last, pulled and opened only once their checksums match."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from actiontrain import storage
from actiontrain.errors import ConfigError, DataError, NotFoundError
from actiontrain.export.manifest import (
    MANIFEST_FILE,
    MODEL_FILES,
    MODEL_XML,
    Manifest,
    verify_files,
)

__all__ = ["LocalExport", "local_export", "publish", "pull", "read_manifest"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class LocalExport:
    """A verified export in a local folder."""

    directory: Path
    """Holds ``model.xml``, ``model.bin`` and ``manifest.json``."""
    manifest: Manifest
    url: str
    """Where it came from (the folder itself for local exports)."""

    @property
    def model_xml(self) -> Path:
        return self.directory / MODEL_XML


def publish(local_dir: str | Path, output_url: str, manifest: Manifest) -> str:
    """Uploads an export folder to ``output_url`` so that no reader ever takes a partial one for whole.

    The destination's old manifest is deleted first (an old manifest next to new weights would
    fail its checksums, but a reader should not even try), then ``model.bin`` and ``model.xml``
    are written, each atomically, and the new manifest last: it is what makes the export exist.

    Args:
        local_dir: Folder with ``model.xml`` and ``model.bin`` matching ``manifest``.
        output_url: Destination folder, any fsspec URL.
        manifest: The export's manifest.

    Returns:
        ``output_url`` without a trailing slash.

    Raises:
        StorageError: the destination cannot be written.
    """
    output_url = output_url.rstrip("/")
    storage.remove(storage.join(output_url, MANIFEST_FILE))
    for name in MODEL_FILES:
        storage.copy(str(Path(local_dir, name)), storage.join(output_url, name))
    storage.write_bytes(storage.join(output_url, MANIFEST_FILE), manifest.to_json())
    logger.info("wrote %s export to %s", manifest.precision, output_url)
    return output_url


def _manifest_bytes(url: str) -> bytes:
    manifest_url = storage.join(url, MANIFEST_FILE)
    try:
        return storage.read_bytes(manifest_url)
    except NotFoundError as error:
        raise NotFoundError(
            f"no export at {url}: {manifest_url} does not exist (not an export, or one still being written: "
            "the manifest is written last); pass the folder that `actiontrain export` wrote"
        ) from error


def read_manifest(url: str) -> Manifest:
    """The manifest of the export at ``url`` (its files are not checked; :func:`pull` does that).

    Raises:
        NotFoundError: no manifest there.
        DataError: the manifest is not valid.
        StorageError: the storage cannot be read.
    """
    return Manifest.from_json(_manifest_bytes(url), url=storage.join(url, MANIFEST_FILE))


def pull(url: str, directory: str | Path) -> Manifest:
    """Downloads the export at ``url`` into the local ``directory`` and verifies its checksums.

    Files are downloaded into a hidden staging folder inside ``directory`` and checked there;
    only then is any old manifest in ``directory`` deleted, the model files moved in and the
    manifest written last. A pull that fails or is interrupted leaves no manifest that vouches
    for files it did not check.

    Returns:
        The export's manifest.

    Raises:
        NotFoundError: no export at ``url`` (no manifest: nothing, or an export still being written).
        DataError: the manifest is invalid, or a file differs from it (changed or cut short).
        ConfigError: ``directory`` is not a local folder.
        StorageError: the storage cannot be read or ``directory`` written.
    """
    url = url.rstrip("/")
    return _pull(url, Path(_local_folder(directory)), _manifest_bytes(url))


def _local_folder(directory: str | Path) -> str:
    directory = str(directory)
    # Decided from the URL alone: a remote destination is a usage mistake, whatever the credentials.
    if "::" in directory or ("://" in directory and not directory.startswith("file://")):
        raise ConfigError(f"pull writes to a local folder, got {directory!r}; use a path such as ./model")
    return directory.removeprefix("file://")


def _pull(url: str, directory: Path, manifest_bytes: bytes) -> Manifest:
    manifest = Manifest.from_json(manifest_bytes, url=storage.join(url, MANIFEST_FILE))
    with storage.storage_errors(str(directory)):
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".pull-", dir=directory))
    try:
        for name in MODEL_FILES:
            try:
                storage.copy(storage.join(url, name), str(staging / name))
            except NotFoundError as error:
                raise DataError(
                    f"export {url} is incomplete: its manifest names {name}, which is missing; export it again"
                ) from error
        try:
            verify_files(staging, manifest, where=url)
        except DataError as error:
            raise DataError(f"{error} (or it changed while being pulled: retry)") from error
        with storage.storage_errors(str(directory)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / MANIFEST_FILE)
            for name in MODEL_FILES:
                os.replace(staging / name, directory / name)
            (staging / MANIFEST_FILE).write_bytes(manifest_bytes)
            os.replace(staging / MANIFEST_FILE, directory / MANIFEST_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("pulled %s export %s to %s (checksums verified)", manifest.precision, url, directory)
    return manifest


def local_export(url: str) -> LocalExport:
    """The export at ``url`` as a verified local folder.

    A local folder is verified in place. A remote export is pulled into the cache
    (``actiontrain/exports/<hash of the URL>``) and reused while its remote manifest is unchanged
    and the cached files still match it.

    Raises:
        NotFoundError: no export at ``url``.
        DataError: the manifest is invalid or a file does not match it.
        StorageError: the storage cannot be read.
    """
    url = url.rstrip("/")
    if storage.is_local(url):
        directory = Path(storage.url_to_fs(url)[1])
        manifest = read_manifest(str(directory))
        verify_files(directory, manifest)
        return LocalExport(directory=directory, manifest=manifest, url=url)
    manifest_bytes = _manifest_bytes(url)
    directory = storage.cache_dir("exports", hashlib.sha256(url.encode()).hexdigest()[:16])
    cached = directory / MANIFEST_FILE
    if cached.is_file() and cached.read_bytes() == manifest_bytes:
        manifest = Manifest.from_json(manifest_bytes, url=storage.join(url, MANIFEST_FILE))
        try:
            verify_files(directory, manifest)
            logger.info("using cached export %s from %s", url, directory)
            return LocalExport(directory=directory, manifest=manifest, url=url)
        except DataError as error:
            logger.warning("cached copy of %s is damaged (%s); pulling it again", url, error)
    manifest = _pull(url, directory, manifest_bytes)
    return LocalExport(directory=directory, manifest=manifest, url=url)
