"""Exports in storage: published with the manifest last, pulled and opened only once their checksums match."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from actiontrain import storage
from actiontrain.errors import ConfigError, DataError, NotFoundError, StorageError
from actiontrain.export.manifest import (
    MANIFEST_FILE,
    MODEL_FILES,
    MODEL_XML,
    Manifest,
    verify_files,
)
from actiontrain.export.repository import all_versions, model_url, newest_version_url, version_url

__all__ = ["LocalExport", "local_export", "publish", "publish_version", "pull", "read_manifest"]

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


_MAX_VERSION_ATTEMPTS = 5


def publish_version(local_dir: str | Path, repository_url: str, name: str, manifest: Manifest) -> str:
    """Adds an export folder to a model server's repository as ``<repository>/<name>/<N>/``.

    ``N`` is one more than the highest numbered folder there, complete or not, so no version is
    ever overwritten (model servers do not notice a version's files changing; they load a new
    number). Locally the version is written in a hidden staging folder beside it and renamed into
    place, so it appears whole. On object storage nothing can appear whole: ``model.bin``,
    ``model.xml`` and the manifest are uploaded in that order, and readers of this package skip the
    folder until its manifest exists (:func:`~actiontrain.export.repository.complete_versions`).

    Args:
        local_dir: Folder with ``model.xml`` and ``model.bin`` matching ``manifest``.
        repository_url: The repository (a model server's ``--model_repository_path`` or the parent of
            its ``base_path``), any fsspec URL.
        name: The model's name: its folder, and the name the model server serves it under.
        manifest: The export's manifest.

    Returns:
        The new version's folder.

    Raises:
        ConfigError: ``name`` is not a valid model name.
        StorageError: the repository cannot be listed or written.
    """
    model_folder = model_url(repository_url, name)
    if not storage.is_local(model_folder):
        target = version_url(model_folder, _next_version(model_folder))
        return publish(local_dir, target, manifest)
    for _ in range(_MAX_VERSION_ATTEMPTS):
        target = version_url(model_folder, _next_version(model_folder))
        staging = storage.join(model_folder, f".staging-{uuid.uuid4().hex}")
        try:
            publish(local_dir, staging, manifest)
            if _rename_unless_taken(staging, target):
                logger.info("added version %s of model %s to %s", target.rsplit("/", 1)[-1], name, repository_url)
                return target
        finally:
            shutil.rmtree(storage.local_path(staging), ignore_errors=True)
        logger.info("version folder %s appeared meanwhile; taking the next number", target)
    raise StorageError(f"could not claim a new version folder under {model_folder}: other writers kept taking them")


def _rename_unless_taken(source: str, target: str) -> bool:
    """Renames a local folder; False when ``target`` exists (rename refuses a non-empty folder)."""
    try:
        os.rename(storage.local_path(source), storage.local_path(target))
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        with storage.storage_errors(target):
            raise
    return True


def _next_version(model_folder: str) -> int:
    versions = all_versions(model_folder)
    return versions[-1] + 1 if versions else 1


def _resolve(url: str) -> tuple[str, bytes]:
    """The export folder ``url`` names and its manifest's bytes.

    An export folder names itself; a model folder of a serving repository (numbered version
    folders below it) names its newest complete version.
    """
    manifest_url = storage.join(url, MANIFEST_FILE)
    try:
        return url, storage.read_bytes(manifest_url)
    except NotFoundError as error:
        newest = newest_version_url(url)
        if newest is None:
            raise NotFoundError(
                f"no export at {url}: {manifest_url} does not exist (not an export, or one still being written: "
                "the manifest is written last) and no numbered version folder below it has one; pass the folder "
                "that `actiontrain export` wrote, or a model folder of its --serving-repository"
            ) from error
    try:
        return newest, storage.read_bytes(storage.join(newest, MANIFEST_FILE))
    except NotFoundError as error:  # removed between the listing and the read
        raise NotFoundError(f"no export at {url}: version {newest} disappeared while being read; retry") from error


def read_manifest(url: str) -> Manifest:
    """The manifest of the export at ``url`` (its files are not checked; :func:`pull` does that).

    ``url`` may also be a model folder of a serving repository: its newest complete version is read.

    Raises:
        NotFoundError: no manifest there.
        DataError: the manifest is not valid.
        StorageError: the storage cannot be read.
    """
    url, data = _resolve(url.rstrip("/"))
    return Manifest.from_json(data, url=storage.join(url, MANIFEST_FILE))


def pull(url: str, directory: str | Path) -> Manifest:
    """Downloads the export at ``url`` into the local ``directory`` and verifies its checksums.

    Files are downloaded into a hidden staging folder inside ``directory`` and checked there;
    only then is any old manifest in ``directory`` deleted, the model files moved in and the
    manifest written last. A pull that fails or is interrupted leaves no manifest that vouches
    for files it did not check.

    ``url`` may also be a model folder of a serving repository: its newest complete version is pulled.

    Returns:
        The export's manifest.

    Raises:
        NotFoundError: no export at ``url`` (no manifest: nothing, or an export still being written).
        DataError: the manifest is invalid, or a file differs from it (changed or cut short).
        ConfigError: ``directory`` is not a local folder.
        StorageError: the storage cannot be read or ``directory`` written.
    """
    directory = Path(_local_folder(directory))
    url, manifest_bytes = _resolve(url.rstrip("/"))
    return _pull(url, directory, manifest_bytes)


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
    and the cached files still match it. A model folder of a serving repository stands for its
    newest complete version (the returned ``url`` names that version).

    Raises:
        NotFoundError: no export at ``url``.
        DataError: the manifest is invalid or a file does not match it.
        StorageError: the storage cannot be read.
    """
    url, manifest_bytes = _resolve(url.rstrip("/"))
    if storage.is_local(url):
        directory = Path(storage.url_to_fs(url)[1])
        manifest = Manifest.from_json(manifest_bytes, url=storage.join(url, MANIFEST_FILE))
        verify_files(directory, manifest)
        return LocalExport(directory=directory, manifest=manifest, url=url)
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
