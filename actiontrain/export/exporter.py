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
from actiontrain.export.store import publish
from actiontrain.metrics import to_jsonable
from actiontrain.recipe import config_to_dict

__all__ = ["EXPORT_DIR", "ExportResult", "export_model"]

logger = logging.getLogger(__name__)

EXPORT_DIR = "export"
"""Where a training run's export goes: ``OUTPUT/export/{model.xml, model.bin, manifest.json}``."""


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    """A written export."""

    url: str
    """The export folder."""
    manifest: Manifest
    parity: Parity


def export_model(
    model: nn.Module,
    *,
    classes: list[str],
    config: Config,
    output_url: str,
    precision: str = "fp32",
    metrics: Mapping[str, Any] | None = None,
    step: int | None = None,
    parity_clips: torch.Tensor | None = None,
) -> ExportResult:
    """Writes ``model`` as an OpenVINO export (``model.xml``, ``model.bin``, ``manifest.json``) to ``output_url``.

    The IR is written to a local temporary folder, read back and compiled, and its logits are
    compared with PyTorch's on the same clips; only an export within tolerance is uploaded, the
    manifest last (see :func:`~actiontrain.export.store.publish`). The caller's model is not
    modified (a CPU float32 copy is converted). Call it on one process only (rank 0).

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

    Returns:
        Where the export went, its manifest and the parity figures.

    Raises:
        ConfigError: a bad precision, or classes/clips that do not fit the model.
        ExportError: OpenVINO's logits differ from PyTorch's beyond the precision's tolerance.
        StorageError: ``output_url`` cannot be written.
    """
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
            raise ExportError(
                f"OpenVINO disagrees with PyTorch: {parity.describe()}; nothing was written to {output_url}"
            )
        manifest = new_manifest(
            precision=precision,
            classes=classes,
            recipe=config_to_dict(config),
            files={name: file_entry(Path(local, name)) for name in MODEL_FILES},
            step=step,
            metrics=to_jsonable(dict(metrics or {})),
            parity=parity.to_dict(),
        )
        url = publish(local, output_url, manifest)
    return ExportResult(url=url, manifest=manifest, parity=parity)
