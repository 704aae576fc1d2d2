"""``actiontrain data {check,convert,synth}``."""

from __future__ import annotations

import argparse
import json
import sys

from actiontrain import tasks
from actiontrain.cli.exit_codes import EXIT_PROBLEMS
from actiontrain.cli.options import add_layout_arguments, positive_int
from actiontrain.data.layouts import FORMATS

__all__ = ["add_parser"]


def _frame_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition(":")
    try:
        bounds = (int(low), int(high or low))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX frame counts such as 40:64, got {text!r}") from error
    if not 1 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"expected 1 <= MIN <= MAX, got {text!r}")
    return bounds


def add_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="inspect, convert and generate datasets")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    check = actions.add_parser(
        "check",
        help="summarise a dataset and list its problems",
        description="Imports a dataset from any fsspec URL and lists its subsets, classes and problems. "
        "Exit code 1 when a problem makes it unusable, 2 when it cannot be read at all.",
    )
    check.add_argument("url", help="dataset root: a path, s3://bucket/prefix, simplecache::s3://...")
    add_layout_arguments(check)
    check.add_argument("--deep", action="store_true", help="also decode every video and frame to the end")
    check.add_argument(
        "--max-bad-fraction",
        type=float,
        default=0.0,
        help="share of items with missing or undecodable media that still counts as usable, as "
        "data.max_bad_fraction does in training (default 0: every video must be there)",
    )
    check.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    check.set_defaults(handler=_check)

    convert = actions.add_parser(
        "convert",
        help="write a dataset in the internal representation (Datumaro format, media included)",
    )
    convert.add_argument("source", help="dataset root URL")
    convert.add_argument("destination", help="where to write it (any fsspec URL)")
    add_layout_arguments(convert)
    convert.add_argument(
        "--flip-pair",
        action="append",
        default=[],
        type=_class_pair,
        metavar="A,B",
        help="classes that become each other under a horizontal flip (e.g. MoveLeft,MoveRight), declared "
        "in the copy so training's flip swaps their labels; repeatable (UCF101/HMDB51/Kinetics layouts "
        "cannot declare them)",
    )
    convert.set_defaults(handler=_convert)

    synth = actions.add_parser(
        "synth",
        help="generate a synthetic motion dataset in any supported layout",
        description="Writes videos whose classes differ only in motion (left/right, up/down, grow/shrink, "
        "rotation), encoded with real codecs, in the original layout of FORMAT.",
    )
    synth.add_argument("destination", help="where to write it (any fsspec URL)")
    synth.add_argument("--format", required=True, choices=FORMATS, help="layout to write")
    synth.add_argument("--classes", type=positive_int, default=4, help="number of classes, 1-8 (default 4)")
    synth.add_argument("--videos-per-class", type=positive_int, default=6, help="videos per class (default 6)")
    synth.add_argument("--frames", type=_frame_range, default=(40, 64), help="frames per video, MIN:MAX (default 40:64)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.set_defaults(handler=_synth)


def _check(args: argparse.Namespace) -> int:
    report = tasks.data.check(
        args.url, format=args.format, split=args.split, deep=args.deep, max_bad_fraction=args.max_bad_fraction
    )
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        out = sys.stdout
        print(f"dataset:  {report.url}", file=out)
        print(f"format:   {report.format}", file=out)
        print(f"classes:  {len(report.classes)}: {', '.join(report.classes)}", file=out)
        subsets = ", ".join(f"{name} {count}" for name, count in report.subsets.items())
        print(f"subsets:  {subsets}", file=out)
        if report.flip_pairs:
            print(f"flip:     {'; '.join(' <-> '.join(pair) for pair in report.flip_pairs)}", file=out)
        print(f"problems: {len(report.problems) or 'none'}", file=out)
        for problem in report.problems:
            print(f"  {problem}", file=out)
        if report.bad_media_fraction:
            print(f"bad media: {report.bad_media_fraction:.2%} of the items (allowed {report.max_bad_fraction:.2%})", file=out)
        print("usable:   " + ("yes" if report.usable else "NO: fix the errors above"), file=out)
    return 0 if report.usable else EXIT_PROBLEMS


def _class_pair(text: str) -> tuple[str, str]:
    first, separator, second = text.partition(",")
    if not separator or not first.strip() or not second.strip() or "," in second:
        raise argparse.ArgumentTypeError(f"expected two class names separated by a comma, e.g. MoveLeft,MoveRight; got {text!r}")
    return first.strip(), second.strip()


def _convert(args: argparse.Namespace) -> int:
    converted = tasks.data.convert(
        args.source, args.destination, format=args.format, split=args.split, flip_pairs=args.flip_pair
    )
    for problem in converted.skipped:
        print(f"skipped: {problem}", file=sys.stderr)
    report = converted.report
    subsets = ", ".join(f"{name} {count}" for name, count in report.subsets.items())
    print(f"wrote {report.destination} (datumaro format): {subsets}; {report.num_media_files} media copied")
    return 0


def _synth(args: argparse.Namespace) -> int:
    summary = tasks.data.synth(
        args.destination,
        format=args.format,
        num_classes=args.classes,
        videos_per_class=args.videos_per_class,
        num_frames=args.frames,
        seed=args.seed,
    )
    subsets = ", ".join(f"{name} {count}" for name, count in summary.subset_counts().items())
    print(f"wrote {args.destination} ({summary.format}): {len(summary.classes)} classes; {subsets}")
    return 0
