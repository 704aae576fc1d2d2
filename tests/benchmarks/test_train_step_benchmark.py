"""benchmarks/train_step.py: the parts that must work on the models the trainer really builds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from actiontrain.model import build_model

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "train_step.py"
_spec = importlib.util.spec_from_file_location("train_step_benchmark", _PATH)
train_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_step)


def test_flat_parameters_reads_a_channels_last_model_like_a_contiguous_one():
    model = build_model(variant="xs", num_classes=3, clip_len=4, crop_size=32)
    contiguous = train_step.flat_parameters(model)
    model.to(memory_format=torch.channels_last_3d)  # the trainer's layout, CPU included
    assert torch.equal(train_step.flat_parameters(model), contiguous)
    assert contiguous.numel() == sum(parameter.numel() for parameter in model.parameters())
