"""``actiontrain export`` and ``pull``: a checkpoint (or a run's newest) as an OpenVINO export, and back."""

from __future__ import annotations

import json
from typing import Any

from actiontrain import storage
from actiontrain.config import EXPORT_PRECISIONS
from actiontrain.errors import ConfigError, NotFoundError
from actiontrain.export.exporter import ExportResult, export_model
from actiontrain.export.manifest import Manifest
from actiontrain.export.store import pull as pull_export
from actiontrain.metrics import METRICS_FILENAME
from actiontrain.trained_model import TrainedModel

__all__ = ["export_checkpoint", "pull"]


def export_checkpoint(checkpoint_url: str, output_url: str, *, precision: str = "fp32") -> ExportResult:
    """Exports a checkpoint to OpenVINO IR with a parity check; the manifest is written last.

    The manifest records the checkpoint's step and, when the run's ``metrics.jsonl`` has one, the
    evaluation made at that step.

    Args:
        checkpoint_url: A ``checkpoints/step-N`` folder, or a training output URL.
        output_url: The export folder, any fsspec URL.
        precision: ``fp32`` or ``fp16``.

    Raises:
        NotFoundError: no committed checkpoint there.
        DataError: the checkpoint is corrupt.
        ConfigError, ExportError, StorageError: as :func:`~actiontrain.export.exporter.export_model`.
    """
    if precision not in EXPORT_PRECISIONS:  # before loading a checkpoint for nothing
        raise ConfigError(f"export precision must be one of {', '.join(EXPORT_PRECISIONS)}, got {precision!r}")
    trained = TrainedModel.load(checkpoint_url)
    return export_model(
        trained.build_model(),
        classes=trained.classes,
        config=trained.config,
        output_url=output_url,
        precision=precision,
        metrics=_eval_metrics(_run_url(checkpoint_url), trained.step),
        step=trained.step,
    )


def _run_url(checkpoint_url: str) -> str:
    url = checkpoint_url.rstrip("/")
    parts = url.rsplit("/", 2)
    if len(parts) == 3 and parts[1] == "checkpoints" and parts[2].startswith("step-"):
        return parts[0]
    return url


def _eval_metrics(run_url: str, step: int) -> dict[str, Any]:
    """The evaluation a run logged at ``step`` (its epoch-end evaluation), or nothing."""
    try:
        text = storage.read_text(storage.join(run_url, METRICS_FILENAME))
    except NotFoundError:
        return {}
    found: dict[str, Any] = {}
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
        if isinstance(record, dict) and record.get("kind") == "eval" and record.get("step") == step:
            found = {key: value for key, value in record.items() if key != "kind"}
    return found


def pull(url: str, directory: str) -> Manifest:
    """Downloads the export at ``url`` into ``directory``, checksums verified, the manifest written last."""
    return pull_export(url, directory)
