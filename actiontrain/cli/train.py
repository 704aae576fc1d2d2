"""``actiontrain train`` and ``actiontrain eval``."""

from __future__ import annotations

import argparse
import json
import sys

from actiontrain import tasks
from actiontrain.cli.exit_codes import EXIT_PREEMPTED, EXIT_USER_ERROR
from actiontrain.cli.options import add_layout_arguments
from actiontrain.errors import ConfigError

__all__ = ["add_parsers"]


def add_parsers(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train X3D on a dataset URL, writing checkpoints and metrics to an output URL",
        description="Trains as one process or under torchrun (env:// rendezvous; NCCL on GPU, gloo on CPU). "
        "Every (re)start resumes from the newest committed checkpoint under --output. "
        "Extra arguments are recipe overrides such as optim.lr=5e-4 train.epochs=3.",
    )
    train.add_argument("--config", default="x3d_s", help="shipped recipe (x3d_s, cpu_small, cpu_smoke) or a YAML path/URL")
    train.add_argument("--data", required=True, help="dataset root URL")
    train.add_argument("--output", required=True, help="where checkpoints, metrics and plots go (any fsspec URL)")
    add_layout_arguments(train)
    train.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides")
    train.set_defaults(handler=_train)

    # torchrun's options are not ours to parse: "+" as the prefix leaves every "-" argument to it.
    launch = commands.add_parser(
        "launch",
        prefix_chars="+",
        add_help=False,
        usage="actiontrain launch [TORCHRUN OPTIONS] COMMAND [ARGS]",
        help="run an actiontrain command under torchrun with elastic defaults (like accelerate launch)",
        description="Runs torchrun [OPTIONS] -m actiontrain COMMAND [ARGS] in this process "
        "with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, so that restarts never reconnect to a dead worker, and, "
        "unless given, --rdzv-backend c10d, --rdzv-endpoint 127.0.0.1:0 on one node and --max-restarts 3. "
        "SIGTERM stops the workers after their step with a checkpoint; launch then exits 143. "
        "Example: actiontrain launch --nproc-per-node 2 train --config cpu_smoke --data DATA --output OUT",
    )
    launch.add_argument("arguments", nargs=argparse.REMAINDER, help="torchrun's options, the command, its arguments")
    launch.set_defaults(handler=_launch, launch_parser=launch)

    evaluate = commands.add_parser(
        "eval",
        help="evaluate a checkpoint or an OpenVINO export on a subset: video-level top-1/top-5 with multi-view averaging",
        description="Scores every video of the subset with the evaluation views of the model's recipe. With "
        "--model, an OpenVINO export (FP32, FP16 or INT8; a folder, URL, or a serving repository's model folder) "
        "is scored the same way and the output adds its weight precision and the precision OpenVINO computed in "
        "(f32 unless the CPU's default passed the export's parity check).",
    )
    model = evaluate.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="a checkpoint folder URL, or a training --output URL")
    model.add_argument("--model", help="an OpenVINO export folder or URL")
    evaluate.add_argument("--data", required=True, help="dataset root URL")
    evaluate.add_argument("--subset", default="", help="subset to evaluate (default: validation, val or test)")
    add_layout_arguments(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument(
        "overrides", nargs="*", metavar="key=value", help="with --checkpoint: overrides of the saved data config"
    )
    evaluate.set_defaults(handler=_eval)


def _train(args: argparse.Namespace) -> int:
    result = tasks.train.train(
        args.config, args.overrides, data_url=args.data, output_url=args.output, format=args.format, split=args.split
    )
    if result.stopped_by:
        if result.is_main:
            where = f"checkpoint {result.checkpoint_url}" if result.checkpoint_url else "no checkpoint yet"
            print(
                f"actiontrain: stopped on {result.stopped_by} after step {result.last_step} "
                f"(epoch {result.epoch_position:.3f}; {where}); the next start resumes there",
                file=sys.stderr,
            )
        return EXIT_PREEMPTED
    if result.is_main:
        summary = f"trained {result.epochs} epochs ({result.last_step} steps); output {result.output_url}"
        if result.final_eval:
            summary += f"; top1 {result.final_eval['top1']:.1%} top5 {result.final_eval['top5']:.1%}"
        if result.export_url:
            summary += f"; OpenVINO export {result.export_url}"
        print(summary)
    return 0


def _launch(args: argparse.Namespace) -> int:
    if args.arguments in ([], ["-h"], ["--help"]):
        args.launch_parser.print_help()
        return 0 if args.arguments else EXIT_USER_ERROR
    return tasks.launch.launch(args.arguments)


def _eval(args: argparse.Namespace) -> int:
    if args.model is not None:
        if args.overrides:
            raise ConfigError(
                f"overrides ({' '.join(args.overrides)}) apply to a checkpoint's recipe; an export's is fixed: drop them"
            )
        result = tasks.evaluate.evaluate_export(
            args.model, args.data, subset=args.subset, format=args.format, split=args.split
        )
        what = (
            f"{result['precision']} export step {result['step']}, OpenVINO {result['inference_precision']}, "
            f"{result['throughput(clips/s)']:.1f} clips/s"
        )
    else:
        result = tasks.evaluate.evaluate_checkpoint(
            args.checkpoint, args.data, subset=args.subset, format=args.format, split=args.split, overrides=args.overrides
        )
        what = f"checkpoint step {result['step']}"
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['subset']}: top1 {result['top1']:.1%}  top5 {result['top5']:.1%}  "
            f"({result['num_videos']} videos, {what})"
        )
    return 0
