"""Training-step throughput (the Trainer's step vs plain PyTorch loops), peak memory, checkpoint save/load times.

Three loops train copies of the same network on the same in-memory batches: (a) the trainer's
step, (b) a plain hand-written loop with the trainer's settings (memory format, autocast) and
(c) the same plain loop as most PyTorch code runs it: fp32, contiguous tensors. ``trainer_vs_plain``
(a / b) is the trainer's overhead; ``cpu_vs_eager_fp32`` (a / c, on the CPU) is what the
trainer's choice of settings buys.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed
import torch.multiprocessing
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from actiontrain import storage
from actiontrain.checkpoint import MARKER_FILE, STATE_FILE, CheckpointManager
from actiontrain.config import Config
from actiontrain.data.synth import synthesize
from actiontrain.distributed import barrier, destroy_distributed
from actiontrain.embedded_s3 import EmbeddedS3
from actiontrain.errors import ActionTrainError
from actiontrain.model import build_model_for_config, count_parameters
from actiontrain.recipe import load_config
from actiontrain.tasks.train import Trainer
from actiontrain.trained_model import TrainedModel

TARGETS = {"trainer_vs_plain": 0.95, "cpu_vs_eager_fp32": 1.7}
"""Minimum ratios: the trainer's step within 5% of a hand-written loop with its settings, and (on the
CPU) at least 1.7x a plain fp32 contiguous loop."""

_NUM_CLASSES = 4
_GiB = 2**30
_LOOPS = ("trainer", "plain", "eager_fp32")
_UNSTABLE_SPREAD = 1.15  # max/min of the per-repeat ratios beyond which the median is not to be trusted
_STORES = ("local", "s3")

Batch = dict[str, torch.Tensor]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", choices=("xs", "s", "m", "l"), default="xs", help="X3D size (default xs)")
    parser.add_argument("--clip-len", type=int, default=None, help="frames per clip (default: the recipe's)")
    parser.add_argument("--crop", type=int, default=None, help="side of the square crop in pixels (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per step and process (default: the recipe's)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per loop and repeat (default 5)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats; medians are reported (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per loop before the first repeat (default 2)")
    parser.add_argument(
        "--num-batches", type=int, default=2, help="distinct batches held in memory, used in turn by both loops (default 2)"
    )
    parser.add_argument(
        "--checkpoint-repeats", type=int, default=3, help="checkpoint saves and loads per store; medians (default 3)"
    )
    parser.add_argument(
        "--nproc", type=int, default=1, help="processes: 1 = no process group; >1 = DDP (gloo on CPU) via torch.multiprocessing"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads per process (default: torch's, divided among --nproc processes)"
    )
    parser.add_argument("--recipe", default="cpu_small", help="recipe the trainer is built from (default cpu_small: 8x64x64 clips, batch 4)")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra recipe override applied last, e.g. optim.grad_clip=0 (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0, help="train.seed and the seed of the synthetic videos")
    args = parser.parse_args(argv)
    for name in ("clip_len", "crop", "batch_size", "steps", "repeats", "num_batches", "checkpoint_repeats", "nproc"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.warmup < 0 or args.threads < 0:
        parser.error("--warmup and --threads must be >= 0")
    return args


def _overrides(args: argparse.Namespace) -> list[str]:
    sizes = []
    if args.clip_len is not None:
        sizes.append(f"data.clip_len={args.clip_len}")
    if args.crop is not None:
        # Short side from the crop up, as the shipped recipes do; the data config validates the rest.
        sizes += [
            f"data.crop_size={args.crop}",
            f"data.train_short_side=[{args.crop},{math.ceil(args.crop * 1.25)}]",
            f"data.eval_short_side={args.crop}",
        ]
    if args.batch_size is not None:
        sizes.append(f"train.batch_size={args.batch_size}")
    return [
        f"model.variant={args.variant}",
        *sizes,
        "data.num_workers=0",  # batches are decoded once, before timing
        "train.eval_every=0",
        f"train.seed={args.seed}",
        *args.override,
    ]


def _videos_per_class(num_clips: int) -> int:
    """The fewest UCF101-layout videos per class whose split-1 train subset holds ``num_clips`` clips."""
    count = 1
    while _NUM_CLASSES * (count - math.ceil(count / 3)) < num_clips:  # groups 1, 4, 7, ... are test
        count += 1
    return count


# -- the two loops -------------------------------------------------------------------------------


class PlainLoop:
    """A hand-written training step: ``model(x)``, cross-entropy, backward, ``clip_grad_norm_``, AdamW.

    It trains another copy of the trainer's network (same architecture, same initial weights,
    same device) with AdamW at the trainer's current learning rate and weight decay, and clips at
    the recipe's ``optim.grad_clip``. By default it also takes the trainer's memory format and
    autocast dtype, so only the loop around the network differs; ``eager_fp32`` makes it the loop
    most PyTorch code runs instead: fp32, contiguous tensors. It never synchronises with the
    device inside a step. Under a process group it wraps its model in DDP itself. It has no
    GradScaler: on GPUs without bf16 the trainer's fp16 path pays for one that this loop does not.
    """

    def __init__(self, trainer: Trainer, *, eager_fp32: bool = False):
        config = trainer.config
        self.device = trainer.dist.device
        self.memory_format = torch.contiguous_format if eager_fp32 else trainer.memory_format
        self.amp_dtype = None if eager_fp32 else trainer.amp_dtype
        self.max_norm = config.optim.grad_clip
        self.model = build_model_for_config(config, num_classes=len(trainer.classes))
        self.model.load_state_dict(trainer.model.state_dict())
        self.model.to(self.device, memory_format=self.memory_format)
        self.model.train()
        cuda = self.device.type == "cuda"
        self.net = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if cuda else None)
            if trainer.dist.world_size > 1
            else self.model
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=trainer.optimizer.param_groups[0]["lr"], weight_decay=config.optim.weight_decay
        )

    def step(self, batch: Batch) -> torch.Tensor:
        videos = batch["video"].to(self.device, non_blocking=True, memory_format=self.memory_format)
        labels = batch["label"].to(self.device, non_blocking=True)
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        )
        with autocast:
            loss = F.cross_entropy(self.net(videos).float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_norm)
        self.optimizer.step()
        return loss.detach()


def _collect_batches(trainer: Trainer, count: int) -> list[Batch]:
    """``count`` full batches from the trainer's own loader (real decode and augmentation), kept in memory."""
    batches: list[Batch] = []
    for epoch in range(count + 2):  # every epoch yields at least one full batch: see _videos_per_class
        trainer.loader.set_epoch(epoch)
        for batch in trainer.loader:
            if batch["video"] is not None and len(batch["video"]) == trainer.config.train.batch_size:
                batches.append({"video": batch["video"], "label": batch["label"]})
                if len(batches) == count:
                    return batches
    raise RuntimeError(f"the trainer's loader gave {len(batches)} full batches, {count} wanted")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _max_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Element-wise maximum over all ranks (identity without a process group)."""
    if not torch.distributed.is_initialized():
        return values
    on = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=on)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return tensor.tolist()


def _run_steps(step: Callable[[Batch], Any], batches: list[Batch], num_steps: int, device: torch.device) -> tuple[float, list]:
    """Seconds for ``num_steps`` steps over ``batches`` in turn (the slowest rank's), and the losses."""
    barrier()  # ranks start together, so no rank's time includes waiting for a late peer
    _sync(device)
    started = time.perf_counter()
    losses = [step(batches[i % len(batches)]) for i in range(num_steps)]
    _sync(device)
    elapsed = time.perf_counter() - started
    return _max_over_ranks([elapsed], device)[0], losses


def flat_parameters(model: torch.nn.Module) -> torch.Tensor:
    """All parameters as one CPU vector, whatever their memory format.

    ``parameters_to_vector`` uses ``view(-1)``, which fails on a channels-last-3d weight (its
    strides are not those of a contiguous tensor); ``reshape`` copies where it must.
    """
    return torch.cat([parameter.detach().reshape(-1).to("cpu", copy=True) for parameter in model.parameters()])


def measure_throughput(
    trainer: Trainer, plains: dict[str, PlainLoop], batches: list[Batch], args: argparse.Namespace
) -> dict[str, Any]:
    """Warms every loop up, then times them interleaved; checks that all of them really train.

    Raises:
        AssertionError: a loss is not finite, or a loop left its parameters unchanged.
    """
    device = trainer.dist.device
    steps: dict[str, Callable[[Batch], Any]] = {"trainer": trainer._train_step, **{n: p.step for n, p in plains.items()}}
    models = {"trainer": trainer.model, **{name: plain.model for name, plain in plains.items()}}
    before = {name: flat_parameters(model) for name, model in models.items()}
    losses: dict[str, list[float]] = {name: [] for name in _LOOPS}
    # Warm-up: allocator caches, AdamW's lazily created state, DDP's first-iteration bucketing.
    for name in _LOOPS:
        _, warm = _run_steps(steps[name], batches, args.warmup, device)
        losses[name] += [float(loss) for loss in warm]
    seconds: dict[str, list[float]] = {name: [] for name in _LOOPS}
    for repeat in range(args.repeats):
        # Alternate which loop goes first, so slow drifts (another job, frequency) hit both alike.
        for name in _LOOPS if repeat % 2 == 0 else reversed(_LOOPS):
            elapsed, timed = _run_steps(steps[name], batches, args.steps, device)
            seconds[name].append(elapsed)
            losses[name] += [float(loss) for loss in timed]
    for name in _LOOPS:
        if not all(math.isfinite(loss) for loss in losses[name]):
            raise AssertionError(f"the {name} loop produced a non-finite loss: {losses[name]}")
        if torch.equal(before[name], flat_parameters(models[name])):
            raise AssertionError(f"the {name} loop did not change the model's parameters")
    clips = args.steps * trainer.config.train.batch_size * trainer.dist.world_size
    rates = {name: clips / statistics.median(values) for name, values in seconds.items()}
    paired = [p / t for t, p in zip(seconds["trainer"], seconds["plain"], strict=True)]
    eager_paired = [e / t for t, e in zip(seconds["trainer"], seconds["eager_fp32"], strict=True)]
    return {
        **{f"throughput/{name}(clips/s)": round(rate, 2) for name, rate in rates.items()},
        "trainer_vs_plain": round(rates["trainer"] / rates["plain"], 3),
        "trainer_vs_plain_paired(min,max)": [round(min(paired), 3), round(max(paired), 3)],
        f"{device.type}_vs_eager_fp32": round(rates["trainer"] / rates["eager_fp32"], 3),
        "vs_eager_fp32_paired(min,max)": [round(min(eager_paired), 3), round(max(eager_paired), 3)],
        **{f"time/{name}_step(ms)": round(1000 * statistics.median(values) / args.steps, 1) for name, values in seconds.items()},
        "seconds": {name: [round(s, 4) for s in values] for name, values in seconds.items()},
        "loss": {name: {"first": round(values[0], 4), "last": round(values[-1], 4)} for name, values in losses.items()},
    }


# -- checkpoints ---------------------------------------------------------------------------------


def measure_checkpoints(trainer: Trainer, *, urls: dict[str, str], repeats: int) -> dict[str, Any]:
    """Median seconds to save and to load the trainer's full state through CheckpointManager, per store.

    A save includes building the state and pruning old checkpoints, as ``Trainer.save_checkpoint``
    does; a load includes the hash check and ``torch.load(weights_only=True)``.

    Raises:
        AssertionError: a loaded checkpoint does not give back the model's weights.
    """
    managers = {name: CheckpointManager(url) for name, url in urls.items()}
    expected = {key: value.detach().cpu() for key, value in trainer.model.state_dict().items()}
    # Untimed first round: s3fs's session and connection, the first file in a fresh folder.
    for manager in managers.values():
        manager.save(0, trainer.training_state().state())
        weights = TrainedModel.from_state(0, manager.load(0)).weights
        if weights.keys() != expected.keys() or not all(torch.equal(weights[key], value) for key, value in expected.items()):
            raise AssertionError(f"checkpoint under {manager.root} does not give back the model's weights")
    size = json.loads(storage.read_bytes(storage.join(managers["local"].step_url(0), MARKER_FILE)))["files"][STATE_FILE]["size"]
    seconds: dict[str, list[float]] = {f"{op}_{name}": [] for name in managers for op in ("save", "load")}
    for repeat in range(repeats):
        step = repeat + 1
        for name in _STORES if repeat % 2 == 0 else reversed(_STORES):
            started = time.perf_counter()
            managers[name].save(step, trainer.training_state().state())
            seconds[f"save_{name}"].append(time.perf_counter() - started)
            started = time.perf_counter()
            managers[name].load(step)
            seconds[f"load_{name}"].append(time.perf_counter() - started)
    result: dict[str, Any] = {"checkpoint/size(MB)": round(size / 1e6, 2)}
    result.update({f"checkpoint/{key}(s)": round(statistics.median(values), 4) for key, values in seconds.items()})
    result["checkpoint_seconds"] = {key: [round(s, 4) for s in values] for key, values in seconds.items()}
    return result


# -- one process ---------------------------------------------------------------------------------


def _max_rss_gib() -> float:
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / _GiB if sys.platform == "darwin" else rss * 1024 / _GiB


def run_rank(rank: int, world_size: int, args: argparse.Namespace, work_dir: str, s3_url: str, port: int) -> None:
    """One training process: builds the trainer, measures, and (rank 0) writes ``work_dir/result.json``."""
    if world_size > 1:
        os.environ.update(
            RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
        )
    torch.set_num_threads(args.threads or max(1, torch.get_num_threads() // world_size))
    try:
        config = load_config(args.recipe, _overrides(args))
        trainer = Trainer(config, data_url=os.path.join(work_dir, "data"), output_url=os.path.join(work_dir, "run"))
        device = trainer.dist.device
        batches = _collect_batches(trainer, args.num_batches)
        plains = {"plain": PlainLoop(trainer), "eager_fp32": PlainLoop(trainer, eager_fp32=True)}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        result = measure_throughput(trainer, plains, batches, args)
        cuda_peak = torch.cuda.max_memory_allocated(device) / _GiB if device.type == "cuda" else None
        rss_train = _max_rss_gib()
        if trainer.dist.is_main:
            result.update(
                measure_checkpoints(
                    trainer,
                    urls={"local": os.path.join(work_dir, "checkpoints"), "s3": storage.join(s3_url, "run")},
                    repeats=args.checkpoint_repeats,
                )
            )
        barrier()
        rss_train, rss_end, cuda_peak = _max_over_ranks([rss_train, _max_rss_gib(), cuda_peak or 0.0], device)
        if trainer.dist.is_main:
            result.update(
                {
                    "memory/max_rss(GiB)": round(rss_train, 3),
                    "memory/max_rss_with_checkpoints(GiB)": round(rss_end, 3),
                    "memory/cuda_max_allocated(GiB)": round(cuda_peak, 3) if device.type == "cuda" else None,
                    "device": str(device),
                    "torch_threads": torch.get_num_threads(),
                    "num_parameters": count_parameters(trainer.model),
                    "amp_dtype": str(trainer.amp_dtype).removeprefix("torch.") if trainer.amp_dtype else None,
                }
            )
            with open(os.path.join(work_dir, "result.json"), "w", encoding="utf-8") as file:
                json.dump(result, file)
    finally:
        destroy_distributed()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Synthesizes the data, starts S3 on loopback, runs the measuring process(es), returns the results."""
    config: Config = load_config(args.recipe, _overrides(args))  # a bad override fails here, once
    load_average = os.getloadavg()[0]  # before we add to it: other work on the machine skews the ratio
    clips = config.train.batch_size * args.nproc
    span = config.data.clip_len * config.data.frame_interval
    with (
        tempfile.TemporaryDirectory(prefix="actiontrain-bench-") as work_dir,
        EmbeddedS3(separate_process=True) as s3,
        s3.environment(),
    ):
        started = time.perf_counter()
        synthesize(
            os.path.join(work_dir, "data"),
            format="ucf101",
            num_classes=_NUM_CLASSES,
            videos_per_class=_videos_per_class(clips),
            num_frames=(span + 4, span + 12),
            seed=args.seed,
        )
        s3_url = s3.create_bucket("bench")
        setup_s = time.perf_counter() - started
        # Always a fresh process, also for one: its peak RSS is then the training process's alone,
        # without this one's video synthesis.
        torch.multiprocessing.spawn(
            run_rank, args=(args.nproc, args, work_dir, s3_url, _free_port()), nprocs=args.nproc, join=True
        )
        with open(os.path.join(work_dir, "result.json"), encoding="utf-8") as file:
            measured = json.load(file)
    return {
        "trainer_vs_plain": measured["trainer_vs_plain"],
        **{key: value for key, value in measured.items() if key != "trainer_vs_plain"},
        "variant": config.model.variant,
        "clip_len": config.data.clip_len,
        "crop_size": config.data.crop_size,
        "batch_size": config.train.batch_size,
        "world_size": args.nproc,
        "steps": args.steps,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "num_batches": args.num_batches,
        "grad_clip": config.optim.grad_clip,
        "setup_s": round(setup_s, 1),
        "load_average_before": round(load_average, 2),
        "num_cpus": os.cpu_count(),
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
        "targets": TARGETS,
        "targets_met": all(measured[name] >= target for name, target in TARGETS.items() if name in measured),
    }


def _table(result: dict[str, Any]) -> str:
    loss, cuda = result["loss"], result["memory/cuda_max_allocated(GiB)"]
    side = result["crop_size"]
    labels = {
        "trainer": "(a) Trainer._train_step",
        "plain": "(b) plain loop, trainer's settings",
        "eager_fp32": "(c) plain loop, fp32 contiguous",
    }
    rows = [(labels[name], result[f"throughput/{name}(clips/s)"], result[f"time/{name}_step(ms)"]) for name in _LOOPS]
    memory = (
        f"memory/max_rss(GiB) {result['memory/max_rss(GiB)']:.3f} while training (all loops' models in one process), "
        f"{result['memory/max_rss_with_checkpoints(GiB)']:.3f} after the checkpoints"
    )
    if cuda is not None:
        memory += f"; cuda max allocated {cuda:.3f} GiB"
    lines = [
        (
            f"X3D-{result['variant'].upper()} ({result['num_parameters'] / 1e6:.2f} M parameters)  "
            f"{result['clip_len']}x{side}x{side}  batch {result['batch_size']} per process  world size "
            f"{result['world_size']}  device {result['device']}  autocast {result['amp_dtype'] or 'off'}"
        ),
        (
            f"{result['repeats']} interleaved repeats x {result['steps']} steps (median), {result['warmup']} warm-up "
            f"steps per loop, {result['num_batches']} in-memory batches  cpus {result['num_cpus']}  torch threads "
            f"{result['torch_threads']}  torch {result['versions']['torch']}"
        ),
        (
            "sanity: every loop trains (losses finite, parameters changed); loss "
            + ", ".join(f"{name} {loss[name]['first']:.3f} -> {loss[name]['last']:.3f}" for name in _LOOPS)
        ),
        "",
        f"{'loop':<44}{'clips/s':>10}{'ms/step':>10}",
        *(f"{name:<44}{rate:>10.2f}{ms:>10.1f}" for name, rate, ms in rows),
        "",
        memory,
        "",
        f"checkpoint: full trainer state, {result['checkpoint/size(MB)']:.1f} MB",
        f"{'store':<44}{'save s':>10}{'load s':>10}",
    ]
    for name, label in (("local", "local disk"), ("s3", "S3 on loopback (moto, own process)")):
        save, load = result[f"checkpoint/save_{name}(s)"], result[f"checkpoint/load_{name}(s)"]
        lines.append(f"{label:<44}{save:>10.3f}{load:>10.3f}")
    low, high = result["trainer_vs_plain_paired(min,max)"]
    eager_name = f"{result['device'].split(':')[0]}_vs_eager_fp32"
    eager_low, eager_high = result["vs_eager_fp32_paired(min,max)"]
    eager_target = f"target >= {TARGETS[eager_name]}; " if eager_name in TARGETS else ""
    lines += [
        "",
        (
            f"trainer_vs_plain {result['trainer_vs_plain']:.3f}  (target >= {TARGETS['trainer_vs_plain']}; "
            f"per repeat {low:.3f}..{high:.3f})"
        ),
        f"{eager_name} {result[eager_name]:.3f}  ({eager_target}per repeat {eager_low:.3f}..{eager_high:.3f})",
    ]
    if high / low > _UNSTABLE_SPREAD:
        lines.append(
            f"warning: per-repeat ratios spread {high / low:.2f}x (load average {result['load_average_before']:.2f} "
            "before the run): something else is using the CPUs; try --threads 1, or a quiet machine"
        )
    lines.append(f"targets met: {'yes' if result['targets_met'] else 'no'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        result = run(args)
    except ActionTrainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(_table(result))
    print(json.dumps(result, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
