"""FP32, FP16 and INT8 of one trained model on held-apart validation videos, through ``eval`` and ``optimize``.

:func:`check_precisions_on_validation` takes an FP32 export and its dataset, so any trained model
can be pointed at it (the motion model of ``exported_models`` now, a trained X3D fixture later).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openvino as ov

from actiontrain.export.convert import openvino_core
from actiontrain.export.manifest import MODEL_FILES, MODEL_XML, file_entry
from actiontrain.export.store import local_export, publish
from actiontrain.tasks.evaluate import evaluate_export
from actiontrain.tasks.optimize import quantize_export

INT8_MAX_DROP_VIDEOS = 1
INT8_MAX_DROP_POINTS = 2.0
"""INT8 may lose at most one validation video, or at most 2 points of top-1 (the larger allowance)."""


def fp16_copy(fp32_url: str, output: str) -> str:
    """The FP32 export's IR saved with FP16 weights, as ``export --precision fp16`` saves it (for
    exports whose checkpoint is not at hand); its manifest is the source's with new checksums."""
    source = local_export(fp32_url)
    local = Path(output)
    local.mkdir(parents=True, exist_ok=True)
    model = openvino_core().read_model(str(source.model_xml))
    ov.save_model(model, str(local / MODEL_XML), compress_to_fp16=True)
    manifest = source.manifest.with_files(
        {name: file_entry(local / name) for name in MODEL_FILES}, precision="fp16", parity=None, default_parity=None
    )
    return publish(local, output, manifest)


def _agreement(first: dict[str, str], second: dict[str, str]) -> float:
    common = first.keys() & second.keys()
    return sum(first[key] == second[key] for key in common) / len(common) if common else float("nan")


def check_precisions_on_validation(
    fp32_url: str, data_url: str, work: Path, *, fp16_url: str | None = None, subset: str = ""
) -> dict[str, Any]:
    """Scores an FP32 export, its FP16 copy and its INT8 quantization on validation videos and checks them.

    INT8 is calibrated by ``optimize`` on the recipe's training subset and scored on ``subset``
    (default: validation, val or test), which must be another subset: held apart. All three are
    evaluated by ``eval --model``'s code, computing in f32 so that only the weights differ.

    Args:
        fp32_url: A trained model's FP32 export.
        data_url: Its dataset.
        work: A scratch folder.
        fp16_url: Its FP16 export (``export --precision fp16``); by default the FP32 IR with FP16 weights.
        subset: The validation subset.

    Returns:
        ``top1`` per precision, videos scored, INT8's drop (points and videos) and the per-video
        agreements with FP32, for a report.

    Raises:
        AssertionError: INT8 loses more than one video and more than 2 points, FP16's top-1 is not
            FP32's, or the subsets are not held apart.
    """
    fp16_url = fp16_url or fp16_copy(fp32_url, str(work / "fp16"))
    int8 = quantize_export(fp32_url, data_url, str(work / "int8"), val_subset=subset, subset_size=64)
    reports = {
        precision: evaluate_export(url, data_url, subset=subset, inference_precision="f32", per_video=True)
        for precision, url in (("fp32", fp32_url), ("fp16", fp16_url), ("int8", int8.url))
    }
    fp32, fp16, quantized = reports["fp32"], reports["fp16"], reports["int8"]
    calibration = local_export(fp32_url).manifest.config.train.train_subset
    assert int8.val_subset == fp32["subset"] != calibration, f"scored on {int8.val_subset}, calibrated on {calibration}"
    assert [report["precision"] for report in reports.values()] == ["fp32", "fp16", "int8"]
    num_videos = fp32["num_videos"]
    assert num_videos == fp16["num_videos"] == quantized["num_videos"] == int8.num_videos > 0
    # optimize's own scoring and eval's are the same code on the same views.
    assert (int8.fp32_top1, int8.int8_top1) == (fp32["top1"], quantized["top1"])
    drop_points = 100 * (fp32["top1"] - quantized["top1"])
    drop_videos = round(drop_points * num_videos / 100)
    summary = {
        "subset": fp32["subset"],
        "num_videos": num_videos,
        "calibration_subset": calibration,
        "top1": {precision: report["top1"] for precision, report in reports.items()},
        "int8_drop_points": drop_points,
        "int8_drop_videos": drop_videos,
        "int8_agreement": _agreement(fp32["predictions"], quantized["predictions"]),
        "fp16_agreement": _agreement(fp32["predictions"], fp16["predictions"]),
    }
    assert drop_videos <= INT8_MAX_DROP_VIDEOS or drop_points <= INT8_MAX_DROP_POINTS, summary
    assert fp16["top1"] == fp32["top1"], summary
    return summary
