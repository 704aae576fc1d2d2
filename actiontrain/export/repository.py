"""A model server's repository: ``<repository>/<name>/<version>/`` export folders, as OVMS and KServe read them.

OpenVINO Model Server serves ``<base_path>/<N>/`` folders whose names are positive integers and
switches to the highest one; KServe's storage initializer copies a model folder with its numbered
subfolders to ``/mnt/models`` for it. An actiontrain export in such a folder keeps its manifest,
and the rule of every export holds there too: a version counts only once its manifest exists
(:func:`complete_versions`, the one place that decides it).
"""

from __future__ import annotations

import re

from actiontrain import storage
from actiontrain.errors import ConfigError, NotFoundError
from actiontrain.export.manifest import MANIFEST_FILE

__all__ = [
    "all_versions",
    "check_model_name",
    "complete_versions",
    "model_url",
    "newest_version_url",
    "version_url",
]

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_VERSION = re.compile(r"[1-9][0-9]*")


def check_model_name(name: str) -> str:
    """``name`` when it can name a model folder (and the model OVMS serves), else a one-line error.

    Raises:
        ConfigError: not 1-63 letters, digits, '.', '_' or '-' starting with a letter or digit.
    """
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise ConfigError(
            f"model name {name!r} must be 1-63 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (it becomes a folder and the model server's model name), e.g. --name x3d-ucf101"
        )
    return name


def model_url(repository_url: str, name: str) -> str:
    """The folder of model ``name`` in the repository at ``repository_url``."""
    return storage.join(repository_url.rstrip("/"), check_model_name(name))


def version_url(model_folder: str, version: int) -> str:
    """The folder of one version of a model."""
    return storage.join(model_folder.rstrip("/"), str(version))


def _version_files(model_folder: str) -> dict[int, set[str]]:
    """Numbered subfolders of ``model_folder`` and the files directly in each; one listing."""
    try:
        paths = storage.find(model_folder.rstrip("/"), maxdepth=2)
    except NotFoundError:
        return {}
    found: dict[int, set[str]] = {}
    for path in paths:
        parts = path.split("/")
        if len(parts) == 2 and _VERSION.fullmatch(parts[0]):
            found.setdefault(int(parts[0]), set()).add(parts[1])
    return found


def complete_versions(model_folder: str) -> list[int]:
    """The versions of a model that exist, oldest first: numbered folders holding a manifest.

    The manifest is written last (and, in a local repository, the folder appears whole), so a
    version being written, or one whose upload broke off, is never listed.
    """
    return sorted(version for version, names in _version_files(model_folder).items() if MANIFEST_FILE in names)


def all_versions(model_folder: str) -> list[int]:
    """Every numbered folder of a model, complete or not: a new version must not reuse any of them."""
    return sorted(_version_files(model_folder))


def newest_version_url(model_folder: str) -> str | None:
    """The newest complete version's folder under ``model_folder``, or None when it has none."""
    versions = complete_versions(model_folder)
    return version_url(model_folder, versions[-1]) if versions else None
