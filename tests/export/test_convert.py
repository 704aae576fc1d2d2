"""PyTorch to OpenVINO: the IR's interface, Model API metadata and compatibility, the parity check."""

from __future__ import annotations

import ctypes
import gc

import numpy as np
import openvino as ov
import pytest
import torch
from exported_models import motion_export, x3d_export
from model_api.models import Model
from torch import nn
from torchvision.transforms.v2 import functional as F

from actiontrain import storage
from actiontrain.data.sampling import eval_clip_indices
from actiontrain.data.transforms import build_eval_transform
from actiontrain.data.video import open_media
from actiontrain.errors import ExportError
from actiontrain.export import export_model
from actiontrain.export.convert import PARITY_TOLERANCES, Parity, model_info, openvino_core
from actiontrain.export.manifest import MODEL_BIN
from actiontrain.export.store import local_export
from actiontrain.inference import Predictor
from actiontrain.recipe import load_config


@pytest.fixture(scope="module")
def x3d(tmp_path_factory):
    return x3d_export(tmp_path_factory)


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    return motion_export(tmp_path_factory)


class ToyNet(nn.Module):
    """A small 3D CNN: converts in a second, has weights worth compressing."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 32, 3, padding=1)
        self.head = nn.Linear(32, num_classes)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(clips)).mean(dim=(2, 3, 4)))


class TraceTrap(ToyNet):
    """Python control flow on the data: tracing keeps the branch of the example input (zeros)."""

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        logits = super().forward(clips)
        if float(clips.mean()) > 0.1:
            return logits + 1.0
        return logits


def test_model_info_is_what_model_api_reads():
    config = load_config("cpu_smoke")
    info = model_info(config=config, classes=["Swiping Left", "Thumb Up"])
    assert info["model_type"] == "Action Classification"
    assert info["labels"] == "Swiping_Left Thumb_Up"  # Model API splits labels on whitespace
    assert info["mean_values"] == "114.75 114.75 114.75"  # 0.45 * 255
    assert info["scale_values"] == "57.375 57.375 57.375"  # 0.225 * 255
    assert info["resize_type"] == "standard" and info["reverse_input_channels"] == "False"


def test_x3d_ir_takes_one_nscthw_view_and_carries_model_info(x3d):
    model = openvino_core().read_model(str(local_export(x3d.export).model_xml))
    (inputs,), (outputs,) = model.inputs, model.outputs
    assert inputs.get_any_name() == "clip" and list(inputs.shape) == [1, 1, 3, 4, 64, 64]
    assert ov.layout_helpers.get_layout(inputs).to_string() == "[N,S,C,T,H,W]"
    assert outputs.get_any_name() == "logits" and list(outputs.shape) == [1, 3]
    assert model.get_rt_info(["model_info", "model_type"]).astype(str) == "Action Classification"
    assert model.get_rt_info(["model_info", "labels"]).astype(str) == "MoveLeft MoveRight MoveUp"


def test_x3d_parity_is_checked_and_recorded(x3d):
    parity = x3d.result.parity
    assert parity.passed and parity.num_clips == 4 and parity.top1_agreement == 1.0
    atol, rtol = PARITY_TOLERANCES["fp32"]
    assert parity.max_abs_diff <= parity.tolerance == pytest.approx(atol + rtol * parity.max_abs_logit)
    assert x3d.result.manifest.parity["max_abs_diff"] == parity.max_abs_diff


def test_a_model_that_converts_wrongly_fails_the_export_and_writes_nothing(tmp_path):
    config = load_config("cpu_smoke")
    clips = torch.full((2, 3, 4, 64, 64), 0.5)  # takes the branch the trace did not see
    output = str(tmp_path / "export")
    with pytest.raises(ExportError, match=r"OpenVINO disagrees with PyTorch: parity on 2 clips: max \|logit diff\| 1.00e\+00"):
        export_model(TraceTrap(), classes=["a", "b", "c"], config=config, output_url=output, parity_clips=clips)
    assert not storage.exists(output)


def test_fp16_halves_the_weights_and_gets_the_looser_tolerance(tmp_path):
    config = load_config("cpu_smoke")
    torch.manual_seed(0)
    model = ToyNet()
    results = {
        precision: export_model(
            model, classes=["a", "b", "c"], config=config, output_url=str(tmp_path / precision), precision=precision
        )
        for precision in ("fp32", "fp16")
    }
    sizes = {precision: (tmp_path / precision / MODEL_BIN).stat().st_size for precision in results}
    assert sizes["fp16"] < 0.6 * sizes["fp32"]
    fp16 = results["fp16"]
    assert fp16.manifest.precision == "fp16" and fp16.parity.passed
    atol, rtol = PARITY_TOLERANCES["fp16"]
    assert fp16.parity.tolerance == pytest.approx(atol + rtol * fp16.parity.max_abs_logit)
    assert fp16.parity.tolerance > results["fp32"].parity.tolerance


def _parity(**changes) -> Parity:
    values = {"num_clips": 4, "max_abs_diff": 0.01, "max_abs_logit": 2.0, "tolerance": 0.1, "top1_agreement": 0.75,
              "precision": "fp32", "inference_precision": "f32"}
    return Parity(**{**values, **changes})


def test_below_f32_the_classes_must_agree_too():
    # At f32 a disagreement within tolerance is a near-tie; bf16's wider tolerance lets real flips through.
    assert _parity().passed
    assert not _parity(inference_precision="bf16").passed
    assert _parity(inference_precision="bf16", top1_agreement=1.0).passed
    assert not _parity(inference_precision="bf16", top1_agreement=1.0, max_abs_diff=0.2).passed


def test_a_recorded_parity_is_judged_again_not_trusted():
    record = {**_parity(max_abs_diff=0.5).to_dict(), "passed": True}
    assert Parity.from_dict(record) == _parity(max_abs_diff=0.5) and not Parity.from_dict(record).passed
    assert Parity.from_dict({k: v for k, v in record.items() if k != "inference_precision"}).inference_precision == "f32"


def test_the_callers_model_is_left_as_it_was(tmp_path):
    model = ToyNet().train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    export_model(model, classes=["a", "b", "c"], config=load_config("cpu_smoke"), output_url=str(tmp_path / "e"))
    assert model.training
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def cropped_frames(url: str, config) -> np.ndarray:
    """One clip as Model API takes it: ``(T, H, W, 3)`` uint8 RGB, short side resized and centre-cropped."""
    data = config.data
    with open_media(url) as reader:
        (indices,) = eval_clip_indices(
            reader.num_frames, clip_len=data.clip_len, frame_interval=data.frame_interval, num_clips=1
        )
        frames = reader.get_frames(indices)
    frames = F.center_crop(F.resize(frames, data.eval_short_side, antialias=True), [data.crop_size] * 2)
    return frames.permute(0, 2, 3, 1).numpy()


def _signal_stack_is_usable() -> bool:
    """Whether this thread's alternate signal stack is disabled or lies in mapped memory."""

    class Stack(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    current = Stack()
    assert ctypes.CDLL(None, use_errno=True).sigaltstack(None, ctypes.byref(current)) == 0
    if current.ss_flags & 2:  # SS_DISABLE
        return True
    with open("/proc/self/maps") as maps:
        ranges = [tuple(int(bound, 16) for bound in line.split()[0].split("-")) for line in maps]
    return any(start <= current.ss_sp and current.ss_sp + current.ss_size <= end for start, end in ranges)


def test_models_released_in_the_order_they_were_made_leave_the_signal_stack_mapped(x3d):
    # Each OpenVINO Core's CPU plugin swaps the thread's signal stack and frees its own when
    # released; released in creation order, two of them left it on freed memory and the next
    # signal handled in Python killed the process (scripts/repro/sigchld_segv.py). One Core for
    # the whole package: predictors share its plugin.
    first = Predictor.from_url(x3d.export)
    second = Predictor.from_url(x3d.export)
    del first
    gc.collect()
    del second
    gc.collect()
    assert _signal_stack_is_usable()


def test_model_api_classifies_the_test_videos_like_the_label(motion):
    wrapper = Model.create_model(str(local_export(motion.export).model_xml), device="CPU")
    assert type(wrapper).__name__ == "ActionClassificationModel"
    for sample in motion.test_samples:
        (label,) = wrapper(cropped_frames(sample.url, motion.config)).top_labels
        assert (label.id, label.name) == (sample.label, motion.classes[sample.label]), sample.url


def test_model_api_preprocesses_and_scores_like_us_on_x3d(x3d, motion):
    wrapper = Model.create_model(str(local_export(x3d.export).model_xml), device="CPU")
    # The device defaults Model API runs with (bf16 on CPUs that have it): what differs is preprocessing.
    predictor = Predictor.from_url(x3d.export, inference_precision=None)
    data = x3d.config.data
    normalize = build_eval_transform(
        short_side=data.eval_short_side, crop_size=data.crop_size, mean=data.mean, std=data.std
    )
    for sample in motion.test_samples[:3]:
        frames = cropped_frames(sample.url, x3d.config)
        inputs, _ = wrapper.base_preprocess(frames)
        theirs = next(iter(wrapper.infer_sync(inputs).values()))[0]
        ours = predictor.logits(normalize(torch.from_numpy(frames).permute(0, 3, 1, 2)))[0].numpy()
        np.testing.assert_allclose(theirs, ours, rtol=1e-2, atol=1e-2 * np.abs(ours).max())
        (label,) = wrapper(frames).top_labels
        assert label.id == int(theirs.argmax()) and label.name == x3d.classes[label.id]
