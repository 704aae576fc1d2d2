"""The processes a test started, found through this process's own tree, orphans included.

A process whose parent exits is re-parented to the nearest ancestor that is a "child subreaper"
(Linux's PR_SET_CHILD_SUBREAPER), init otherwise. Made a subreaper for the block, the test process
keeps every descendant of what it starts in its tree, even one whose parent left it behind: a
leak check then looks at the test's own processes only, never at whatever else runs on the machine.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator

import psutil

__all__ = ["descendants_left_behind"]

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


def _prctl(option: int, argument: int | ctypes.c_void_p) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, argument, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


@contextlib.contextmanager
def descendants_left_behind() -> Iterator[Callable[[], list[str]]]:
    """Yields a function listing the live processes started in the block (``PID: command``).

    Processes that were this process's descendants before the block are not listed. On leaving
    the block, any listed process still alive is killed, so one test's leak does not disturb the
    next, and the subreaper setting goes back to what it was.
    """
    me = psutil.Process()
    before = {child.pid for child in me.children(recursive=True)}
    was = ctypes.c_int(0)
    _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.cast(ctypes.byref(was), ctypes.c_void_p))
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)

    def started() -> list[psutil.Process]:
        alive = []
        for process in me.children(recursive=True):
            try:
                if process.pid not in before and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except psutil.NoSuchProcess:
                continue
        return alive

    def left_behind() -> list[str]:
        described = []
        for process in started():
            try:
                described.append(f"{process.pid}: {' '.join(process.cmdline())}")
            except psutil.NoSuchProcess:
                continue
        return described

    try:
        yield left_behind
    finally:
        leftovers = started()
        for process in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(leftovers, timeout=30)
        _prctl(_PR_SET_CHILD_SUBREAPER, was.value)
