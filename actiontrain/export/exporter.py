"""Exporting a model: OpenVINO IR, parity check, manifest, upload with the manifest last."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openvino as ov
import torch
from torch import nn

from actiontrain import storage
from actiontrain.config import Config
from actiontrain.errors import ConfigError, ExportError
from actiontrain.export.convert import (
    Parity,
    check_parity,
    compile_model,
    convert_to_openvino,
    default_inference_precision,
    synthetic_clips,
)
from actiontrain.export.manifest import (
    EXPORT_PRECISIONS,
    MODEL_FILES,
    MODEL_XML,
    Manifest,
    file_entry,
    new_manifest,
)
from actiontrain.export.repository import check_model_name
from actiontrain.export.store import publish, publish_version
from actiontrain.metrics import to_jsonable
from actiontrain.recipe import config_to_dict

__all__ = ["EXPORT_DIR", "ExportResult", "check_destination", "export_model"]

logger = logging.getLogger(__name__)

EXPORT_DIR = "export"
"""Where a training run's export goes: ``OUTPUT/export/{model.xml, model.bin, manifest.json}``."""


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    """A written export."""

    url: str
    """The export folder (the new version's folder when only a serving repository was written)."""
    manifest: Manifest
    parity: Parity
    """OpenVINO computing in f32 against PyTorch: the check that lets the export be written."""
    default_parity: Parity | None = None
    """The same check at OpenVINO's default CPU precision, when that is not f32."""
    serving_url: str | None = None
    """The version folder written in the serving repository, if one was asked for."""

    def describe_precisions(self) -> str:
        """What was checked at which inference precision, for a person."""
        if self.default_parity is None:
            return f"{self.parity.describe()}; f32 is OpenVINO's default CPU precision here, so it was checked once"
        verdict = "usable" if self.default_parity.passed else "not usable: predict and eval will compute in f32"
        return f"{self.parity.describe()}; at the CPU's default {self.default_parity.describe()} ({verdict})"


def check_destination(output_url: str | None, *, serving_repository: str | None, name: str | None) -> None:
    """Refuses an export with nowhere to go, or a serving repository without a valid model name.

    Raises:
        ConfigError: naming the missing or bad argument.
    """
    if output_url is None and serving_repository is None:
        raise ConfigError(
            "an export needs an output folder (--output), a serving repository and a model name "
            "(--serving-repository, --name), or both"
        )
    if (serving_repository is None) != (name is None):
        raise ConfigError(
            "a serving repository and a model name go together, e.g. --serving-repository s3://bucket/models --name x3d"
        )
    if name is not None:
        check_model_name(name)


def export_model(
    model: nn.Module,
    *,
    classes: list[str],
    config: Config,
    output_url: str | None = None,
    precision: str = "fp32",
    metrics: Mapping[str, Any] | None = None,
    step: int | None = None,
    parity_clips: torch.Tensor | None = None,
    serving_repository: str | None = None,
    name: str | None = None,
) -> ExportResult:
    """Writes ``model`` as an OpenVINO export (``model.xml``, ``model.bin``, ``manifest.json``) to ``output_url``.

    The IR is written to a local temporary folder, read back and compiled, and its logits are
    compared with PyTorch's on the same clips, OpenVINO computing in f32; only an export within
    tolerance is uploaded, the manifest last (see :func:`~actiontrain.export.store.publish`).
    Where OpenVINO's default CPU precision is not f32 (bf16 or f16 on CPUs that have them) the
    check runs again at that precision and is recorded beside the f32 one; it decides whether
    ``predict`` and ``eval`` may use the faster precision, never whether the export is written.
    The caller's model is not modified (a CPU float32 copy is converted). Call it on one
    process only (rank 0).

    Args:
        model: The trained classifier: ``(N, 3, T, H, W)`` clips to ``(N, K)`` logits (DDP or
            ``torch.compile`` wrappers are unwrapped).
        classes: Class names in output order.
        config: The recipe it was trained with; sets the input shape, sampling and normalisation.
        output_url: The export folder, any fsspec URL (a training run uses ``OUTPUT/export``).
        precision: ``fp32``, or ``fp16`` to store the weights in half precision (half the size).
        metrics: Evaluation results to record (``top1``, ``top5``...); NaN becomes null.
        step: The training step of the weights.
        parity_clips: ``(N, 3, T, H, W)`` normalised clips for the parity check, e.g. a few
            validation clips; by default four reproducible synthetic clips.
        serving_repository: Also (or, without ``output_url``, only) add the export to this model
            server repository as ``<serving_repository>/<name>/<N>/``, ``N`` the next version
            (see :func:`~actiontrain.export.store.publish_version`).
        name: The model's name in ``serving_repository``.

    Returns:
        Where the export went, its manifest and the parity figures.

    Raises:
        ConfigError: a bad precision or model name, no destination, or classes/clips that do not
            fit the model.
        ExportError: OpenVINO's logits differ from PyTorch's beyond the precision's tolerance.
        StorageError: a destination cannot be written.
    """
    check_destination(output_url, serving_repository=serving_repository, name=name)
    if precision not in EXPORT_PRECISIONS:
        raise ConfigError(
            f"export precision must be one of {', '.join(EXPORT_PRECISIONS)}, got {precision!r} "
            "(INT8 comes from `actiontrain optimize` on an FP32 export)"
        )
    classes = [str(name) for name in classes]
    if not classes:
        raise ConfigError("cannot export a model without classes")
    clips = parity_clips if parity_clips is not None else synthetic_clips(config)
    with tempfile.TemporaryDirectory(prefix="actiontrain-export-", dir=storage.cache_dir("tmp")) as local:
        xml = Path(local, MODEL_XML)
        converted = convert_to_openvino(model, config=config, classes=classes)
        outputs = converted.output(0).get_partial_shape()
        if outputs.is_static and outputs[1].get_length() != len(classes):
            raise ConfigError(
                f"the model has {outputs[1].get_length()} outputs but {len(classes)} classes were given"
            )
        ov.save_model(converted, str(xml), compress_to_fp16=precision == "fp16")
        # Checked on the files as written, not on the in-memory model: that is what ships.
        parity = check_parity(model, compile_model(xml), clips, precision=precision)
        logger.info("%s", parity.describe())
        if not parity.passed:
            destination = output_url or serving_repository
            raise ExportError(
                f"OpenVINO disagrees with PyTorch: {parity.describe()}; nothing was written to {destination}"
            )
        default_precision = default_inference_precision("CPU")
        default_parity = None
        if default_precision == "f32":
            logger.info("OpenVINO's default CPU inference precision here is f32: the f32 parity covers it")
        else:
            default_parity = check_parity(model, compile_model(xml, inference_precision=None), clips, precision=precision)
            logger.info("at the CPU's default precision: %s (%s)", default_parity.describe(),
                        "passed" if default_parity.passed else "failed: f32 will be used")
        manifest = new_manifest(
            precision=precision,
            classes=classes,
            recipe=config_to_dict(config),
            files={file: file_entry(Path(local, file)) for file in MODEL_FILES},
            step=step,
            metrics=to_jsonable(dict(metrics or {})),
            parity=parity.to_dict(),
            default_precision=default_precision,
            default_parity=None if default_parity is None else default_parity.to_dict(),
        )
        url = publish(local, output_url, manifest) if output_url is not None else None
        serving_url = None
        if serving_repository is not None:
            serving_url = publish_version(local, serving_repository, name, manifest)
    return ExportResult(
        url=url or serving_url, manifest=manifest, parity=parity, default_parity=default_parity, serving_url=serving_url
    )
