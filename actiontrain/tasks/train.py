"""``actiontrain train``: elastic DDP over clips from any URL, checkpoints and metrics in object storage."""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from actiontrain import storage
from actiontrain.checkpoint import CheckpointManager
from actiontrain.config import Config
from actiontrain.data.catalog import load_dataset
from actiontrain.data.dataset import build_clip_dataset
from actiontrain.data.eval_split import eval_split
from actiontrain.data.loader import ClipLoader
from actiontrain.distributed import (
    DistInfo,
    agree_autocast_dtype,
    agree_flags,
    agree_max,
    autocast_dtype,
    barrier,
    describe_device,
    destroy_distributed,
    init_distributed,
    needs_grad_scaler,
)
from actiontrain.errors import ConfigError, DataError
from actiontrain.evaluation import evaluate
from actiontrain.export.exporter import EXPORT_DIR, export_model
from actiontrain.ledger import SampleLedger
from actiontrain.metrics import MetricsWriter, StartupClock, plot_training, process_start_time
from actiontrain.model import build_model_for_config, load_pretrained, memory_format_for
from actiontrain.optim import build_lr_scheduler, build_optimizer, clip_gradients
from actiontrain.preemption import StopRequest
from actiontrain.recipe import config_to_dict, load_config
from actiontrain.seeding import seed_step
from actiontrain.trained_model import TrainedModel, TrainingState

__all__ = ["PEER_STOP", "TrainResult", "Trainer", "restore_grad_scaler", "train"]

logger = logging.getLogger(__name__)

PEER_STOP = "another rank's stop request"
"""``TrainResult.stopped_by`` of a rank that stopped because another rank was asked to."""


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """What a finished run leaves behind."""

    output_url: str
    last_step: int
    epochs: int
    final_eval: dict | None
    export_url: str | None = None
    """The OpenVINO export written at the end (``train.export``), on rank 0."""
    is_main: bool = True
    """Whether this process is rank 0 (the one that reports)."""
    stopped_by: str | None = None
    """``SIGTERM`` or ``SIGINT`` when the run stopped on request before its end, after committing
    a checkpoint of ``last_step`` (the next start resumes there); :data:`PEER_STOP` on a rank that
    got no signal itself but stopped with the others (one node of several leaving); None when it
    ran to the end."""
    epoch_position: float = 0.0
    """Epochs done, fractions included (2.25: a quarter into the third), where the next start resumes."""
    checkpoint_url: str | None = None
    """The newest committed checkpoint (None: none yet)."""


def train(
    recipe: str | Config,
    overrides: Sequence[str] = (),
    *,
    data_url: str,
    output_url: str,
    format: str | None = None,
    split: int = 1,
) -> TrainResult:
    """Trains a recipe on ``data_url`` into ``output_url``, resuming from its newest checkpoint.

    Call it in every process of a torchrun job (or in a single process); the process group is
    destroyed at the end. From the first training step on, SIGTERM and SIGINT stop the run after
    the current step with a committed checkpoint (:class:`~actiontrain.preemption.StopRequest`);
    the result says so in ``stopped_by``.

    Args:
        recipe: A shipped recipe's name, a YAML path or URL, or a config.
        overrides: ``section.key=value`` overrides, applied to a named recipe.
        data_url: Dataset root.
        output_url: Where checkpoints, metrics, plots and the export go.
        format: Dataset layout, detected when None.
        split: Official split of UCF101/HMDB51.

    Raises:
        ConfigError, DataError, StorageError: bad recipe values, dataset or storage.
    """
    config = recipe if isinstance(recipe, Config) else load_config(recipe, overrides)
    try:
        return Trainer(config, data_url=data_url, output_url=output_url, format=format, split=split).train()
    finally:
        destroy_distributed()


def restore_grad_scaler(scaler: torch.amp.GradScaler, state: dict[str, Any]) -> None:
    """Restores a GradScaler's state when both sides have one.

    A checkpoint from a CPU or bf16 run holds ``{}`` (a disabled scaler's state), which an
    enabled scaler refuses; resuming it on an fp16-only GPU starts the scale afresh instead. A
    saved scale is ignored when this run needs no scaler.
    """
    if state and scaler.is_enabled():
        scaler.load_state_dict(state)
    elif scaler.is_enabled():
        logger.info("the checkpoint has no grad-scaler state (saved without fp16): starting a fresh scale")


class Trainer:
    """One training run, restartable: every (re)start resumes from the newest committed checkpoint.

    The training loader owns the data's position (epoch, samples consumed by all ranks, the
    order's seed), so a restart with another world size continues with exactly the samples not
    yet used. Batch size is per process: the global batch (and, with ``optim.scale_lr``, the
    learning rate) follows the world size; the learning-rate schedule runs on the epoch position,
    so it continues smoothly.
    """

    def __init__(
        self,
        config: Config,
        *,
        data_url: str,
        output_url: str,
        format: str | None = None,
        split: int = 1,
        stop: StopRequest | None = None,
    ):
        self.config = config
        self.output_url = output_url.rstrip("/")
        self.stop = stop or StopRequest()
        """Set by SIGTERM/SIGINT while :meth:`train` runs (or by ``request()``): stop with a checkpoint."""
        # Where a restart's time goes (the recovery time of an elastic job), logged after step 1.
        self._startup: StartupClock | None = StartupClock()
        self._startup.lap("imports")
        self.dist: DistInfo = init_distributed(device=config.train.device)
        dist = self.dist
        self._startup.lap("process group")
        # The same initial weights on every rank (DDP also broadcasts rank 0's); dropout is
        # seeded per step and rank (seed_step), augmentation per sample.
        torch.manual_seed(config.train.seed)
        random.seed(config.train.seed)

        self.dataset = load_dataset(data_url, format=format, split=split)
        self.classes = self.dataset.classes
        train_subset = config.train.train_subset
        self.train_clips = build_clip_dataset(self.dataset, subset=train_subset, config=config.data, train=True)
        if not len(self.train_clips):
            raise DataError(f"subset {train_subset!r} of {data_url} has no usable items")
        self.loader = ClipLoader(
            self.train_clips, batch_size=config.train.batch_size, rank=dist.rank, world_size=dist.world_size
        )
        self.validation = (
            eval_split(
                self.dataset,
                classes=self.classes,
                what="the model",
                config=config.data,
                subset=config.train.val_subset,
                batch_size=config.train.batch_size,
                rank=dist.rank,
                world_size=dist.world_size,
                required=bool(config.train.val_subset),
            )
            if config.train.eval_every
            else None
        )
        self._startup.lap("dataset")

        self.model = build_model_for_config(config, num_classes=len(self.classes))
        cuda = dist.device.type == "cuda"
        # One dtype for all ranks: a mixed GPU pool must not average scaled and unscaled gradients.
        self.amp_dtype = agree_autocast_dtype(autocast_dtype(dist.device) if (cuda and config.train.amp) else None)
        self.memory_format = memory_format_for(dist.device, config.train.channels_last)
        self.model.to(dist.device, memory_format=self.memory_format)
        self.optimizer = build_optimizer(
            self.model, config.optim, world_size=dist.world_size, batch_size=config.train.batch_size
        )
        self.scheduler = build_lr_scheduler(
            self.optimizer, config.optim, world_size=dist.world_size, batch_size=config.train.batch_size
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(self.amp_dtype))
        self.checkpoints = CheckpointManager(self.output_url, keep_last=config.train.keep_last)
        self._startup.lap("model")

        self.step = 0
        self.checkpoint_url: str | None = None
        """The newest committed checkpoint of this run (None: none yet)."""
        resumed = TrainingState.load_latest(self.checkpoints)
        if resumed is not None:
            self._restore(resumed)
        else:
            self.loader.set_epoch(0)
            if config.model.pretrained:
                load_pretrained(self.model, config.model.pretrained)
        self._startup.lap("checkpoint")
        # rank 0's clock decides when a time-based checkpoint is due (train.checkpoint_every_minutes).
        self._last_save = time.monotonic()
        # Records logged after the checkpoint we resume from will be logged again: drop them.
        self.metrics = MetricsWriter(self.output_url, enabled=dist.is_main, drop_after_step=self.step)
        self.ddp = (
            DistributedDataParallel(self.model, device_ids=[dist.local_rank] if cuda else None)
            if dist.world_size > 1
            else self.model
        )
        self.ledger = (
            SampleLedger(
                config.train.sample_log, rank=dist.rank, resumed_step=self.step, incarnation=self._incarnation()
            )
            if config.train.sample_log
            else None
        )
        if dist.is_main:
            logger.info(
                "device %s, autocast %s, %s layout",
                describe_device(dist.device),
                self.amp_dtype or "off",
                "channels-last-3d" if self.memory_format == torch.channels_last_3d else "contiguous",
            )
            logger.info(
                "training %s on %d %s clips of %s (%d classes), world size %d, batch %d per process; output %s",
                config.model.variant,
                len(self.train_clips),
                train_subset,
                self.dataset.url,
                len(self.classes),
                dist.world_size,
                config.train.batch_size,
                self.output_url,
            )
            if config.data.flip_prob > 0:
                pairs = [*self.dataset.flip_pairs, *map(tuple, config.data.flip_pairs)]
                logger.info(
                    "horizontal flip (p=%g) %s",
                    config.data.flip_prob,
                    ("swaps the labels of " + "; ".join(" <-> ".join(pair) for pair in pairs))
                    if pairs and config.data.label_aware_flip
                    else "keeps every label (no mirror-image classes declared: see data.flip_pairs)"
                    if config.data.label_aware_flip
                    else "keeps every label (data.label_aware_flip=false)",
                )
            resolved = yaml.safe_dump(config_to_dict(config), sort_keys=False)
            logger.info("resolved config:\n%s", resolved.rstrip())
            storage.write_bytes(storage.join(self.output_url, "config.yaml"), resolved.encode())
        self._startup.lap("other")

    def _incarnation(self) -> str:
        """A name for this restart round, the same on every rank: torchrun's run id and restart
        count, and the latest start of the ranks' processes (ms). The count alone repeats when a
        replaced node's fresh agent counts from 0 again; the start time never does."""
        started = agree_max(int(process_start_time() * 1000))
        run = os.environ.get("TORCHELASTIC_RUN_ID", "local")
        return f"{run}.{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}.{started}"

    # -- state -------------------------------------------------------------------------------

    def _restore(self, state: TrainingState) -> None:
        if state.model.classes != list(self.classes):
            raise ConfigError(
                f"the checkpoint in {self.output_url} was trained on other classes; use a new --output "
                "or the dataset it was trained on"
            )
        self.loader.load_state_dict(state.data)
        self.model.load_state_dict(state.model.weights)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.lr_scheduler)
        restore_grad_scaler(self.scaler, dict(state.grad_scaler))
        self.step = state.step
        self.checkpoint_url = self.checkpoints.step_url(state.step)
        if self.dist.is_main:
            logger.info(
                "resumed from step %d: epoch %d, %d of %d samples done (was world size %d, now %d)",
                self.step,
                self.loader.epoch,
                self.loader.consumed,
                len(self.train_clips),
                state.world_size,
                self.dist.world_size,
            )
            if state.world_size != self.dist.world_size:
                batch = self.config.train.batch_size
                logger.info(
                    "world size changed %d -> %d: global batch %d -> %d (%d per process), learning rate %.3g",
                    state.world_size,
                    self.dist.world_size,
                    state.world_size * batch,
                    self.dist.world_size * batch,
                    batch,
                    self.optimizer.param_groups[0]["lr"],
                )

    def training_state(self) -> TrainingState:
        """Everything a checkpoint of this step holds."""
        return TrainingState(
            model=TrainedModel(
                step=self.step, config=self.config, classes=list(self.classes), weights=self.model.state_dict()
            ),
            optimizer=self.optimizer.state_dict(),
            lr_scheduler=self.scheduler.state_dict(),
            grad_scaler=self.scaler.state_dict(),
            data=self.loader.state_dict(),
            world_size=self.dist.world_size,
        )

    def save_checkpoint(self) -> None:
        """Rank 0 writes; every rank waits, so no rank runs ahead of the newest checkpoint."""
        if self.dist.is_main:
            started = time.perf_counter()
            url = self.training_state().save(self.checkpoints)
            logger.info("checkpoint %s (%.1f s)", url, time.perf_counter() - started)
        barrier()
        self.checkpoint_url = self.checkpoints.step_url(self.step)
        self._last_save = time.monotonic()
        if self.ledger is not None:
            self.ledger.checkpoint(self.step)

    # -- loop --------------------------------------------------------------------------------

    def train(self) -> TrainResult:
        """Trains to the last epoch, or until a stop request (SIGTERM, SIGINT) is agreed on.

        A stop request is honoured after the step in which it arrived: every rank learns of it in
        the same step's agreement (:func:`~actiontrain.distributed.agree_flags`), rank 0 commits
        a checkpoint of that step, and the run returns without evaluating or exporting. A second
        signal is not caught: it ends the process, and a checkpoint cut short never counts.
        """
        with self.stop:
            return self._train()

    def _train(self) -> TrainResult:
        config, dist, loader = self.config, self.dist, self.loader
        final_eval = None
        # A request during start-up: the state is the resumed checkpoint's, nothing to save.
        (stopped,) = agree_flags(self.stop.requested)
        while not stopped and loader.epoch < config.train.epochs:
            stopped = self._train_epoch()
            if stopped and dist.is_main:
                logger.info("stop agreed after step %d: saving a checkpoint there", self.step)
            if not loader.epoch_done:  # stopped after a full-batch step: a prefix of the order is used
                self.save_checkpoint()
                break
            # Checkpoint, then evaluate: a stop during a long evaluation loses only the evaluation.
            loader.end_epoch()
            self.save_checkpoint()
            if not stopped and self.validation is not None and loader.epoch % config.train.eval_every == 0:
                final_eval = self._evaluate()
                (stopped,) = agree_flags(self.stop.requested)
        self.metrics.close()
        if self.ledger is not None:
            self.ledger.close()
        # A rank that agreed to another's request has not finished either: it must not report
        # success (its agent would end the job), but exit like the asker, so that torchrun
        # restarts the group without the node that left.
        stopped_by = (self.stop.name or PEER_STOP) if stopped else None
        export_url = None
        if stopped_by and dist.is_main:
            logger.warning(
                "stopped on %s after step %d (epoch %.3f) with checkpoint %s",
                stopped_by,
                self.step,
                loader.epoch_position(),
                self.checkpoint_url,
            )
        elif dist.is_main:
            confusion = torch.tensor(final_eval["confusion"]) if final_eval else None
            plot_training(self.metrics.records, confusion, self.classes, storage.join(self.output_url, "training.png"))
            if config.train.export:
                export_url = self._export(final_eval)
        return TrainResult(
            output_url=self.output_url,
            last_step=self.step,
            epochs=loader.epoch,
            final_eval=final_eval,
            export_url=export_url,
            is_main=dist.is_main,
            stopped_by=stopped_by,
            epoch_position=loader.epoch_position(),
            checkpoint_url=self.checkpoint_url,
        )

    def _train_epoch(self) -> bool:
        """The rest of the current epoch, from wherever the loader stands.

        Returns:
            True when the ranks agreed to stop; the loader then stands after the last step taken,
            which ended the epoch or was a full-batch step (see :meth:`ClipLoader.full_steps_left`).
        """
        config, dist, loader = self.config, self.dist, self.loader
        self.ddp.train()
        # Every rank runs the same steps: DDP's collectives pair up only if all ranks run each
        # step. A rank whose share ended, or whose whole batch was unreadable, runs an idle step.
        steps = loader.steps_left()
        full_steps = loader.full_steps_left()
        # A bar only for a person at a terminal; pods get the periodic log lines instead.
        self._progress = tqdm(
            total=steps,
            desc=f"epoch {loader.epoch + 1}/{config.train.epochs}",
            unit="step",
            disable=not (dist.is_main and sys.stderr.isatty()),
            leave=False,
            dynamic_ncols=True,
        )
        started, waited, clips = time.perf_counter(), 0.0, 0
        ready = time.perf_counter()
        batches = iter(loader)
        every, minutes = config.train.checkpoint_every, config.train.checkpoint_every_minutes
        stopped = False
        for step_in_epoch in range(1, steps + 1):
            batch = next(batches, None)
            waited += time.perf_counter() - ready
            self._lap_startup("first batch")
            self.step += 1
            seed_step(config.train.seed, rank=dist.rank, step=self.step)
            loss = self._train_step(batch)
            if batch is not None and batch["video"] is not None:
                clips += len(batch["video"])
            if self.ledger is not None and batch is not None:
                self.ledger.record(epoch=loader.epoch, step=self.step, indices=batch["index"].tolist())
            loader.advance()
            self.scheduler.step(loader.epoch_position())
            self._progress.update(1)
            self._lap_startup("first step")
            if self.step % config.train.log_every == 0 and loss is not None:
                self._log_step(loss, clips, started, waited)
            # Only after a step where every rank took a full batch are the consumed samples a
            # prefix of the epoch's order; the epoch's last step is followed by its own checkpoint.
            full = step_in_epoch <= full_steps and not loader.epoch_done
            due = dist.is_main and full and minutes > 0 and time.monotonic() - self._last_save >= 60 * minutes
            # One tiny all-reduce per step: every rank stops (or saves) after the same step.
            stopped, due = agree_flags(self.stop.requested, due)
            if stopped:
                break
            if full and (due or (every and self.step % every == 0)):
                self.save_checkpoint()
            ready = time.perf_counter()
        if not stopped:
            next(batches, None)  # lets the loader finish its epoch (bad-sample accounting, workers)
        self._progress.close()
        return stopped

    def _lap_startup(self, phase: str) -> None:
        """Start-up phases up to the first step; logged once, then the clock is dropped."""
        if self._startup is None:
            return
        self._startup.lap(phase)
        if phase == "first step":
            if self.dist.is_main:
                logger.info("start-up took %s", self._startup.describe())
            self._startup = None

    def _train_step(self, batch: dict[str, Any] | None) -> torch.Tensor | None:
        """One optimizer step; returns the detached loss (a tensor: no GPU sync until logged).

        Without clips (``batch`` None, or every sample unreadable) a process of a distributed
        job runs an idle step, so DDP's gradient all-reduce still pairs up with the other ranks;
        a single process has no one to pair with and skips the step. Returns None then.
        """
        if batch is None or batch["video"] is None:
            if self.dist.world_size > 1:
                self._idle_step()
            return None
        device = self.dist.device
        videos = batch["video"].to(device, non_blocking=True, memory_format=self.memory_format)
        labels = batch["label"].to(device, non_blocking=True)
        with self._autocast():
            logits = self.ddp(videos)
            loss = F.cross_entropy(logits.float(), labels)
        self._optimizer_step(loss)
        return loss.detach()

    def _idle_step(self) -> None:
        """A step that adds nothing: zero loss on one blank clip, so this rank's gradients are zero.

        The model runs in eval mode for it, so BatchNorm's running statistics do not see the
        blank clip. The other ranks' gradients are averaged with these zeros (as DDP's ``join``
        does for uneven inputs) and every replica takes the same optimizer step.
        """
        data = self.config.data
        blank = torch.zeros(1, 3, data.clip_len, data.crop_size, data.crop_size, device=self.dist.device)
        blank = blank.contiguous(memory_format=self.memory_format)
        self.model.eval()
        try:
            with self._autocast():
                loss = self.ddp(blank).float().sum() * 0.0
        finally:
            self.model.train()
        self._optimizer_step(loss)

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.dist.device.type, dtype=self.amp_dtype)

    def _optimizer_step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip_gradients(self.model, self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    # -- reporting ---------------------------------------------------------------------------

    def _log_step(self, loss_tensor: torch.Tensor, clips: int, started: float, waited: float) -> None:
        loss = float(loss_tensor)
        elapsed = max(time.perf_counter() - started, 1e-9)
        lr = self.optimizer.param_groups[0]["lr"]
        throughput = clips * self.dist.world_size / elapsed
        position = self.loader.epoch_position()
        record = {
            "kind": "train",
            "step": self.step,
            "epoch": round(position, 4),
            "loss": round(loss, 5),
            "lr": lr,
            "throughput(clips/s)": round(throughput, 2),
            "time/data_wait(%)": round(100 * waited / elapsed, 1),
        }
        if self.dist.device.type == "cuda":
            record["memory/cuda_max_allocated(GiB)"] = round(torch.cuda.max_memory_allocated(self.dist.device) / 2**30, 3)
        self.metrics.log(record)
        if not self._progress.disable:
            self._progress.set_postfix(
                loss=f"{loss:.3f}", lr=f"{lr:.1e}", clips_s=f"{throughput:.1f}", data=f"{record['time/data_wait(%)']:.0f}%"
            )
        elif self.dist.is_main:
            remaining = (self.config.train.epochs - position) * len(self.train_clips)
            eta = remaining / max(throughput, 1e-9)
            logger.info(
                "step %d  epoch %.2f  loss %.3f  lr %.2e  clips/s %.1f  data %.0f%%  eta %s",
                self.step,
                record["epoch"],
                loss,
                lr,
                throughput,
                record["time/data_wait(%)"],
                _duration(eta),
            )

    def _evaluate(self) -> dict:
        result = evaluate(
            self.model,
            self.validation.loader,
            num_classes=len(self.classes),
            device=self.dist.device,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            amp_dtype=self.amp_dtype,
            memory_format=self.memory_format,
            # A batch of videos holds batch x views clips (3 crops x 10 clips = 30 views each);
            # without gradients, twice the training batch fits wherever training does.
            max_clips_per_forward=2 * self.config.train.batch_size,
        ).to_dict()
        epoch = self.loader.epoch
        record = {"kind": "eval", "step": self.step, "epoch": epoch, "subset": self.validation.subset}
        record.update({key: result[key] for key in ("top1", "top5", "num_videos", "loss") if key in result})
        self.metrics.log(record)
        if self.dist.is_main:
            logger.info(
                "eval epoch %d on %s: top1 %.1f%%  top5 %.1f%%  (%d videos)",
                epoch,
                self.validation.subset,
                100 * result["top1"],
                100 * result["top5"],
                result["num_videos"],
            )
        return result

    def _export(self, final_eval: dict | None) -> str:
        """OpenVINO export of the final weights to OUTPUT/export (rank 0, after the last checkpoint)."""
        started = time.perf_counter()
        # Per-video predictions stay in the run; the confusion matrix (K x K counts) is small and
        # tells a user of the export which classes it mixes up.
        metrics = {key: value for key, value in (final_eval or {}).items() if key != "predictions"}
        result = export_model(
            self.model,
            classes=self.classes,
            config=self.config,
            output_url=storage.join(self.output_url, EXPORT_DIR),
            precision=self.config.train.export_precision,
            metrics=metrics,
            step=self.step,
        )
        logger.info("exported to %s (%s; %.1f s)", result.url, result.parity.describe(), time.perf_counter() - started)
        return result.url


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
