"""The CUDA path, proven: the x3d_s recipe under torchrun (NCCL, bf16 autocast, channels-last) from local disk and S3.

Runs ``actiontrain train`` exactly as a pod would (``torchrun -m actiontrain train`` with
``train.device=cuda``) for a few hundred steps on a generated UCF101-layout dataset, once per
data source (local disk, S3 on loopback) and world size (1, and 2 when the machine has two GPUs),
then sweeps the DataLoader workers to find how many keep the data wait under 5 %. It reads the
figures back from the run's own ``metrics.jsonl``: clips/s, the data-wait fraction, peak GPU
memory, and whether the loss fell. The last line printed is one JSON object.

Without a usable CUDA GPU it says so in one line and exits 2. ``--device cpu`` runs the same path
on the CPU (gloo, no autocast) with tiny settings: that is how the tests keep this script working
on machines without a GPU.

    python benchmarks/gpu_check.py                      # on a GPU machine
    python benchmarks/gpu_check.py --steps 100 --workers 4,8,12
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import torch

from actiontrain.data.synth import synthesize
from actiontrain.distributed import cuda_unavailable_reason
from actiontrain.embedded_s3 import EmbeddedS3

EXIT_NO_GPU = 2
DATA_WAIT_TARGET = 5.0
"""Percent of step time spent waiting for data that the worker sweep aims under."""
_TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
_LOG_EVERY = 10


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cuda (default), or cpu to test this script")
    parser.add_argument("--recipe", default="x3d_s", help="recipe to train (default x3d_s)")
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    parser.add_argument("--sources", default="local,s3", help="data sources, comma-separated: local, s3 (default both)")
    parser.add_argument(
        "--workers", default="", help="DataLoader workers per process to sweep, e.g. 2,4,8 (default: by CPU count)"
    )
    parser.add_argument("--videos-per-class", type=int, default=30, help="generated videos per class, 8 classes (default 30)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one training run may take (default 900)")
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="extra recipe override (repeatable)"
    )
    args = parser.parse_args(argv)
    if args.steps < _LOG_EVERY * 3:
        parser.error(f"--steps must be >= {_LOG_EVERY * 3} (the figures come from log records every {_LOG_EVERY} steps)")
    args.sources = [source for source in args.sources.split(",") if source]
    if not set(args.sources) <= {"local", "s3"} or not args.sources:
        parser.error("--sources takes local and/or s3")
    return args


def no_gpu_reason() -> str | None:
    """Why this machine cannot run the CUDA path, or None when it can."""
    if not torch.cuda.is_available():
        return cuda_unavailable_reason()
    return None


def _worker_counts(args: argparse.Namespace) -> list[int]:
    if args.workers:
        return sorted({int(count) for count in args.workers.split(",")})
    cores = os.cpu_count() or 2
    per_process = max(1, cores // max(1, _world_sizes(args)[0]))
    return sorted({count for count in (2, 4, 8, 12, 16) if count < per_process} | {min(4, per_process)})


def _world_sizes(args: argparse.Namespace) -> list[int]:
    if args.device == "cpu":
        return [1]
    return [1, 2] if torch.cuda.device_count() >= 2 else [1]


def _train(
    *, data: str, output: str, world_size: int, workers: int, epochs: int, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, Any]:
    """One ``torchrun -m actiontrain train`` run; returns the figures read from its metrics."""
    overrides = [
        f"train.device={args.device}",
        f"train.epochs={epochs}",
        "train.eval_every=0",
        "train.export=false",
        f"train.log_every={_LOG_EVERY}",
        f"data.num_workers={workers}",
        *args.override,
    ]
    command = [
        _TORCHRUN, "--nnodes", "1", "--nproc-per-node", str(world_size), "--rdzv-backend", "c10d",
        "--rdzv-endpoint", "127.0.0.1:0", "-m", "actiontrain", "train", "--config", args.recipe,
        "--data", data, "--output", output, *overrides,
    ]  # fmt: skip
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"training failed (exit {completed.returncode}):\n{tail}")
    records = _metrics(output, env)
    train = [record for record in records if record.get("kind") == "train"]
    if len(train) < 3:
        raise RuntimeError(f"training logged {len(train)} records, too few to measure")
    steady = train[1:]  # the first window holds start-up: cuDNN autotuning, workers starting
    losses = [record["loss"] for record in train]
    head, tail = losses[: max(1, len(losses) // 4)], losses[-max(1, len(losses) // 4) :]
    peak = [record.get("memory/cuda_max_allocated(GiB)") for record in train]
    return {
        "world_size": world_size,
        "num_workers": workers,
        "steps": train[-1]["step"],
        "throughput(clips/s)": round(statistics.median(record["throughput(clips/s)"] for record in steady), 2),
        "time/data_wait(%)": round(statistics.median(record["time/data_wait(%)"] for record in steady), 1),
        "memory/cuda_max_allocated(GiB)": max((value for value in peak if value is not None), default=None),
        "loss_first_quarter": round(statistics.mean(head), 4),
        "loss_last_quarter": round(statistics.mean(tail), 4),
        "loss_fell": statistics.mean(tail) < statistics.mean(head),
        "wall_s": round(seconds, 1),
    }


def _metrics(output: str, env: dict[str, str]) -> list[dict[str, Any]]:
    # Read in a child with the run's environment (S3 endpoint and keys), like every other reader.
    code = (
        "import sys; from actiontrain import storage; "
        "sys.stdout.write(storage.read_bytes(storage.join(sys.argv[1], 'metrics.jsonl')).decode())"
    )
    text = subprocess.run([sys.executable, "-c", code, output], env=env, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generates the data, starts S3 on loopback, trains each configuration; returns every figure."""
    from actiontrain.recipe import load_config

    config = load_config(args.recipe, args.override)
    batch = config.train.batch_size
    results: dict[str, Any] = {"device": args.device, "recipe": args.recipe, "runs": []}
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        results["gpu"] = f"{props.name} (compute capability {props.major}.{props.minor}), {torch.cuda.device_count()} GPU(s)"
    results["cpus"] = os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="actiontrain-gpu-check-") as work, EmbeddedS3(separate_process=True) as s3:
        local = os.path.join(work, "data")
        summary = synthesize(local, format="ucf101", num_classes=8, videos_per_class=args.videos_per_class, num_frames=(64, 96))
        num_train = sum(1 for item in summary.items if item.subset == "train")
        env = {**os.environ, **s3.env}
        sources = {"local": local}
        if "s3" in args.sources:
            bucket = s3.create_bucket("gpu-check")
            with s3.environment():  # the same seed writes the same videos
                synthesize(f"{bucket}/data", format="ucf101", num_classes=8, videos_per_class=args.videos_per_class,
                           num_frames=(64, 96))  # fmt: skip
            sources["s3"] = f"{bucket}/data"
        default_workers = config.data.num_workers
        for source in args.sources:
            for world_size in _world_sizes(args):
                steps_per_epoch = math.ceil(num_train / (batch * world_size))
                epochs = max(1, math.ceil(args.steps / steps_per_epoch))
                output = os.path.join(work, f"run-{source}-{world_size}") if source == "local" else f"{sources['s3']}-runs/{world_size}"
                figures = _train(data=sources[source], output=output, world_size=world_size, workers=default_workers,
                                 epochs=epochs, args=args, env=env)  # fmt: skip
                results["runs"].append({"source": source, **figures})
        sweep = []
        steps_per_epoch = math.ceil(num_train / batch)
        for workers in _worker_counts(args):
            figures = _train(data=local, output=os.path.join(work, f"sweep-{workers}"), world_size=1, workers=workers,
                             epochs=max(1, math.ceil(args.steps / steps_per_epoch)), args=args, env=env)  # fmt: skip
            sweep.append(figures)
        results["worker_sweep"] = sweep
        enough = [run["num_workers"] for run in sweep if run["time/data_wait(%)"] < DATA_WAIT_TARGET]
        results["workers_for_data_wait_under_5%"] = min(enough) if enough else None
    results["loss_fell"] = all(run["loss_fell"] for run in results["runs"])
    return results


def _table(results: dict[str, Any]) -> str:
    lines = [f"device {results['device']}  {results.get('gpu', '')}  cpus {results['cpus']}  recipe {results['recipe']}", ""]
    lines.append(f"{'source':<8}{'world':>6}{'workers':>8}{'steps':>7}{'clips/s':>9}{'data %':>8}{'GPU GiB':>9}  loss")
    for run in [*results["runs"], *({"source": "sweep", **run} for run in results["worker_sweep"])]:
        memory = run["memory/cuda_max_allocated(GiB)"]
        lines.append(
            f"{run['source']:<8}{run['world_size']:>6}{run['num_workers']:>8}{run['steps']:>7}"
            f"{run['throughput(clips/s)']:>9.1f}{run['time/data_wait(%)']:>8.1f}"
            f"{(f'{memory:.2f}' if memory is not None else '-'):>9}  "
            f"{run['loss_first_quarter']:.3f} -> {run['loss_last_quarter']:.3f}"
        )
    lines.append("")
    lines.append(f"workers keeping data wait under {DATA_WAIT_TARGET:.0f}%: {results['workers_for_data_wait_under_5%']}")
    lines.append(f"loss fell in every run: {'yes' if results['loss_fell'] else 'NO'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.device == "cuda":
        reason = no_gpu_reason()
        if reason is not None:
            print(f"gpu_check: no usable CUDA GPU here ({reason}); run it on a GPU machine", file=sys.stderr)
            return EXIT_NO_GPU
    results = run(args)
    print(_table(results))
    print(json.dumps(results))
    return 0 if results["loss_fell"] else 1


if __name__ == "__main__":
    sys.exit(main())
