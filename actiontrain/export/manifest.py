"""An export's manifest: what a reader needs to use the model, and the checksums that make the export whole."""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import openvino
import torch

import actiontrain
from actiontrain.config import EXPORT_PRECISIONS, Config
from actiontrain.errors import ConfigError, DataError
from actiontrain.recipe import config_from_dict

__all__ = [
    "EXPORT_PRECISIONS",
    "MANIFEST_FILE",
    "MODEL_BIN",
    "MODEL_FILES",
    "MODEL_XML",
    "PRECISIONS",
    "FileEntry",
    "Manifest",
    "file_entry",
    "input_shape",
    "new_manifest",
    "verify_files",
]

MANIFEST_FILE = "manifest.json"
"""Written last: without it (or with checksums that do not match) there is no export."""
MODEL_XML = "model.xml"
"""The OpenVINO IR's graph."""
MODEL_BIN = "model.bin"
"""The OpenVINO IR's weights."""
MODEL_FILES = (MODEL_BIN, MODEL_XML)
"""The files a manifest covers, in upload order (the manifest follows them)."""
PRECISIONS = (*EXPORT_PRECISIONS, "int8")
"""Weight precisions an export may have (``int8`` comes from ``actiontrain optimize``)."""

_FORMAT = "actiontrain-openvino-export"
_FORMAT_VERSION = 1
_CHUNK = 8 << 20


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    """Size and SHA-256 of one file of an export."""

    size: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """``manifest.json`` of an export folder (``model.xml``, ``model.bin``, ``manifest.json``).

    The recipe is the authority for everything derived from it (sampling, crop, normalisation);
    ``input`` repeats what a reader outside this project needs to feed the model.
    """

    precision: str
    """Weights: ``fp32``, ``fp16`` or ``int8``."""
    classes: list[str]
    """Class names in output order."""
    recipe: dict[str, Any]
    """The resolved training configuration (``config_to_dict``)."""
    files: dict[str, FileEntry]
    """Size and SHA-256 of ``model.xml`` and ``model.bin``."""
    step: int | None = None
    """Training step of the exported weights, when known."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Evaluation of the PyTorch model at export time (``top1``, ``top5``, ``num_videos``...)."""
    parity: dict[str, Any] | None = None
    """PyTorch vs OpenVINO logits at export time, OpenVINO computing in f32 (see
    :class:`~actiontrain.export.convert.Parity`): the check every export must pass."""
    default_precision: str | None = None
    """OpenVINO's default CPU inference precision where the export was made (``f32``, ``bf16``,
    ``f16``); None in exports made before it was recorded."""
    default_parity: dict[str, Any] | None = None
    """The parity check again at ``default_precision`` when that is not f32 (then ``parity`` covers
    both). Readers use the default precision only where this passed, and only on CPUs whose
    default is the same."""
    quantization: dict[str, Any] | None = None
    """INT8 only: calibration and the top-1 of the FP32 and INT8 models on the validation subset."""
    created: str = ""
    """UTC time the export was written (ISO 8601)."""
    versions: dict[str, str] = field(default_factory=dict)
    """Versions of actiontrain, OpenVINO, PyTorch (and NNCF for INT8) that wrote it."""

    @property
    def config(self) -> Config:
        """The recipe as a :class:`Config` (clip length, crop, sampling and normalisation of the input)."""
        return config_from_dict(self.recipe)

    @property
    def input_shape(self) -> tuple[int, int, int, int, int, int]:
        """The IR's input, NSCTHW (see :func:`input_shape`)."""
        return input_shape(self.config)

    def to_json(self) -> bytes:
        config = self.config
        data = config.data
        document = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "model_type": "Action Classification",
            "precision": self.precision,
            "classes": list(self.classes),
            "input": {
                "name": "clip",
                "layout": "NSCTHW",
                "shape": list(input_shape(config)),
                "dtype": "f32",
                # What the caller feeds: the IR holds no normalisation (Model API applies mean/scale
                # from rt_info itself, as OpenVINO Training Extensions' video models expect).
                "color": "RGB",
                "normalization": {"mean": list(data.mean), "std": list(data.std), "scale": "x / 255"},
            },
            "output": {"name": "logits", "shape": [1, len(self.classes)]},
            "files": {name: {"size": entry.size, "sha256": entry.sha256} for name, entry in self.files.items()},
            "step": self.step,
            "metrics": self.metrics,
            "parity": self.parity,
            "default_precision": self.default_precision,
            "default_parity": self.default_parity,
            "quantization": self.quantization,
            "recipe": self.recipe,
            "created": self.created,
            "versions": self.versions,
        }
        return (json.dumps(document, indent=2, allow_nan=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, *, url: str) -> Manifest:
        """Parses and checks a manifest read from ``url``.

        Raises:
            DataError: not JSON, another format, missing fields, or a recipe this version cannot read.
        """
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"{url} is not a valid manifest: not JSON ({error})") from error
        if not isinstance(document, Mapping) or document.get("format") != _FORMAT:
            raise DataError(f"{url} is not an actiontrain export manifest (no \"format\": \"{_FORMAT}\")")
        if document.get("format_version") != _FORMAT_VERSION:
            raise DataError(
                f"{url} has manifest format_version {document.get('format_version')!r}; this actiontrain reads "
                f"version {_FORMAT_VERSION}: upgrade actiontrain or export again"
            )
        try:
            files = {
                str(name): FileEntry(size=int(entry["size"]), sha256=str(entry["sha256"]))
                for name, entry in document["files"].items()
            }
            manifest = cls(
                precision=str(document["precision"]),
                classes=[str(name) for name in document["classes"]],
                recipe=dict(document["recipe"]),
                files=files,
                step=document.get("step"),
                metrics=dict(document.get("metrics") or {}),
                parity=document.get("parity"),
                default_precision=document.get("default_precision"),
                default_parity=document.get("default_parity"),
                quantization=document.get("quantization"),
                created=str(document.get("created", "")),
                versions=dict(document.get("versions") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise DataError(f"{url} is not a valid manifest: {type(error).__name__}: {error}") from error
        missing = [name for name in MODEL_FILES if name not in files]
        if missing or manifest.precision not in PRECISIONS or not manifest.classes:
            problem = f"no checksum for {', '.join(missing)}" if missing else f"precision {manifest.precision!r}"
            problem = problem if manifest.classes else "no classes"
            raise DataError(f"{url} is not a valid manifest: {problem}")
        try:
            config = manifest.config
        except ConfigError as error:
            raise DataError(f"{url} holds a recipe this version cannot read: {error}") from error
        shape = (document.get("input") or {}).get("shape")
        if shape is not None and list(shape) != list(input_shape(config)):
            raise DataError(f"{url} is inconsistent: input shape {shape} but its recipe gives {list(input_shape(config))}")
        return manifest

    def with_files(
        self, files: Mapping[str, FileEntry], *, extra_versions: Mapping[str, str] | None = None, **changes: Any
    ) -> Manifest:
        """A copy with new checksums (and other fields changed), stamped with the current time and versions."""
        versions = {**self.versions, **_versions(), **(extra_versions or {})}
        return replace(self, files=dict(files), created=_now(), versions=versions, **changes)


def input_shape(config: Config) -> tuple[int, int, int, int, int, int]:
    """The model's input, NSCTHW: one video (N), one view (S), RGB, ``clip_len`` frames, the crop."""
    data = config.data
    return (1, 1, 3, data.clip_len, data.crop_size, data.crop_size)


def file_entry(path: str | Path) -> FileEntry:
    """Size and SHA-256 of a local file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileEntry(size=size, sha256=digest.hexdigest())


def verify_files(directory: str | Path, manifest: Manifest, *, where: str | None = None) -> None:
    """Checks every file the manifest covers against its size and SHA-256.

    Args:
        directory: Local folder holding the files.
        manifest: The manifest they must match.
        where: How to name the export in messages (default: the folder).

    Raises:
        DataError: a file is missing or differs from the manifest.
    """
    where = where or str(directory)
    for name in MODEL_FILES:
        expected = manifest.files[name]
        path = Path(directory, name)
        if not path.is_file():
            raise DataError(f"export {where} is incomplete: {name} is missing; export or pull it again")
        actual = file_entry(path)
        if actual != expected:
            raise DataError(
                f"export {where} is corrupt: {name} has {actual.size} bytes with sha256 {actual.sha256[:12]}..., "
                f"its manifest says {expected.size} bytes, {expected.sha256[:12]}...; export or pull it again"
            )


def new_manifest(
    *,
    precision: str,
    classes: list[str],
    recipe: dict[str, Any],
    files: Mapping[str, FileEntry],
    step: int | None,
    metrics: dict[str, Any],
    parity: dict[str, Any] | None,
    default_precision: str | None = None,
    default_parity: dict[str, Any] | None = None,
) -> Manifest:
    """A manifest stamped with the current time and versions."""
    return Manifest(
        precision=precision,
        classes=list(classes),
        recipe=recipe,
        files=dict(files),
        step=step,
        metrics=metrics,
        parity=parity,
        default_precision=default_precision,
        default_parity=default_parity,
        created=_now(),
        versions=_versions(),
    )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    return {"actiontrain": actiontrain.__version__, "openvino": openvino.get_version(), "torch": torch.__version__}
