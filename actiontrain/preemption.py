"""Stopping on the scheduler's terms: SIGTERM asks for a checkpoint at the next step, not for death.

Kubernetes stops a pod (Kueue preemption, a spot node reclaimed, a drain) with SIGTERM, then
SIGKILL after ``terminationGracePeriodSeconds``; torchrun forwards the SIGTERM to every worker. A
:class:`StopRequest` turns the first SIGTERM (or SIGINT) into a flag the training loop reads once a
step; the ranks agree on it in one tiny all-reduce, so all of them stop after the same step, and
rank 0 commits a checkpoint there. A second signal is not caught: it ends the process at once (a
person pressing Ctrl-C twice), and a checkpoint cut short never counts (its commit marker is
written last).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

__all__ = ["EXIT_PREEMPTED", "StopRequest"]

logger = logging.getLogger(__name__)

EXIT_PREEMPTED = 143
"""Exit code of a training process that stopped on SIGTERM after committing its checkpoint
(128 + SIGTERM, what the shell reports for a process SIGTERM ended)."""


class StopRequest:
    """Remembers that this process was asked to stop; installed as the SIGTERM and SIGINT handler.

    Use as a context manager around the training loop: the previous handlers come back on exit.
    Outside the main thread (where Python cannot install handlers) it only carries the flag.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signal: int | None = None
        """The signal that asked, None until one did."""
        self.received_at: float | None = None
        """``time.monotonic()`` when it arrived."""
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self.signal is not None

    @property
    def name(self) -> str | None:
        """The asking signal's name (``SIGTERM``), None until one asked."""
        return None if self.signal is None else signal.Signals(self.signal).name

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Asks to stop, as the signal would (tests and callers without a signal use this)."""
        if self.signal is None:
            self.signal = signum
            self.received_at = time.monotonic()

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.request(signum)
        # The next one is not ours to soften: default handling (terminate, or KeyboardInterrupt).
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        logger.warning("%s received: stopping after this step with a checkpoint (send it again to stop at once)", name)
