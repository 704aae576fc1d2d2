"""The main job on embedded defaults: an S3 server on loopback and a generated sample dataset.

Stages so far (the data layer): start S3, generate a UCF101-layout dataset into it, check it
(decoding every video), convert it to the internal representation, and stream one epoch of
augmented training clips from S3 with several DataLoader workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from actiontrain.embedded_s3 import EmbeddedS3

__all__ = ["DemoResult", "run_demo"]

logger = logging.getLogger(__name__)

BUCKET = "actiontrain-demo"


@dataclass(kw_only=True)
class DemoResult:
    """Where the demo put things and how long each stage took."""

    endpoint: str = ""
    locations: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)


def run_demo(
    *,
    num_classes: int = 4,
    videos_per_class: int = 8,
    batch_size: int = 4,
    num_workers: int = 2,
    on_stage: Callable[[str, float], None] | None = None,
) -> DemoResult:
    """Runs every stage against a fresh embedded S3 server, which is stopped at the end."""
    result = DemoResult()

    def stage(name: str, start: float) -> None:
        result.seconds[name] = time.perf_counter() - start
        if on_stage:
            on_stage(name, result.seconds[name])

    start = time.perf_counter()
    with EmbeddedS3() as s3, s3.environment():
        result.endpoint = s3.endpoint
        bucket = s3.create_bucket(BUCKET)
        stage("start S3 on loopback", start)

        from actiontrain.data.synth import synthesize

        dataset_url = f"{bucket}/datasets/ucf101-synth"
        start = time.perf_counter()
        summary = synthesize(
            dataset_url, format="ucf101", num_classes=num_classes, videos_per_class=videos_per_class, num_frames=(48, 72)
        )
        result.locations["dataset (UCF101 layout)"] = dataset_url
        result.facts["subsets"] = summary.subset_counts()
        stage("generate sample dataset", start)

        from actiontrain.data.check import check_dataset

        start = time.perf_counter()
        report = check_dataset(dataset_url, deep=True)
        result.facts["classes"] = report.classes
        result.facts["problems"] = len(report.problems)
        if not report.usable:
            raise RuntimeError(f"the generated dataset has problems: {report.problems}")
        stage("check dataset (--deep)", start)

        from actiontrain.data.catalog import load_dataset
        from actiontrain.data.convert import convert_dataset

        start = time.perf_counter()
        internal_url = f"{bucket}/datasets/ucf101-synth-datumaro"
        convert_dataset(load_dataset(dataset_url), internal_url)
        result.locations["internal representation (Datumaro)"] = internal_url
        stage("convert to Datumaro format", start)

        from actiontrain.config import DataConfig
        from actiontrain.data.dataset import build_clip_dataset
        from actiontrain.data.loader import ClipLoader

        start = time.perf_counter()
        dataset = load_dataset(internal_url)
        config = DataConfig(num_workers=num_workers)
        clips = build_clip_dataset(dataset, subset="train", config=config, train=True)
        loader = ClipLoader(clips, batch_size=batch_size)
        loader.set_epoch(0)
        num_clips, shape = 0, None
        for batch in loader:
            if batch["video"] is not None:
                num_clips += len(batch["video"])
                shape = tuple(batch["video"].shape[1:])
        elapsed = time.perf_counter() - start
        result.facts["clips streamed"] = num_clips
        result.facts["clip shape (C,T,H,W)"] = shape
        result.facts["throughput(clips/s)"] = round(num_clips / elapsed, 1)
        stage("stream one epoch of training clips from S3", start)
    return result
