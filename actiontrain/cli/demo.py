"""``actiontrain demo``: the main job on embedded defaults (no cloud account needed)."""

from __future__ import annotations

import argparse

from actiontrain import tasks
from actiontrain.cli.options import positive_int

__all__ = ["add_parser"]


def add_parser(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the whole pipeline on an embedded S3 server with a generated dataset",
        description="Starts an S3 server on loopback, generates a sample dataset in it, trains through "
        "TorchX (torchrun, c10d) from S3 to S3, exports to OpenVINO, pulls the model back and predicts "
        "on a test video, printing where everything is and how long each stage took.",
    )
    demo.add_argument("--workdir", default="actiontrain-demo", help="local folder for the pulled model and plots")
    demo.add_argument("--classes", type=positive_int, default=4, help="classes in the sample dataset (default 4)")
    demo.add_argument("--videos-per-class", type=positive_int, default=40, help="videos per class (default 40)")
    demo.add_argument("--nproc", type=positive_int, default=2, help="training processes (default 2)")
    demo.set_defaults(handler=_demo)


def format_confusion(confusion: list[list[int]], classes: list[str]) -> str:
    """A confusion matrix as aligned text: one row per true class, its counts per predicted class."""
    width = max(len(str(value)) for row in confusion for value in row) + 1
    names = max(len(name) for name in classes)
    header = " " * (names + 2) + "".join(f"{index:>{width}}" for index in range(len(classes)))
    rows = [f"{name:>{names}} {index}" + "".join(f"{value:>{width}}" for value in row)
            for index, (name, row) in enumerate(zip(classes, confusion))]  # fmt: skip
    return "\n".join([header, *rows])


def _demo(args: argparse.Namespace) -> int:
    def on_stage(name: str, seconds: float) -> None:
        print(f"[demo] {name:<45} {seconds:6.1f} s", flush=True)

    result = tasks.demo.run_demo(
        workdir=args.workdir,
        num_classes=args.classes,
        videos_per_class=args.videos_per_class,
        num_processes=args.nproc,
        on_stage=on_stage,
    )
    print(f"\nS3 endpoint (embedded, stopped now): {result.endpoint}")
    for what, url in result.locations.items():
        print(f"  {what:<40} {url}")
    for what, value in result.facts.items():
        print(f"  {what:<40} {value}")
    if result.confusion:
        print("\nvalidation confusion matrix (rows: true class, columns: predicted; also in training.png)")
        print(format_confusion(result.confusion, result.classes))
    print(f"total {sum(result.seconds.values()):.1f} s")
    return 0
