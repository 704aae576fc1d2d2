"""Signals after OpenVINO ran beside multi-worker DataLoaders: no process of ours ever dies of them.

OpenVINO's CPU plugin swaps the thread's signal stack; plugins released out of order used to leave
it on freed memory, and the next signal a Python handler took (a DataLoader worker's SIGCHLD,
Ctrl-C) killed the process with SIGSEGV (scripts/repro/sigchld_segv.py). These tests run the
library and the commands in fresh processes with the default signal dispositions, as users run
them, many times.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from exported_models import motion_export, x3d_export

pytestmark = pytest.mark.e2e

ACTIONTRAIN = os.path.join(os.path.dirname(sys.executable), "actiontrain")

# Two predictors, the first released while the second lives (a loop re-binding one name), after a
# two-worker DataLoader installed torch's SIGCHLD handler; then children exit and Ctrl-C arrives.
LIBRARY_SCRIPT = """
import os, signal, subprocess, sys, time
from actiontrain.data.catalog import load_dataset
from actiontrain.data.dataset import build_clip_dataset
from actiontrain.data.loader import ClipLoader
from actiontrain.inference import Predictor
from actiontrain.recipe import load_config

export, data = sys.argv[1], sys.argv[2]
config = load_config("cpu_smoke", ["data.num_workers=2"])
clips = build_clip_dataset(load_dataset(data), subset="test", config=config.data, train=False)
loader = ClipLoader(clips, batch_size=2, shuffle=False)
loader.set_epoch(0)
for _ in loader:
    pass
for _ in range(2):
    predictor = Predictor.from_url(export)
    predictor.predict(clips.samples[0].url)
del predictor
for _ in range(20):
    subprocess.run(["true"], check=True)
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
except KeyboardInterrupt:
    print("interrupted")
print(next(line for line in open("/proc/self/status") if line.startswith("SigBlk")).strip())
"""


def _default_signals() -> dict:
    # A fresh session, no mask inherited from the test process: what a user's shell gives.
    return {"restore_signals": True, "start_new_session": True}


@pytest.mark.timeout(900)
def test_the_library_survives_children_and_ctrl_c_after_predictors_beside_loader_workers(tmp_path_factory):
    x3d, motion = x3d_export(tmp_path_factory), motion_export(tmp_path_factory)
    for attempt in range(8):
        result = subprocess.run(
            [sys.executable, "-c", LIBRARY_SCRIPT, x3d.export, motion.data],
            capture_output=True, text=True, timeout=300, **_default_signals(),
        )  # fmt: skip
        assert result.returncode == 0, f"attempt {attempt}: exit {result.returncode} ({_signal_name(result.returncode)})"
        assert result.stdout.split() == ["interrupted", "SigBlk:", "0000000000000000"], result.stdout + result.stderr[-2000:]


@pytest.mark.timeout(1500)
def test_train_with_export_and_optimize_with_two_loader_workers_never_crash(tmp_path_factory, tmp_path):
    motion = motion_export(tmp_path_factory)
    for attempt in range(2):
        output = str(tmp_path / f"run-{attempt}")
        train = [
            ACTIONTRAIN, "train", "--config", "cpu_smoke", "--data", motion.data, "--output", output,
            "train.epochs=1", "train.batch_size=4", "data.num_workers=2", "train.export=true",
        ]  # fmt: skip
        trained = subprocess.run(train, capture_output=True, text=True, timeout=600, **_default_signals())
        assert trained.returncode == 0, f"train {attempt}: exit {trained.returncode}: {trained.stderr[-2000:]}"
        # The export's recipe has data.num_workers=2: optimize's calibration and scoring loaders use it.
        optimize = [
            ACTIONTRAIN, "optimize", "--model", f"{output}/export", "--data", motion.data,
            "--output", f"{output}/int8", "--subset-size", "4",
        ]  # fmt: skip
        optimized = subprocess.run(optimize, capture_output=True, text=True, timeout=600, **_default_signals())
        assert optimized.returncode == 0, f"optimize {attempt}: exit {optimized.returncode}: {optimized.stderr[-2000:]}"


def _signal_name(returncode: int) -> str:
    if returncode < 0:
        return signal.Signals(-returncode).name
    if returncode > 128:
        return f"{signal.Signals(returncode - 128).name} in a shell"
    return "no signal"
