"""Options several commands share, declared once so their names, choices and help never drift."""

from __future__ import annotations

import argparse

from actiontrain.data.layouts import FORMATS

__all__ = ["add_layout_arguments"]


def add_layout_arguments(parser: argparse.ArgumentParser) -> None:
    """``--format`` and ``--split``: how to read a dataset root."""
    parser.add_argument("--format", choices=FORMATS, help="dataset layout (detected when absent)")
    parser.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="official split of UCF101/HMDB51")
