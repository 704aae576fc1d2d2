"""``actiontrain export`` and ``pull``: a checkpoint (or a run's newest) as an OpenVINO export, and back."""

from __future__ import annotations

import json
from typing import Any

from actiontrain import storage
from actiontrain.config import EXPORT_PRECISIONS
from actiontrain.errors import ConfigError, NotFoundError
from actiontrain.export.exporter import ExportResult, check_destination, export_model
from actiontrain.export.manifest import Manifest
from actiontrain.export.store import pull as pull_export
from actiontrain.metrics import METRICS_FILENAME
from actiontrain.trained_model import TrainedModel

__all__ = ["export_checkpoint", "pull"]


def export_checkpoint(
    checkpoint_url: str,
    output_url: str | None = None,
    *,
    precision: str = "fp32",
    serving_repository: str | None = None,
    name: str | None = None,
) -> ExportResult:
    """Exports a checkpoint to OpenVINO IR with a parity check; the manifest is written last.

    The manifest records the checkpoint's step and, when the run's ``metrics.jsonl`` has one, the
    evaluation made at that step.

    Args:
        checkpoint_url: A ``checkpoints/step-N`` folder, or a training output URL.
        output_url: The export folder, any fsspec URL.
        precision: ``fp32`` or ``fp16``.
        serving_repository: Also (or, without ``output_url``, only) add the export to this model
            server repository as ``<serving_repository>/<name>/<N>/``, ``N`` the next version.
        name: The model's name in ``serving_repository``.

    Raises:
        NotFoundError: no committed checkpoint there.
        DataError: the checkpoint is corrupt.
        ConfigError, ExportError, StorageError: as :func:`~actiontrain.export.exporter.export_model`.
    """
    # Before loading a checkpoint for nothing.
    if precision not in EXPORT_PRECISIONS:
        raise ConfigError(f"export precision must be one of {', '.join(EXPORT_PRECISIONS)}, got {precision!r}")
    check_destination(output_url, serving_repository=serving_repository, name=name)
    trained = TrainedModel.load(checkpoint_url)
    return export_model(
        trained.build_model(),
        classes=trained.classes,
        config=trained.config,
        output_url=output_url,
        precision=precision,
        metrics=_eval_metrics(_run_url(checkpoint_url), trained.step),
        step=trained.step,
        serving_repository=serving_repository,
        name=name,
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
    """Downloads the export at ``url`` into ``directory``, checksums verified, the manifest written last.

    ``url`` may be a model folder of a serving repository: its newest complete version is pulled.
    """
    return pull_export(url, directory)
