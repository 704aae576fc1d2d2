"""README's main job: the demo runs every stage on embedded defaults and leaves nothing behind."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

ACTIONTRAIN = os.path.join(os.path.dirname(sys.executable), "actiontrain")


@pytest.mark.e2e
def test_demo_runs_every_stage_and_stops_its_server():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # needs no account at all
    result = subprocess.run(
        [ACTIONTRAIN, "demo", "--classes", "2", "--videos-per-class", "3"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    for stage in ("start S3 on loopback", "generate sample dataset", "check dataset", "convert to Datumaro", "stream one epoch"):
        assert stage in result.stdout
    assert "clip shape (C,T,H,W)                     (3, 8, 224, 224)" in result.stdout
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)", result.stdout).group(1))
    with socket.socket() as sock, pytest.raises(OSError):
        sock.connect(("127.0.0.1", port))
