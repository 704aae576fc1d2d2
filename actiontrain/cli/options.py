"""Options several commands share, declared once so their names, choices and help never drift."""

from __future__ import annotations

import argparse

from actiontrain.data.layouts import FORMATS

__all__ = ["add_layout_arguments", "positive_int"]


def add_layout_arguments(parser: argparse.ArgumentParser) -> None:
    """``--format`` and ``--split``: how to read a dataset root."""
    parser.add_argument("--format", choices=FORMATS, help="dataset layout (detected when absent)")
    parser.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="official split of UCF101/HMDB51")


def positive_int(text: str) -> int:
    """An argparse ``type`` for counts: a whole number > 0, else a one-line usage error."""
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from error
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value
