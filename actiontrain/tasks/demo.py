"""The main job on embedded defaults: the whole pipeline against an S3 server on loopback.

Stages: start S3; generate a sample dataset in it (UCF101 layout) and check it, decoding every
video; convert it to the internal (Datumaro) representation; train elastically through TorchX
(``actiontrain.train`` on the ``local_cwd`` scheduler: torchrun, 2 processes, c10d) from S3 to S3,
which exports to OpenVINO at the end; pull the export back with its checksums verified; predict
on a test video. The S3 server lives only as long as the demo, so what a person wants to look at
afterwards (the model, the metrics and the training plot) is also copied to a local folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from actiontrain import storage
from actiontrain.data.catalog import load_dataset
from actiontrain.data.check import check_dataset
from actiontrain.data.convert import convert_dataset
from actiontrain.data.synth import synthesize
from actiontrain.embedded_s3 import EmbeddedS3
from actiontrain.errors import ActionTrainError
from actiontrain.export.store import pull
from actiontrain.tasks.predict import predict

__all__ = ["DemoResult", "run_demo"]

logger = logging.getLogger(__name__)

BUCKET = "actiontrain-demo"

RECIPE = "cpu_small"
"""The small recipe that learns the sample data; trained with its own budget, exported at the end."""
TRAIN_OVERRIDES = ("train.export=true",)
SAMPLE_FRAMES = (16, 24)
"""Frames per generated video: a little more than the recipe's clip span (8 frames at interval 2)."""


@dataclass(kw_only=True)
class DemoResult:
    """Where the demo put things and how long each stage took."""

    endpoint: str = ""
    locations: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    confusion: list[list[int]] | None = None
    """Validation confusion matrix of the exported model: rows the true class, columns the prediction."""


def run_demo(
    *,
    workdir: str = "actiontrain-demo",
    num_classes: int = 4,
    videos_per_class: int = 40,
    num_processes: int = 2,
    on_stage: Callable[[str, float], None] | None = None,
) -> DemoResult:
    """Runs every stage against a fresh embedded S3 server, which is stopped at the end.

    Args:
        workdir: Local folder for what outlives the S3 server (model, metrics, plot).
        num_classes: Classes of the sample dataset (motions; 1 to 8).
        videos_per_class: Videos per class.
        num_processes: Training processes torchrun starts (TorchX's ``-j 1xN``).
        on_stage: Called with each stage's name and duration as it finishes.

    Raises:
        ActionTrainError: a stage failed; the message names it (the training log is above it).
    """
    result = DemoResult()

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        result.seconds[name] = time.perf_counter() - start
        if on_stage:
            on_stage(name, result.seconds[name])

    workdir = os.path.abspath(workdir)
    with ExitStack() as stack:
        with stage("start S3 on loopback"):
            # Its own process: the training processes and this one all reach it over HTTP.
            s3 = stack.enter_context(EmbeddedS3(separate_process=True))
            stack.enter_context(s3.environment())
            bucket = s3.create_bucket(BUCKET)
            result.endpoint = s3.endpoint
        _pipeline(result, stage, bucket=bucket, s3_env=s3.env, workdir=workdir, num_classes=num_classes,
                  videos_per_class=videos_per_class, num_processes=num_processes)  # fmt: skip
    return result


def _pipeline(
    result: DemoResult,
    stage,
    *,
    bucket: str,
    s3_env: dict[str, str],
    workdir: str,
    num_classes: int,
    videos_per_class: int,
    num_processes: int,
) -> None:

    dataset_url = f"{bucket}/datasets/ucf101-synth"
    with stage("generate sample dataset"):
        summary = synthesize(
            dataset_url, format="ucf101", num_classes=num_classes, videos_per_class=videos_per_class, num_frames=SAMPLE_FRAMES
        )
        result.locations["dataset (UCF101 layout)"] = dataset_url
        result.facts["subsets"] = summary.subset_counts()

    with stage("check dataset (--deep)"):
        report = check_dataset(dataset_url, deep=True)
        result.facts["classes"] = report.classes
        if not report.usable:
            raise ActionTrainError(f"the generated dataset has problems: {report.problems}")

    internal_url = f"{bucket}/datasets/ucf101-synth-datumaro"
    with stage("convert to Datumaro format"):
        # UCF101's layout cannot say that MoveLeft and MoveRight are mirror images; the internal
        # representation can, so training's flip swaps those labels instead of mixing them up.
        convert_dataset(load_dataset(dataset_url), internal_url, flip_pairs=summary.flip_pairs)
        result.locations["internal representation (Datumaro)"] = internal_url

    output_url = f"{bucket}/runs/x3d-xs-demo"
    with stage(f"train via TorchX ({num_processes} processes) + export"):
        _train_with_torchx(data=internal_url, output=output_url, s3_env=s3_env, num_processes=num_processes)
        result.locations["checkpoints"] = storage.join(output_url, "checkpoints")
        result.locations["OpenVINO export"] = storage.join(output_url, "export")

    model_dir = os.path.join(workdir, "model")
    with stage("pull the export (checksums verified)"):
        shutil.rmtree(model_dir, ignore_errors=True)
        manifest = pull(storage.join(output_url, "export"), model_dir)
        for name in ("metrics.jsonl", "training.png"):
            storage.copy(storage.join(output_url, name), os.path.join(workdir, name))
        result.locations["pulled model (local)"] = model_dir
        result.locations["metrics and plot (local)"] = os.path.join(workdir, "training.png")
        top1 = manifest.metrics.get("top1")
        result.facts["validation top-1 at export"] = None if top1 is None else f"{top1:.1%}"
        result.confusion = manifest.metrics.get("confusion")
        result.classes = list(manifest.classes)

    sample = load_dataset(internal_url).samples("test")[0]
    with stage("predict on a test video (OpenVINO, CPU)"):
        (prediction,) = predict(model_dir, [sample.url], top_k=3).predictions
        truth = manifest.classes[sample.label] if sample.label is not None else "?"
        verdict = "correct" if prediction.top_k[0][0] == truth else "wrong"
        result.facts["prediction"] = (
            f"{os.path.basename(sample.url)} (true: {truth}) -> "
            + ", ".join(f"{label} {score:.2f}" for label, score in prediction.top_k)
            + f" ({verdict})"
        )


def _train_with_torchx(*, data: str, output: str, s3_env: dict[str, str], num_processes: int) -> None:
    """``torchx run -s local_cwd actiontrain.train``: what a user types, against the embedded S3."""
    bin_dir = os.path.dirname(sys.executable)
    command = [
        os.path.join(bin_dir, "torchx"), "run", "-s", "local_cwd", "actiontrain.train",
        "-j", f"1x{num_processes}", "--config", RECIPE, "--data", data, "--output", output,
        *TRAIN_OVERRIDES,
    ]  # fmt: skip
    # local_cwd runs `python -m torch.distributed.run` from PATH: this interpreter's.
    env = {**os.environ, **s3_env, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    logger.info("running: %s", " ".join(command))
    completed = subprocess.run(command, env=env, check=False)
    if completed.returncode != 0:
        raise ActionTrainError(f"training through TorchX failed (exit {completed.returncode}); its log is above")
