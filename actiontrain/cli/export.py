"""``actiontrain export``, ``optimize``, ``pull`` and ``predict``: OpenVINO deployment of a trained model."""

from __future__ import annotations

import argparse
import json

from actiontrain import tasks
from actiontrain.cli.options import add_layout_arguments, positive_int
from actiontrain.config import EXPORT_PRECISIONS

__all__ = ["add_parsers"]


def add_parsers(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="export a checkpoint to OpenVINO IR (model.xml, model.bin, manifest.json) with a parity check",
        description="Converts a checkpoint to OpenVINO IR with a (1, 1, 3, T, H, W) NSCTHW input and OpenVINO "
        "Model API metadata, checks OpenVINO's logits against PyTorch's (in f32, and at the CPU's default "
        "precision where that is bf16 or f16) and writes model.xml, model.bin and manifest.json (checksums, "
        "classes, recipe, metrics, parity; written last) to OUTPUT, and/or as the next version "
        "REPOSITORY/NAME/N/ of a model server repository (OpenVINO Model Server, KServe).",
    )
    export.add_argument("--checkpoint", required=True, help="a checkpoint folder URL, or a training --output URL")
    export.add_argument("--output", help="export folder (any fsspec URL)")
    export.add_argument(
        "--serving-repository",
        metavar="REPOSITORY",
        help="model server repository (e.g. s3://bucket/models): writes REPOSITORY/NAME/N/, N the next version",
    )
    export.add_argument("--name", help="model name in --serving-repository (its folder; the name OVMS serves)")
    export.add_argument("--precision", choices=EXPORT_PRECISIONS, default="fp32", help="weight precision (default fp32)")
    export.set_defaults(handler=_export)

    optimize = commands.add_parser(
        "optimize",
        help="INT8 post-training quantization of an export with NNCF",
        description="Calibrates INT8 quantization (nncf.quantize) on clips of the training subset, scores the "
        "FP32 and INT8 models on the validation subset and writes the INT8 export to OUTPUT.",
    )
    optimize.add_argument("--model", required=True, help="an FP32 export (folder or URL)")
    optimize.add_argument("--data", required=True, help="the dataset the model was trained on")
    optimize.add_argument("--output", required=True, help="INT8 export folder (any fsspec URL)")
    add_layout_arguments(optimize)
    optimize.add_argument("--subset-size", type=positive_int, default=300, help="most calibration clips (default 300)")
    optimize.add_argument("--val-subset", default="", help="subset to score (default: validation, val or test)")
    optimize.set_defaults(handler=_optimize)

    pull = commands.add_parser(
        "pull",
        help="download an export to a local folder, verifying its checksums",
        description="Downloads model.xml and model.bin, checks them against the manifest's sha256 and only then "
        "writes the manifest into DIR: a folder with a manifest holds a complete, verified export.",
    )
    pull.add_argument("url", metavar="URL", help="export folder URL, or a serving repository's model folder (newest version)")
    pull.add_argument("directory", metavar="DIR", help="local folder to write")
    pull.set_defaults(handler=_pull)

    predict = commands.add_parser(
        "predict",
        help="classify videos, frame folders, folders of them or a dataset subset with an export (OpenVINO)",
        description="Samples each video as evaluation does (clips x crops of the recipe), runs OpenVINO on "
        "--batch-size clips per inference (several videos' views at once) and averages the softmax over each "
        "video's views. --model may be a local folder or any URL (pulled to the cache and verified), or a model "
        "folder of a serving repository (its newest version). OpenVINO computes in f32 unless the CPU's default "
        "precision passed the export's parity check; the output says which, and the throughput.",
    )
    predict.add_argument("--model", required=True, help="export folder or URL")
    predict.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="video files, frame folders, or folders of them (any URL)"
    )
    predict.add_argument("--data", help="also predict a dataset's subset (dataset root URL)")
    predict.add_argument("--subset", default="", help="with --data: the subset (default: validation, val or test)")
    add_layout_arguments(predict)
    predict.add_argument("--top-k", type=positive_int, default=5, help="classes shown per input (default 5)")
    predict.add_argument("--batch-size", type=positive_int, help="most clips per inference (default 8, or a video's views)")
    predict.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: precision, throughput and predictions: [{input, top_k: [{label, score}]}]",
    )
    predict.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    predict.set_defaults(handler=_predict)


def _export(args: argparse.Namespace) -> int:
    result = tasks.export.export_checkpoint(
        args.checkpoint,
        args.output,
        precision=args.precision,
        serving_repository=args.serving_repository,
        name=args.name,
    )
    manifest = result.manifest
    shape = "x".join(str(size) for size in manifest.input_shape)
    destinations = " and ".join(
        [*([args.output.rstrip("/")] if args.output else []), *([f"version {result.serving_url}"] if result.serving_url else [])]
    )
    print(
        f"exported {manifest.precision} model (step {manifest.step}, {len(manifest.classes)} classes, input {shape}) "
        f"to {destinations}; {result.describe_precisions()}"
    )
    return 0


def _optimize(args: argparse.Namespace) -> int:
    result = tasks.optimize.quantize_export(
        args.model,
        args.data,
        args.output,
        format=args.format,
        split=args.split,
        subset_size=args.subset_size,
        val_subset=args.val_subset,
    )
    print(
        f"INT8 export written to {result.url}; top-1 on {result.val_subset} ({result.num_videos} videos): "
        f"FP32 {result.fp32_top1:.1%}, INT8 {result.int8_top1:.1%} ({result.agreement:.0%} same predictions; "
        f"calibrated on {result.num_calibration_clips} clips)"
    )
    return 0


def _pull(args: argparse.Namespace) -> int:
    manifest = tasks.export.pull(args.url, args.directory)
    print(f"pulled {manifest.precision} export ({len(manifest.classes)} classes) to {args.directory}; checksums verified")
    return 0


def _predict(args: argparse.Namespace) -> int:
    report = tasks.predict.predict(
        args.model,
        args.inputs,
        data_url=args.data,
        subset=args.subset,
        format=args.format,
        split=args.split,
        top_k=args.top_k,
        device=args.device,
        batch_size=args.batch_size,
    )
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    for prediction in report.predictions:
        print(prediction.input)
        for label, score in prediction.top_k:
            print(f"  {score:6.3f}  {label}")
    print(
        f"{len(report.predictions)} videos, {report.num_clips} clips: {report.clips_per_second:.1f} clips/s in "
        f"inference ({report.videos_per_second:.1f} videos/s with decoding), up to {report.batch_size} clips per "
        f"inference; OpenVINO computed in {report.precision_reason}"
    )
    return 0
