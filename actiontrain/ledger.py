"""The per-sample ledger (``train.sample_log``): which sample went into which step, for audits and tests.

Each process of each incarnation of a run (a torchrun restart, a resubmitted job) appends to its own
file ``RUNID.RESTART.rankR.pidP.log``:

    resume STEP TIME INCARNATION     first line: the step this incarnation resumed from
    sample EPOCH STEP INDEX          one line per sample of every step
    checkpoint STEP                  a checkpoint committed at STEP

Steps that an earlier incarnation logged after the step a later one resumed from were redone:
an auditor (``tests/ledger_audit.py``) drops them and counts how often each sample went into the
final model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

__all__ = ["SampleLedger"]


class SampleLedger:
    """Appends this process's lines to its own file in ``folder``; every line reaches the disk at once."""

    def __init__(self, folder: str, *, rank: int, resumed_step: int, incarnation: str | None = None) -> None:
        """``incarnation`` names the process group this process belongs to, the same on all its ranks
        and new for each restart round (the trainer agrees on one); default: torchrun's run id and
        this agent's restart count, which a replaced node's fresh agent starts again from 0."""
        os.makedirs(folder, exist_ok=True)
        if incarnation is None:
            incarnation = f"{os.environ.get('TORCHELASTIC_RUN_ID', 'local')}.{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        path = os.path.join(folder, f"{incarnation}.rank{rank}.pid{os.getpid()}.log")
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run
        self._write(f"resume {resumed_step} {time.time():.6f} {incarnation}\n")

    def record(self, *, epoch: int, step: int, indices: Iterable[int]) -> None:
        """The samples of one step of this process."""
        self._write("".join(f"sample {epoch} {step} {index}\n" for index in indices))

    def checkpoint(self, step: int) -> None:
        """A checkpoint of ``step`` was committed."""
        self._write(f"checkpoint {step}\n")

    def close(self) -> None:
        self._file.close()

    def _write(self, text: str) -> None:
        # fsync: a SIGKILLed process must not lose lines of steps that reached a checkpoint.
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())
