"""benchmarks/gpu_check.py: one line and exit 2 without a GPU; the same path runs end to end on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.mark.e2e
def test_without_a_gpu_it_says_so_in_one_line_and_exits_2():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, also on a machine that has one
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no usable CUDA GPU here"), result.stderr


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_the_cpu_run_of_the_same_path_ends_with_its_figures_as_json():
    command = [
        sys.executable, str(SCRIPT), "--device", "cpu", "--recipe", "cpu_smoke", "--steps", "30",
        "--videos-per-class", "3", "--workers", "1", "--override", "train.batch_size=2",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=840)
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: the loss did not fall in 30 steps
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert [run["source"] for run in figures["runs"]] == ["local", "s3"]
    for run in [*figures["runs"], *figures["worker_sweep"]]:
        assert run["steps"] >= 30 and run["throughput(clips/s)"] > 0
        assert 0 <= run["time/data_wait(%)"] <= 100
        assert run["memory/cuda_max_allocated(GiB)"] is None  # no GPU memory on the CPU
    assert figures["loss_fell"] == all(run["loss_fell"] for run in figures["runs"])
