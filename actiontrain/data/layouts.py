"""The dataset layouts actiontrain reads, by Datumaro format name (no heavy imports: the CLI uses it)."""

from __future__ import annotations

__all__ = ["FORMATS", "LAYOUT_HINTS", "SPLIT_FORMATS"]

FORMATS = ("ucf101", "hmdb51", "jester", "kinetics", "datumaro")
"""Layouts this project reads."""
SPLIT_FORMATS = ("ucf101", "hmdb51")
"""Layouts with three official train/test splits (the ``split`` import option)."""
LAYOUT_HINTS = {
    "ucf101": "UCF-101/ + ucfTrainTestlist/classInd.txt",
    "hmdb51": "hmdb51_org/ + testTrainMulti_7030_splits/",
    "jester": "20bn-jester-v1/ + jester-v1-labels.csv",
    "kinetics": "train.csv with a youtube_id column + <split>/ videos",
    "datumaro": "annotations/<subset>.json + videos/",
}
"""What each layout looks like, for error messages."""
