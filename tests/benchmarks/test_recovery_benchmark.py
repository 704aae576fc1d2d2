"""benchmarks/recovery.py: the parts that read the job's log must read what the trainer and torchrun write."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from actiontrain.metrics import StartupClock

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "recovery.py"
_spec = importlib.util.spec_from_file_location("recovery_benchmark", _PATH)
recovery = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = recovery  # dataclasses look their module up there
_spec.loader.exec_module(recovery)


def test_startup_phases_reads_the_trainers_start_up_line():
    clock = StartupClock()
    for phase in ("imports", "process group", "dataset", "first batch", "first step"):
        clock.lap(phase)
    line = f"[actiontrain r0] 04:55:59 INFO start-up took {clock.describe()}"
    total, phases = recovery._startup_phases(line)
    assert list(phases) == ["imports", "process group", "dataset", "first batch", "first step"]
    assert total == pytest.approx(sum(phases.values()), abs=0.3)


def test_wait_for_gives_up_as_soon_as_the_job_exits_without_the_line():
    job = recovery.JobLog(SimpleNamespace(stdout=io.StringIO("one\ntwo\n"), poll=lambda: 1))
    # Not "within 600 s": the exit ends the wait, not the timeout.
    with pytest.raises(RuntimeError, match=r"the job exited \(1\)(.|\n)*two"):
        job.wait_for("never", after=0, timeout=600)
    assert job.wait_for("^tw", after=0, timeout=1)[1] == "two"
