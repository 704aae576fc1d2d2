"""The trainer end to end on CPU: a run leaves checkpoints, metrics and plots; a rerun resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from pathlib import Path

import pytest
import torch
from ledger_audit import assert_exactly_once

from actiontrain import storage
from actiontrain.checkpoint import CheckpointManager
from actiontrain.data.synth import synthesize
from actiontrain.distributed import destroy_distributed
from actiontrain.errors import ConfigError
from actiontrain.recipe import load_config
from actiontrain.data.sampler import ResumableDistributedSampler
from actiontrain.tasks.train import Trainer, restore_grad_scaler
from actiontrain.trained_model import TrainingState

ACTIONTRAIN = os.path.join(os.path.dirname(sys.executable), "actiontrain")
TINY = ["train.log_every=1", "data.num_workers=0", "train.batch_size=2"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("trainer") / "ucf")
    synthesize(root, format="ucf101", num_classes=3, videos_per_class=3, num_frames=(12, 16))
    return root


def _run(dataset: str, output: str, *overrides: str, stop_at: int | None = None, stop=None):
    """Trains in this process; with ``stop_at``, SIGTERM arrives during that step."""
    config = load_config("cpu_smoke", [*TINY, *overrides])
    try:
        trainer = Trainer(config, data_url=dataset, output_url=output, stop=stop)
        if stop_at is not None:
            take_step = trainer._train_step

            def step_then_signal(batch):
                loss = take_step(batch)
                if trainer.step == stop_at:
                    os.kill(os.getpid(), signal.SIGTERM)  # what torchrun forwards to each worker
                return loss

            trainer._train_step = step_then_signal
        return trainer, trainer.train()
    finally:
        destroy_distributed()


@pytest.mark.e2e  # trains or exports for tens of seconds: not the fast tier
def test_a_run_leaves_checkpoints_metrics_and_plots(dataset, tmp_path):
    output = str(tmp_path / "run")
    trainer, result = _run(dataset, output, "train.epochs=2")
    assert result.epochs == 2 and result.last_step == 2 * 3  # 6 train clips / batch 2
    assert CheckpointManager(output).list_committed() == [3, 6]
    records = [json.loads(line) for line in open(os.path.join(output, "metrics.jsonl"))]
    assert {record["kind"] for record in records} == {"train", "eval"}
    train = [r for r in records if r["kind"] == "train"]
    assert all({"loss", "lr", "throughput(clips/s)", "time/data_wait(%)"} <= set(r) for r in train)
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2] and all(0.0 <= r["top1"] <= 1.0 for r in evals)
    assert open(os.path.join(output, "training.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "clip_len: 4" in open(os.path.join(output, "config.yaml")).read()
    state = TrainingState.load(f"{output}/checkpoints/step-00000006")
    assert dict(state.data) == {"epoch": 2, "consumed": 0, "seed": 0, "num_samples": 6}
    assert state.model.classes == ["MoveLeft", "MoveRight", "MoveUp"]


@pytest.mark.e2e  # trains or exports for tens of seconds: not the fast tier
def test_a_rerun_resumes_instead_of_starting_over(dataset, tmp_path):
    output = str(tmp_path / "run")
    _run(dataset, output, "train.epochs=1")
    trainer, result = _run(dataset, output, "train.epochs=2")
    assert (trainer.loader.epoch, result.last_step) == (2, 6)
    records = [json.loads(line) for line in open(os.path.join(output, "metrics.jsonl"))]
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == list(range(1, 7))  # the second run logged only steps 4-6, after the first run's 1-3
    assert [r["epoch"] for r in records if r["kind"] == "eval"] == [1, 2]


def test_mid_epoch_checkpoint_resumes_at_the_sample_count(dataset, tmp_path):
    output = str(tmp_path / "run")
    _run(dataset, output, "train.epochs=1", "train.checkpoint_every=2", "train.eval_every=0")
    state = TrainingState.load(CheckpointManager(output).step_url(2))
    assert (state.step, state.data["epoch"], state.data["consumed"]) == (2, 0, 4)


@pytest.mark.e2e  # trains or exports for tens of seconds: not the fast tier
def test_a_restart_with_another_data_seed_keeps_the_checkpointed_order(dataset, tmp_path, monkeypatch, caplog):
    output, ledger = str(tmp_path / "run"), str(tmp_path / "ledger")
    logged = ("train.checkpoint_every=1", "train.eval_every=0", f"train.sample_log={ledger}")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "first")
    _run(dataset, output, "train.epochs=1", *logged)
    # The first run died after step 1's checkpoint: steps 2 and 3 and their checkpoints never were.
    manager = CheckpointManager(output)
    for step in (2, 3):
        for name in ("COMMITTED", "state.pt"):
            storage.remove(f"{manager.step_url(step)}/{name}")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "second")
    with caplog.at_level("WARNING", logger="actiontrain"):
        trainer, _ = _run(dataset, output, "train.epochs=2", "data.seed=7", *logged)
    assert "data.seed is 7 but this run's data order was drawn with seed 0: resuming keeps 0" in caplog.text
    assert_exactly_once(ledger, num_samples=6, epochs=2)
    # Not only the interrupted epoch: the whole run keeps the order it started with.
    lines = next(Path(ledger).glob("second.*")).read_text().splitlines()
    second_epoch = [int(line.split()[3]) for line in lines if line.startswith("sample 1 ")]
    assert second_epoch == ResumableDistributedSampler(6, seed=0).global_order(1)
    assert trainer.loader.state_dict()["seed"] == 0


@pytest.mark.e2e  # trains or exports for tens of seconds: not the fast tier
def test_a_run_that_asks_for_it_ends_with_a_verified_openvino_export(dataset, tmp_path):
    from actiontrain.export.store import pull

    output = str(tmp_path / "run")
    _, result = _run(dataset, output, "train.epochs=1", "train.export=true", "train.export_precision=fp16")
    assert result.export_url == os.path.join(output, "export")
    manifest = pull(result.export_url, tmp_path / "pulled")  # checks every file's sha256
    assert manifest.classes == ["MoveLeft", "MoveRight", "MoveUp"]
    assert manifest.precision == "fp16" and manifest.step == 3
    assert manifest.metrics["top1"] == result.final_eval["top1"]


def test_resuming_a_checkpoint_saved_without_a_grad_scaler_starts_a_fresh_scale():
    # A CPU or bf16 run saves a disabled scaler's state, {}; an fp16-only GPU (T4) resumes with
    # an enabled scaler, which refuses {} (the CPU scaler stands in for CUDA's: same class).
    enabled = torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=True)
    restore_grad_scaler(enabled, {})
    assert enabled.get_scale() == 1024.0
    saved = torch.amp.GradScaler("cpu", init_scale=64.0, enabled=True).state_dict()
    restore_grad_scaler(enabled, saved)
    assert enabled.get_scale() == 64.0
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    restore_grad_scaler(disabled, saved)  # bf16 or CPU now: the saved scale does not apply
    assert not disabled.is_enabled()


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(dataset, tmp_path):
    # Dropout on, one compute thread: the masks come from (seed, rank, step), so the restart at
    # step 3 draws what the uninterrupted run drew, without any saved RNG state.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole, _ = _run(dataset, str(tmp_path / "whole"), "train.epochs=2", "model.dropout=0.5", "train.eval_every=0")
        _run(dataset, str(tmp_path / "split"), "train.epochs=1", "model.dropout=0.5", "train.eval_every=0")
        resumed, _ = _run(dataset, str(tmp_path / "split"), "train.epochs=2", "model.dropout=0.5", "train.eval_every=0")
    finally:
        torch.set_num_threads(threads)
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.e2e  # trains or exports for tens of seconds: not the fast tier
def test_other_dataset_in_the_same_output_is_refused(dataset, tmp_path):
    output = str(tmp_path / "run")
    _run(dataset, output, "train.epochs=1", "train.eval_every=0")
    other = str(tmp_path / "other")
    synthesize(other, format="ucf101", num_classes=2, videos_per_class=3, num_frames=(12, 16))
    with pytest.raises(ConfigError, match="trained on other classes"):
        _run(other, output, "train.epochs=2")


@pytest.mark.e2e
def test_two_processes_under_torchrun_from_s3_to_s3(s3_bucket, s3_env):
    data, output = f"{s3_bucket}/ucf", f"{s3_bucket}/run"
    # 9 training clips: shares of 5 and 4, so one rank runs an idle last step each epoch, and
    # checkpoints every step test that no rank waits at a barrier the other never reaches.
    synthesize(data, format="ucf101", num_classes=3, videos_per_class=5, num_frames=(12, 16))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    command = [
        torchrun, "--nproc-per-node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0",
        "-m", "actiontrain", "train", "--config", "cpu_smoke", "--data", data, "--output", output,
        "train.epochs=2", "train.batch_size=2", "data.num_workers=1", "train.checkpoint_every=1",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **s3_env}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "process group initialised: backend gloo, world size 2" in result.stderr
    manager = CheckpointManager(output)
    assert manager.latest_step() == 6  # 3 steps per epoch (the longer share: 5 clips in batches of 2)
    assert dict(TrainingState.load(manager.step_url(5)).data) == {"epoch": 1, "consumed": 8, "seed": 0, "num_samples": 9}
    assert storage.exists(f"{output}/metrics.jsonl") and storage.exists(f"{output}/training.png")
    evaluated = subprocess.run(
        [ACTIONTRAIN, "eval", "--checkpoint", output, "--data", data, "--json"],
        capture_output=True, text=True, env={**os.environ, **s3_env}, timeout=300,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["num_videos"] == 6 and 0.0 <= report["top1"] <= report["top5"] <= 1.0
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr


@pytest.mark.e2e
def test_a_rank_whose_whole_batch_is_unreadable_keeps_step_with_the_other(tmp_path):
    # Rank 1's first batch is all corrupt videos. A rank that skipped the step would reach the
    # step-1 checkpoint barrier while rank 0 waits in DDP's gradient all-reduce: a hang.
    data, output = str(tmp_path / "ucf"), str(tmp_path / "run")
    synthesize(data, format="ucf101", num_classes=3, videos_per_class=6, num_frames=(12, 16))
    from actiontrain.data.catalog import load_dataset

    samples = load_dataset(data).samples("train")
    config = load_config("cpu_smoke", [])
    sampler = ResumableDistributedSampler(len(samples), rank=1, world_size=2, seed=config.data.seed)
    sampler.set_epoch(0)
    for index in list(sampler)[:2]:
        with open(samples[index].url, "wb") as file:
            file.write(b"not a video" * 100)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    command = [
        torchrun, "--nproc-per-node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0",
        "-m", "actiontrain", "train", "--config", "cpu_smoke", "--data", data, "--output", output,
        "train.epochs=1", "train.batch_size=2", "data.num_workers=0", "train.checkpoint_every=1",
        "train.eval_every=0", "data.max_bad_fraction=0.5",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped unreadable sample" in result.stderr
    assert CheckpointManager(output).latest_step() == 3  # 12 clips, 2 ranks x batch 2


@pytest.mark.e2e  # trains or exports for tens of seconds: not the fast tier
def test_sigterm_mid_epoch_commits_a_checkpoint_of_that_step_and_the_next_start_resumes_there(dataset, tmp_path):
    output, ledger = str(tmp_path / "run"), str(tmp_path / "ledger")
    logged = ("train.eval_every=0", f"train.sample_log={ledger}")
    handler = signal.getsignal(signal.SIGTERM)
    trainer, result = _run(dataset, output, "train.epochs=2", *logged, stop_at=2)
    # 3 steps per epoch: step 2 took full batches, so it is a prefix of the epoch's order.
    assert (result.stopped_by, result.last_step, result.epochs) == ("SIGTERM", 2, 0)
    assert result.checkpoint_url == CheckpointManager(output).step_url(2)
    assert CheckpointManager(output).list_committed() == [2]
    assert dict(TrainingState.load(result.checkpoint_url).data)["consumed"] == 4
    assert signal.getsignal(signal.SIGTERM) == handler  # the handler is the run's only
    _, resumed = _run(dataset, output, "train.epochs=2", *logged)
    assert (resumed.stopped_by, resumed.last_step) == (None, 6)
    assert_exactly_once(ledger, num_samples=6, epochs=2)


def test_a_rank_that_stops_for_another_ranks_sigterm_does_not_report_a_finished_run(dataset, tmp_path, monkeypatch):
    # One node of several leaving (a scale-down, a drained node): only its ranks get SIGTERM; the
    # others learn of it from the step's agreement and must not end the job as done.
    from actiontrain.tasks import train as train_module

    agree = train_module.agree_flags
    calls = []

    def peer_asks_after_step_two(*flags):
        calls.append(flags)
        stopped, *rest = agree(*flags)
        return (stopped or len(calls) == 3, *rest)  # the start-up call, then steps 1 and 2

    monkeypatch.setattr(train_module, "agree_flags", peer_asks_after_step_two)
    output = str(tmp_path / "run")
    _, result = _run(dataset, output, "train.epochs=2", "train.eval_every=0", "train.export=true")
    assert (result.stopped_by, result.last_step, result.export_url) == (train_module.PEER_STOP, 2, None)
    assert CheckpointManager(output).list_committed() == [2]


def test_sigterm_in_the_uneven_last_step_ends_the_epoch_without_evaluating(dataset, tmp_path):
    # 6 clips in batches of 4: the second step has 2, so only the epoch's end is a prefix.
    output = str(tmp_path / "run")
    _, result = _run(dataset, output, "train.epochs=2", "train.batch_size=4", stop_at=2)
    assert (result.stopped_by, result.last_step, result.epochs) == ("SIGTERM", 2, 1)
    state = TrainingState.load(result.checkpoint_url)
    assert dict(state.data) == {"epoch": 1, "consumed": 0, "seed": 0, "num_samples": 6}
    records = [json.loads(line) for line in open(os.path.join(output, "metrics.jsonl"))]
    assert [r for r in records if r["kind"] == "eval"] == []


def test_a_stop_asked_during_start_up_trains_nothing(dataset, tmp_path):
    from actiontrain.preemption import StopRequest

    stop = StopRequest()
    stop.request()
    trainer, result = _run(dataset, str(tmp_path / "run"), "train.epochs=1", stop=stop)
    assert (result.stopped_by, result.last_step, result.checkpoint_url) == ("SIGTERM", 0, None)
    assert trainer.loader.consumed == 0


@pytest.mark.e2e  # trains or exports for tens of seconds: not the fast tier
def test_time_based_checkpoints_are_taken_at_full_batch_steps(dataset, tmp_path, caplog):
    output = str(tmp_path / "run")
    # Due at every step: the full-batch steps 1, 2, 4, 5 and the epoch ends 3, 6 (the last step
    # of an epoch is followed by its own checkpoint, not a second one).
    with caplog.at_level("INFO", logger="actiontrain"):
        _run(dataset, output, "train.epochs=2", "train.checkpoint_every_minutes=1e-9", "train.keep_last=10")
    assert CheckpointManager(output).list_committed() == [1, 2, 3, 4, 5, 6]
    assert caplog.text.count("checkpoint ") >= 6
    assert "start-up took " in caplog.text and "first step" in caplog.text
