"""process_tree.py: a leak check sees what the test started, orphans included, and nothing else."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest
from process_tree import descendants_left_behind

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]

# End-to-end: both tests start processes.
pytestmark = pytest.mark.e2e


def test_an_orphaned_grandchild_is_listed_then_killed_with_the_block():
    with descendants_left_behind() as left_behind:
        # The shell starts the sleeper in the background and exits: its parent is gone.
        result = subprocess.run(
            ["/bin/sh", "-c", 'exec "$@" >/dev/null 2>&1 &\necho $!', "sh", *SLEEPER],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        orphan = psutil.Process(int(result.stdout))
        assert orphan.ppid() == psutil.Process().pid  # adopted by this process, not by init
        assert [line.split(":", 1)[0] for line in left_behind()] == [str(orphan.pid)]
    assert not orphan.is_running()


def test_what_ran_before_the_block_or_ended_in_it_is_not_listed():
    with subprocess.Popen(SLEEPER) as earlier:
        try:
            with descendants_left_behind() as left_behind:
                subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=30)
                assert left_behind() == []
            assert earlier.poll() is None  # not killed: not the block's
        finally:
            earlier.kill()
