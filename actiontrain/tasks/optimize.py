"""``actiontrain optimize``: INT8 post-training quantization of an export, calibrated on training views."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov

from actiontrain import storage
from actiontrain.config import check_positive
from actiontrain.data.catalog import load_dataset
from actiontrain.data.dataset import ClipDataset, build_clip_dataset
from actiontrain.data.eval_split import eval_split
from actiontrain.data.loader import ClipLoader
from actiontrain.errors import ConfigError
from actiontrain.export.convert import model_info, openvino_core
from actiontrain.export.manifest import MODEL_FILES, MODEL_XML, Manifest, file_entry
from actiontrain.export.quantize import nncf_version, quantize_model
from actiontrain.export.store import LocalExport, local_export, publish
from actiontrain.inference import Predictor
from actiontrain.metrics import to_jsonable
from actiontrain.tasks.evaluate import score_export

__all__ = ["QuantizeResult", "quantize_export"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class QuantizeResult:
    """A written INT8 export and how it compares with the model it came from."""

    url: str
    manifest: Manifest
    fp32_top1: float
    """Video-level top-1 of the FP32 export on the validation subset (NaN without labelled videos)."""
    int8_top1: float
    """The same for the INT8 model."""
    agreement: float
    """Fraction of validation videos whose predicted class is the same for both models."""
    num_changed: int
    """Validation videos whose predicted class the INT8 model changed."""
    num_videos: int
    """Labelled validation videos scored."""
    num_calibration_clips: int
    val_subset: str


class _CalibrationViews:
    """Evaluation views of training videos as NSCTHW arrays; iterable more than once.

    NNCF iterates its dataset once per statistics pass, so views are decoded on demand rather than
    held in memory (300 clips of X3D-S are 1.4 GB as float32).
    """

    def __init__(self, clips: ClipDataset, *, limit: int) -> None:
        # Shuffled so that a subset smaller than the dataset still covers every class.
        self._loader = ClipLoader(clips, batch_size=1, shuffle=True)
        self._limit = limit

    def __iter__(self) -> Iterator[np.ndarray]:
        self._loader.set_epoch(0)
        count = 0
        for batch in self._loader:
            if batch["video"] is None:
                continue
            for view in batch["video"][0]:
                if count == self._limit:
                    return
                count += 1
                yield view[None, None].numpy()


def quantize_export(
    model_url: str,
    data_url: str,
    output_url: str,
    *,
    format: str | None = None,
    split: int = 1,
    subset_size: int = 300,
    val_subset: str = "",
) -> QuantizeResult:
    """INT8 post-training quantization of an FP32 export.

    ``nncf.quantize`` calibrates on up to ``subset_size`` views of the recipe's training subset,
    sampled as in evaluation (no augmentation); the source and INT8 models are then scored on the
    validation subset (video-level top-1, softmax averaged over views, both computing in float32
    outside the quantized layers so that the difference is the quantization's alone). The INT8
    export gets the source's manifest with ``precision: int8`` and a ``quantization`` section
    holding both accuracies; it is uploaded like any export, manifest last.

    Args:
        model_url: The source export (local folder or URL; verified).
        data_url: The dataset the model was trained on (same classes).
        output_url: Where the INT8 export goes.
        format: Dataset layout, detected when None.
        split: Official split of UCF101/HMDB51.
        subset_size: Most calibration clips (views).
        val_subset: Subset to score; default the first of validation, val, test.

    Raises:
        ConfigError: the source is not an FP32 export, the dataset's classes differ, or a bad argument.
        NotFoundError: no export at ``model_url``, or no validation subset.
        DataError, StorageError: unreadable export or data.
    """
    check_positive("subset_size", subset_size)
    source = local_export(model_url)
    manifest = source.manifest
    if manifest.precision != "fp32":
        # INT8 is calibrated against the FP32 model's activations and scored against its accuracy.
        raise ConfigError(f"{model_url} has precision {manifest.precision}; optimize the fp32 export")
    config = manifest.config
    dataset = load_dataset(data_url, format=format, split=split)
    validation = eval_split(
        dataset,
        classes=manifest.classes,
        what="the export",
        config=config.data,
        subset=val_subset,
        batch_size=config.train.batch_size,
    )
    train = config.train.train_subset
    calibration_clips = build_clip_dataset(dataset, subset=train, config=config.data, train=False)
    views_per_video = config.data.num_eval_clips * config.data.num_eval_crops
    count = min(subset_size, len(calibration_clips) * views_per_video)
    if count < subset_size:
        logger.info("calibrating on all %d views of subset %r (fewer than --subset-size %d)", count, train, subset_size)
    quantized = quantize_model(
        openvino_core().read_model(str(source.model_xml)),
        _CalibrationViews(calibration_clips, limit=count),
        count=count,
        info=model_info(config=config, classes=manifest.classes),
    )

    with tempfile.TemporaryDirectory(prefix="actiontrain-int8-", dir=storage.cache_dir("tmp")) as local:
        ov.save_model(quantized, str(Path(local, MODEL_XML)), compress_to_fp16=False)
        # Scored before its manifest exists: the source's gives the recipe and classes it shares.
        int8 = LocalExport(directory=Path(local), manifest=manifest, url=output_url)
        source_result = score_export(Predictor(source, inference_precision="f32"), validation)
        int8_result = score_export(Predictor(int8, inference_precision="f32"), validation)
        common = source_result.predictions.keys() & int8_result.predictions.keys()
        changed = sum(source_result.predictions[i] != int8_result.predictions[i] for i in common)
        agreement = 1 - changed / len(common) if common else float("nan")
        quantization = {
            "method": "nncf.quantize (post-training, default preset)",
            "calibration_subset": train,
            "num_calibration_clips": count,
            "validation_subset": validation.subset,
            "num_videos": int8_result.num_videos,
            "fp32_top1": source_result.top1,
            "int8_top1": int8_result.top1,
            "prediction_agreement": agreement,
            "num_changed_predictions": changed,
            "source_files": {name: {"size": e.size, "sha256": e.sha256} for name, e in manifest.files.items()},
        }
        written = manifest.with_files(
            {name: file_entry(Path(local, name)) for name in MODEL_FILES},
            extra_versions={"nncf": nncf_version()},
            precision="int8",
            parity=None,
            # Checked at f32 only: predict and eval run INT8 exports' other layers in f32.
            default_parity=None,
            quantization=to_jsonable(quantization),
        )
        url = publish(local, output_url, written)
    logger.info(
        "INT8 top-1 %.1f%% vs %s %.1f%% on %d %s videos (%.0f%% same predictions)",
        100 * int8_result.top1,
        manifest.precision,
        100 * source_result.top1,
        int8_result.num_videos,
        validation.subset,
        100 * agreement,
    )
    return QuantizeResult(
        url=url,
        manifest=written,
        fp32_top1=source_result.top1,
        int8_top1=int8_result.top1,
        agreement=agreement,
        num_changed=changed,
        num_videos=int8_result.num_videos,
        num_calibration_clips=count,
        val_subset=validation.subset,
    )
