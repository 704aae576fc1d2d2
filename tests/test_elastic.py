"""Fault tolerance under torchrun: a killed worker or job resumes from the newest checkpoint and,
counted from a per-sample ledger, every sample of every epoch is used exactly once, also when the
job comes back with another world size."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from ledger_audit import assert_exactly_once, used_samples
from s3_gate import S3Gate, uploading

from actiontrain import storage
from actiontrain.checkpoint import CheckpointManager
from actiontrain.data.synth import synthesize
from actiontrain.distributed import SHARED_STORE_SWITCH

TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
ACTIONTRAIN = os.path.join(os.path.dirname(sys.executable), "actiontrain")
EPOCHS = 3
HELD_STEP = 5
"""Mid-run, in epoch 1: the job is cut while it saves this step, after step 4's checkpoint."""
HELD_UPLOAD = uploading(f"/step-{HELD_STEP:08d}/state.pt")


def torchrun(nproc: int, data: str, output: str, ledger: str, *, max_restarts: int, job: str = "job-1") -> list[str]:
    # Each job its own rendezvous id, as the chart (Job UID) and TorchX (app id) give it: the ledger
    # names incarnations by run id, restart count and the round's start.
    return [
        TORCHRUN, "--nnodes", "1", "--nproc-per-node", str(nproc), "--max-restarts", str(max_restarts),
        "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", job,
        "-m", "actiontrain", "train", "--config", "cpu_smoke", "--data", data, "--output", output,
        f"train.epochs={EPOCHS}", "train.batch_size=2", "train.checkpoint_every=1", "train.eval_every=0",
        "data.num_workers=0", f"train.sample_log={ledger}",
    ]


def wait_until_held(gate: S3Gate, process: subprocess.Popen, log: Path) -> None:
    while not gate.held.wait(timeout=0.5):
        assert process.poll() is None, f"the job ended before saving step {HELD_STEP}: {log.read_text()[-3000:]}"


def resumed_steps(ledger: str) -> list[int]:
    """The step each incarnation's processes resumed from (the ledger's first lines), oldest first."""
    first_lines = {}
    for path in glob.glob(os.path.join(ledger, "*.log")):
        with open(path, encoding="utf-8") as file:
            _, step, started, name = file.readline().split()
        first_lines[name] = (float(started), int(step))
    return [step for _, step in sorted(first_lines.values())]


@pytest.fixture
def run(tmp_path, s3_bucket, s3_env):
    data = f"{s3_bucket}/ucf"
    # 3 classes x 6 videos: 12 training clips (split 1 keeps groups 2, 3, 5, 6 for training).
    synthesize(data, format="ucf101", num_classes=3, videos_per_class=6, num_frames=(12, 16))
    # As the image and launchers do: without it a restart may reconnect to the dead worker.
    return {
        "data": data,
        "output": f"{s3_bucket}/run",
        "ledger": str(tmp_path / "ledger"),
        "log": tmp_path / "torchrun.log",
        "env": {**os.environ, **s3_env, SHARED_STORE_SWITCH: "1"},
    }


@pytest.mark.e2e
def test_killed_worker_is_restarted_and_every_sample_used_once(run, s3_server):
    command = torchrun(2, run["data"], run["output"], run["ledger"], max_restarts=1)
    # The S3 traffic goes through a gate that holds step 5's checkpoint upload: rank 0 waits in
    # it, rank 1 at the barrier after it, when rank 1 is killed (a node failure, an OOM kill).
    with S3Gate(s3_server.endpoint, hold=HELD_UPLOAD) as gate, open(run["log"], "wb") as log:
        env = {**run["env"], "AWS_ENDPOINT_URL": gate.endpoint}
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_held(gate, process, run["log"])
            victim = int(sorted(glob.glob(os.path.join(run["ledger"], "*.rank1.*.log")))[0].rsplit(".pid", 1)[1][:-4])
            os.kill(victim, signal.SIGKILL)
            process.wait(timeout=600)
        finally:
            process.kill()
    output = run["log"].read_text()
    assert process.returncode == 0, output[-3000:]
    assert gate.errors == []
    # The killed incarnation, then exactly one restart, from the last checkpoint before the cut.
    assert resumed_steps(run["ledger"]) == [0, HELD_STEP - 1]
    assert CheckpointManager(run["output"]).latest_step() == EPOCHS * 3  # 12 clips / (2 x 2) per step
    assert_exactly_once(run["ledger"], num_samples=12, epochs=EPOCHS)


@pytest.mark.e2e
def test_job_killed_then_resumed_with_one_process_uses_every_sample_once(run, s3_server):
    command = torchrun(2, run["data"], run["output"], run["ledger"], max_restarts=0)
    with S3Gate(s3_server.endpoint, hold=HELD_UPLOAD) as gate, open(run["log"], "wb") as log:
        env = {**run["env"], "AWS_ENDPOINT_URL": gate.endpoint}
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_held(gate, process, run["log"])
            # The whole pod goes while step 5 is being saved: the agent and both workers (torchrun
            # starts each worker in a session of its own, so killing the agent's process group
            # would leave them running).
            pod = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
            for member in pod:
                member.kill()
            psutil.wait_procs(pod, timeout=60)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert gate.errors == []
    storage.url_to_fs(run["output"])[0].invalidate_cache()  # listed by the killed job, not by this process
    assert CheckpointManager(run["output"]).latest_step() == HELD_STEP - 1
    # The job comes back with one process: 12 clips in steps of 2 from here on.
    result = subprocess.run(
        torchrun(1, run["data"], run["output"], run["ledger"], max_restarts=0, job="job-2"),
        env=run["env"], capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from step {HELD_STEP - 1}" in result.stderr and "(was world size 2, now 1)" in result.stderr
    assert resumed_steps(run["ledger"]) == [0, HELD_STEP - 1]
    assert_exactly_once(run["ledger"], num_samples=12, epochs=EPOCHS)


def launch(nproc: int, data: str, output: str, ledger: str, *, max_restarts: int, job: str, epochs: int, extra=()):
    """README's launch line: ``actiontrain launch`` (torchrun with its elastic defaults) and train."""
    return [
        ACTIONTRAIN, "launch", "--nproc-per-node", str(nproc), "--max-restarts", str(max_restarts), "--rdzv-id", job,
        "train", "--config", "cpu_smoke", "--data", data, "--output", output, f"train.epochs={epochs}",
        "train.batch_size=1", "train.eval_every=0", f"train.sample_log={ledger}", *extra,
    ]  # fmt: skip


def wait_for(predicate, timeout: float = 300) -> None:
    """Polls ``predicate`` until it holds; ``timeout`` only guards against a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def ledger_mentions(ledger: str, needle: str) -> bool:
    for path in glob.glob(os.path.join(ledger, "*.log")):
        with open(path, encoding="utf-8") as file:
            if needle in file.read():
                return True
    return False


def steps_in(ledger: str) -> list[int]:
    steps = []
    for path in glob.glob(os.path.join(ledger, "*.log")):
        with open(path, encoding="utf-8") as file:
            steps += [int(line.split()[2]) for line in file if line.startswith("sample ") and len(line.split()) == 4]
    return steps


@pytest.mark.e2e
def test_sigterm_to_torchrun_commits_a_checkpoint_at_that_step_and_the_next_start_resumes_there(run):
    # 12 clips, 2 processes, batch 1: 6 steps per epoch. One DataLoader worker per rank: torchrun
    # signals each worker's whole process group, which must not kill the loader's workers.
    env = {key: value for key, value in run["env"].items() if key != SHARED_STORE_SWITCH}
    command = launch(2, run["data"], run["output"], run["ledger"], max_restarts=0, job="job-1", epochs=2,
                     extra=["data.num_workers=1"])  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: ledger_mentions(run["ledger"], "sample 0 2 "))
        process.send_signal(signal.SIGTERM)  # what the kubelet sends the container's main process
        # How long it takes is benchmarks/recovery.py's figure; the timeout only guards a hang.
        output, _ = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 143, output[-3000:]  # launch: 128 + SIGTERM, where torchrun exits 1
    stopped = CheckpointManager(run["output"]).latest_step()
    assert f"stopped on SIGTERM after step {stopped} " in output, output[-3000:]
    assert "the next start resumes there" in output
    assert "Traceback" not in output and "exited unexpectedly" not in output, output[-3000:]
    assert 2 <= stopped < 2 * 6 and max(steps_in(run["ledger"])) == stopped  # no step after it
    result = subprocess.run(
        launch(2, run["data"], run["output"], run["ledger"], max_restarts=0, job="job-2", epochs=2),
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from step {stopped}:" in result.stderr
    assert_exactly_once(run["ledger"], num_samples=12, epochs=2)


@pytest.mark.e2e
def test_five_worker_kills_in_a_row_under_the_launch_line_each_restart_succeeds(run):
    # As a user launching by hand would: no TORCH_DISABLE_SHARE_RDZV_TCP_STORE in the environment.
    env = {key: value for key, value in run["env"].items() if key != SHARED_STORE_SWITCH}
    kills = 5
    command = launch(2, run["data"], run["output"], run["ledger"], max_restarts=kills, job="job-1", epochs=3,
                     extra=["train.checkpoint_every=1", "data.num_workers=0"])  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for restart in range(kills):
            # Kill rank 1 of incarnation `restart` once it trained a step: the next one must rejoin.
            pattern = os.path.join(run["ledger"], f"job-1.{restart}.*.rank1.*.log")
            wait_for(lambda: any("sample " in open(path).read() for path in glob.glob(pattern)))  # noqa: B023
            (path,) = glob.glob(pattern)
            os.kill(int(path.rsplit(".pid", 1)[1][:-4]), signal.SIGKILL)
        output, _ = process.communicate(timeout=600)
    finally:
        process.kill()
    assert process.returncode == 0, output[-3000:]
    incarnations = {os.path.basename(p).split(".rank")[0] for p in glob.glob(os.path.join(run["ledger"], "*.log"))}
    # run id, restart count, the round's start: one name per round, shared by its ranks.
    assert sorted(name.rsplit(".", 1)[0] for name in incarnations) == [f"job-1.{r}" for r in range(kills + 1)]
    assert_exactly_once(run["ledger"], num_samples=12, epochs=3)


def test_ledger_drops_steps_redone_after_a_resume(tmp_path):
    (tmp_path / "a.0.rank0.pid1.log").write_text(
        "resume 0 1.0 a.0\nsample 0 1 0\nsample 0 2 1\nsample 0 3 2\nsample 0 4 3\nsample 0 5"  # cut by SIGKILL
    )
    (tmp_path / "a.1.rank0.pid2.log").write_text("resume 2 5.0 a.1\nsample 0 3 2\nsample 0 4 3\n")
    assert used_samples(str(tmp_path)) == {0: Counter({0: 1, 1: 1, 2: 1, 3: 1})}
    # A resume that lost its place (repeats sample 1, done at step 2 and kept) is caught.
    (tmp_path / "b.0.rank0.pid3.log").write_text("resume 4 9.0 b.0\nsample 0 5 1\n")
    assert used_samples(str(tmp_path))[0][1] == 2
