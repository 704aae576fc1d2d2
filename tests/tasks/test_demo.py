"""README's main job: the demo runs the whole pipeline on embedded defaults, ends with a model that has
learned the four motions (the small recipe's 4-class learnability check), and leaves nothing behind."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest
from process_tree import descendants_left_behind

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
@pytest.mark.timeout(2400)
def test_demo_on_defaults_ends_with_a_model_that_learned_and_leaves_no_process_behind(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # needs no account at all
    with descendants_left_behind() as left_behind:
        result = subprocess.run(
            [ACTIONTRAIN, "demo", "--workdir", str(tmp_path / "demo")],
            capture_output=True, text=True, env=env, timeout=2000, cwd=tmp_path,
        )  # fmt: skip
        leftovers = left_behind()
    assert result.returncode == 0, result.stderr[-5000:]
    for stage in STAGES:
        assert re.search(rf"\[demo\] {re.escape(stage)}\s+\d+\.\d s", result.stdout), stage
    assert "world size 2" in result.stderr  # torchrun really ran two training processes
    prediction = re.search(r"prediction\s+v_\w+\.avi \(true: (\w+)\) -> (\w+) \d\.\d\d.* \((correct|wrong)\)", result.stdout)
    assert prediction and prediction.group(1) == prediction.group(2) and prediction.group(3) == "correct", result.stdout
    export = local_export(str(tmp_path / "demo" / "model"))  # verifies the pulled files' checksums
    assert export.manifest.classes == ["MoveLeft", "MoveRight", "MoveUp", "MoveDown"]
    assert export.manifest.metrics["top1"] >= 0.9, export.manifest.metrics
    confusion = export.manifest.metrics["confusion"]
    for true, row in enumerate(confusion):  # the diagonal holds most of every row
        assert row[true] > sum(row) / 2, confusion
    assert "validation top-1 at export" in result.stdout and "validation confusion matrix" in result.stdout
    # No library noise in the log: pytorchvideo's per-step DeprecationWarning, matplotlib's cache line.
    assert "saved_variables" not in result.stderr and "Matplotlib is building the font cache" not in result.stderr
    assert (tmp_path / "demo" / "training.png").read_bytes()[:4] == b"\x89PNG"
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)", result.stdout).group(1))
    with socket.socket() as sock, pytest.raises(OSError):
        sock.connect(("127.0.0.1", port))
    assert leftovers == []  # the demo's own process tree only: other jobs on the machine do not count
