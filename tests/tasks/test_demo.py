"""README's main job: the demo runs the whole pipeline on embedded defaults and leaves nothing behind."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import psutil
import pytest

from actiontrain.export.store import local_export

ACTIONTRAIN = os.path.join(os.path.dirname(sys.executable), "actiontrain")
STAGES = (
    "start S3 on loopback",
    "generate sample dataset",
    "check dataset (--deep)",
    "convert to Datumaro format",
    "train via TorchX (2 processes) + export",
    "pull the export (checksums verified)",
    "predict on a test video (OpenVINO, CPU)",
)


@pytest.mark.e2e
def test_demo_runs_every_stage_and_leaves_no_process_behind(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # needs no account at all
    before = {process.pid for process in psutil.process_iter()}
    result = subprocess.run(
        [ACTIONTRAIN, "demo", "--classes", "2", "--videos-per-class", "4", "--workdir", str(tmp_path / "demo")],
        capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    for stage in STAGES:
        assert re.search(rf"\[demo\] {re.escape(stage)}\s+\d+\.\d s", result.stdout), stage
    assert "world size 2" in result.stderr  # torchrun really ran two training processes
    assert re.search(r"prediction\s+v_\w+\.avi \(true: \w+\) -> \w+ \d\.\d\d", result.stdout)
    export = local_export(str(tmp_path / "demo" / "model"))  # verifies the pulled files' checksums
    assert export.manifest.classes == ["MoveLeft", "MoveRight"]
    assert (tmp_path / "demo" / "training.png").read_bytes()[:4] == b"\x89PNG"
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)", result.stdout).group(1))
    with socket.socket() as sock, pytest.raises(OSError):
        sock.connect(("127.0.0.1", port))
    leftovers = [p for p in psutil.process_iter(["pid", "cmdline"]) if p.pid not in before and p.info["cmdline"]
                 and any("actiontrain" in part or "moto" in part for part in p.info["cmdline"])]  # fmt: skip
    assert not leftovers, [p.info["cmdline"] for p in leftovers]
