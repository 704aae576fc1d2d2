"""PyTorch X3D to OpenVINO: an NSCTHW input, Model API metadata, and a parity check against PyTorch."""

from __future__ import annotations

import copy
import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch
from torch import nn

from actiontrain.config import Config
from actiontrain.errors import ConfigError
from actiontrain.export.manifest import input_shape
from actiontrain.model import memory_format_for

__all__ = [
    "INFERENCE_TOLERANCES",
    "INPUT_LAYOUT",
    "INPUT_NAME",
    "MIN_TOP1_AGREEMENT",
    "MODEL_TYPE",
    "OUTPUT_NAME",
    "PARITY_TOLERANCES",
    "Parity",
    "check_parity",
    "compile_model",
    "compiled_precision",
    "convert_to_openvino",
    "default_inference_precision",
    "model_info",
    "openvino_core",
    "read_batched_model",
    "set_model_info",
    "synthetic_clips",
]

INPUT_NAME = "clip"
OUTPUT_NAME = "logits"
INPUT_LAYOUT = "NSCTHW"
"""OpenVINO Training Extensions 2.x's video layout: Model API reads S, C, T, H, W from it."""
MODEL_TYPE = "Action Classification"
"""``model_info/model_type``: the name of Model API's ``ActionClassificationModel``."""
PARITY_TOLERANCES = {"fp32": (1e-3, 1e-3), "fp16": (5e-2, 2e-2)}
"""``(atol, rtol)`` per weight precision: OpenVINO and PyTorch logits may differ by at most
``atol + rtol * max|PyTorch logit|``. fp16 weights round to 11 significant bits."""
INFERENCE_TOLERANCES = {"f32": (0.0, 0.0), "f16": (5e-2, 2e-2), "bf16": (1e-1, 5e-2)}
"""``(atol, rtol)`` added on top of :data:`PARITY_TOLERANCES` per OpenVINO inference precision:
activations in f16 keep 11 significant bits, in bf16 only 8, and the error grows with depth."""
MIN_TOP1_AGREEMENT = 0.99
"""Below f32, a precision is used only when at least this fraction of clips keeps its top-1 class."""


class _VideoViews(nn.Module):
    """``(N, S, C, T, H, W)`` views -> ``(N, K)`` logits averaged over the S views of each video."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        batch, num_views = views.shape[:2]
        logits = self.model(views.flatten(0, 1))
        return logits.view(batch, num_views, -1).mean(dim=1)


def model_info(*, config: Config, classes: Sequence[str]) -> dict[str, str]:
    """``rt_info/model_info`` entries that make Model API's ``ActionClassificationModel`` preprocess like us.

    Model API resizes each ``(H, W, 3)`` frame to the crop size, then computes
    ``(x - mean_values) / scale_values`` on the 0-255 scale: our ``(x / 255 - mean) / std``.
    ``standard`` is a plain resize: fed frames already centre-cropped to the crop size (what
    ``actiontrain predict`` samples) it changes nothing; Model API's ``crop`` mode cannot be used
    for video (its resize function does not take the ``pad_value`` that the video wrapper passes).
    Model API splits ``labels`` on whitespace, so spaces in class names become underscores; the
    manifest keeps the real names.
    """
    data = config.data
    return {
        "model_type": MODEL_TYPE,
        "task_type": "action classification",
        "labels": " ".join(name.replace(" ", "_") for name in classes),
        "mean_values": " ".join(_number(255.0 * value) for value in data.mean),
        "scale_values": " ".join(_number(255.0 * value) for value in data.std),
        "resize_type": "standard",
        # Frames are RGB, as our decoders return them; callers reading with OpenCV (BGR) convert first.
        "reverse_input_channels": "False",
        "pad_value": "0",
    }


def _number(value: float) -> str:
    return f"{value:.6g}"


def set_model_info(model: ov.Model, info: dict[str, str]) -> None:
    """Writes ``info`` under ``rt_info/model_info`` of ``model``."""
    for key, value in info.items():
        model.set_rt_info(value, ["model_info", key])


def convert_to_openvino(model: nn.Module, *, config: Config, classes: Sequence[str]) -> ov.Model:
    """Converts an X3D classifier to an OpenVINO model that takes one NSCTHW view, with Model API metadata.

    The model is copied (the caller's stays where and how it was: device, dtype, mode), traced
    once on the CPU in float32 and converted with ``openvino.convert_model``: no ONNX file.

    Args:
        model: Maps ``(N, 3, T, H, W)`` float clips to ``(N, K)`` logits; a DDP wrapper is unwrapped.
        config: The recipe it was trained with (clip length, crop size, normalisation).
        classes: Its class names, ``K`` of them.

    Returns:
        A static-shape model: input ``clip`` ``(1, 1, 3, T, H, W)`` float32 layout NSCTHW,
        output ``logits`` ``(1, K)``.
    """
    network = _cpu_copy(model)
    example = torch.zeros(input_shape(config))
    with torch.no_grad(), warnings.catch_warnings():
        # torch.jit.trace is what OpenVINO's PyTorch frontend reads; its deprecation notice and
        # tracer warnings say nothing about this model (parity is checked on the result instead).
        warnings.simplefilter("ignore")
        # check_trace would run the model twice more only to compare traces; parity checks the result.
        traced = torch.jit.trace(_VideoViews(network), example, check_trace=False)
        converted = ov.convert_model(traced, example_input=example, input=[ov.PartialShape(list(example.shape))])
    converted.input(0).get_tensor().set_names({INPUT_NAME})
    converted.input(0).get_node().set_layout(ov.Layout(INPUT_LAYOUT))
    converted.output(0).get_tensor().set_names({OUTPUT_NAME})
    set_model_info(converted, model_info(config=config, classes=classes))
    return converted


def _cpu_copy(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return copy.deepcopy(model).to("cpu", torch.float32, memory_format=torch.contiguous_format).eval()


@functools.cache
def openvino_core() -> ov.Core:
    """The process's one ``ov.Core``: every model this package compiles shares its device plugins.

    Each Core loads its own CPU plugin, and the plugin's constructor replaces the calling thread's
    signal stack (``sigaltstack``) with one it allocates, saving the previous one; its destructor
    frees that stack, but restores the saved one only if its own is still current. Two plugins
    released in the order they were made (two predictors, one re-bound after the other) leave
    the thread's signal stack on freed memory, and the next signal handled in Python (a DataLoader
    worker's SIGCHLD, Ctrl-C) kills the process with SIGSEGV (scripts/repro/sigchld_segv.py). One
    Core means one plugin for the whole process: the stack is swapped once and never freed.
    """
    return ov.Core()


def default_inference_precision(device: str = "CPU") -> str:
    """OpenVINO's default ``INFERENCE_PRECISION_HINT`` on ``device`` here: ``f32``, ``bf16`` or ``f16``.

    bf16 on CPUs with AVX512-BF16 or AMX, f16 on those with AVX512-FP16/AMX-FP16 (and on GPUs),
    f32 elsewhere (AVX2-only CPUs): what a model server such as OVMS runs with unless told otherwise.

    Raises:
        ConfigError: the device is not available.
    """
    try:
        return _precision_name(openvino_core().get_property(device, "INFERENCE_PRECISION_HINT"))
    except RuntimeError as error:
        raise _device_error("use", device, error) from error


def _device_error(doing: str, device: str, error: RuntimeError) -> ConfigError:
    available = ", ".join(openvino_core().available_devices) or "none"
    first = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return ConfigError(f"cannot {doing} OpenVINO device {device!r} (available: {available}): {first}")


def compiled_precision(compiled: ov.CompiledModel) -> str:
    """The inference precision a compiled model really computes in (OpenVINO falls back to f32 where
    the hardware lacks the asked one, so this, not the hint passed, is what a report may name)."""
    return _precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))


def _precision_name(value: object) -> str:
    return value.to_string() if isinstance(value, ov.Type) else str(value)


def read_batched_model(xml: str | Path) -> ov.Model:
    """The IR at ``xml`` with a dynamic batch: ``(N, 1, 3, T, H, W)`` views in, ``(N, K)`` logits out.

    The file keeps N = S = 1, what Model API and model servers expect; reshaping the loaded
    model lets one inference score all the views of a video, or of several videos.
    """
    model = openvino_core().read_model(str(xml))
    shape = model.input(0).get_partial_shape()
    shape[0] = ov.Dimension.dynamic()
    model.reshape({model.input(0): shape})
    return model


def compile_model(
    model: ov.Model | str | Path, *, device: str = "CPU", inference_precision: str | None = "f32", latency: bool = True
) -> ov.CompiledModel:
    """Compiles an OpenVINO model (or IR file) for ``device``.

    Args:
        model: The model, or the path of its ``model.xml``.
        device: An OpenVINO device name (``CPU``, ``GPU``, ``AUTO``...).
        inference_precision: OpenVINO's ``INFERENCE_PRECISION_HINT`` (``f32``, ``bf16``, ``f16``);
            None keeps the device's default, which on CPUs with AVX512-BF16 or AMX is bf16.
            Float32 by default, so an FP32 export computes in float32 wherever it runs.
        latency: Optimise for one request at a time (``PERFORMANCE_HINT=LATENCY``) rather than throughput.

    Raises:
        ConfigError: the device is not available.
    """
    core = openvino_core()
    properties = {"PERFORMANCE_HINT": "LATENCY" if latency else "THROUGHPUT"}
    if inference_precision:
        properties["INFERENCE_PRECISION_HINT"] = inference_precision
    try:
        return core.compile_model(str(model) if isinstance(model, Path) else model, device, properties)
    except RuntimeError as error:
        raise _device_error("compile the model for", device, error) from error


@dataclass(frozen=True, kw_only=True)
class Parity:
    """PyTorch vs OpenVINO logits on the same clips."""

    num_clips: int
    max_abs_diff: float
    """Largest absolute difference of any logit."""
    max_abs_logit: float
    """Largest absolute PyTorch logit (the scale of the relative tolerance)."""
    tolerance: float
    """``atol + rtol * max_abs_logit`` for the export's precision."""
    top1_agreement: float
    """Fraction of clips whose most likely class is the same in both."""
    precision: str
    """The export's weights (``fp32``, ``fp16``)."""
    inference_precision: str = "f32"
    """What OpenVINO computed in, as the compiled model reports it (``f32``, ``bf16``, ``f16``)."""

    @property
    def passed(self) -> bool:
        # Within tolerance, a top-1 disagreement can only be a near-tie (two logits closer than
        # twice the tolerance), so at f32 the difference alone decides; below f32 the tolerance is
        # wide enough for real flips, so the classes must agree too.
        within = math.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.tolerance
        return within and (self.inference_precision == "f32" or self.top1_agreement >= MIN_TOP1_AGREEMENT)

    def to_dict(self) -> dict[str, float | int | str | bool]:
        return {**asdict(self), "passed": self.passed}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Parity:
        """A parity recorded in a manifest (``to_dict``); ``passed`` is derived again, never trusted."""
        fields = {name: record[name] for name in cls.__dataclass_fields__ if name in record}
        return cls(**fields)

    def describe(self) -> str:
        return (
            f"parity on {self.num_clips} clips: max |logit diff| {self.max_abs_diff:.2e} "
            f"(tolerance {self.tolerance:.2e}, {self.precision} weights, {self.inference_precision} inference), "
            f"top-1 agreement {self.top1_agreement:.0%}"
        )


def synthetic_clips(config: Config, *, num_clips: int = 4, seed: int = 0) -> torch.Tensor:
    """Reproducible stand-in clips ``(N, 3, T, H, W)``: smooth random images, normalised like real frames.

    For when no real clips are at hand (exporting a checkpoint without its dataset).
    """
    data = config.data
    generator = torch.Generator().manual_seed(seed)
    _, _, channels, frames, height, width = input_shape(config)
    # Low-resolution noise upsampled: image-like structure instead of pixel noise.
    coarse = torch.rand(num_clips, channels, frames, max(height // 8, 1), max(width // 8, 1), generator=generator)
    pixels = nn.functional.interpolate(coarse, size=(frames, height, width), mode="trilinear", align_corners=False)
    mean = torch.tensor(data.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1, 1)
    return (pixels - mean) / std


def check_parity(
    model: nn.Module, compiled: ov.CompiledModel, clips: torch.Tensor, *, precision: str
) -> Parity:
    """Runs PyTorch and OpenVINO on the same clips and compares their logits.

    Args:
        model: The PyTorch classifier (copied to the CPU in float32; the caller's is untouched).
        compiled: The OpenVINO model, compiled from the written IR; the precision it computes in
            (:func:`compiled_precision`) widens the tolerance (:data:`INFERENCE_TOLERANCES`).
        clips: ``(N, 3, T, H, W)`` normalised clips of the export's input size.
        precision: The export's weight precision; picks the tolerance (:data:`PARITY_TOLERANCES`).
    """
    if clips.ndim != 5 or clips.shape[0] < 1:
        raise ConfigError(f"parity clips must be a (N, 3, T, H, W) tensor with N >= 1, got shape {tuple(clips.shape)}")
    expected_shape = tuple(compiled.input(0).shape)[2:]
    if tuple(clips.shape[1:]) != expected_shape:
        raise ConfigError(f"parity clips have shape {tuple(clips.shape[1:])} per clip, the export takes {expected_shape}")
    # PyTorch's side in the layout it runs fastest in here (the values do not depend on it).
    layout = memory_format_for("cpu")
    network = _cpu_copy(model).to(memory_format=layout)
    clips = clips.detach().to("cpu", torch.float32)
    with torch.inference_mode():
        reference = network(clips.contiguous(memory_format=layout)).numpy()
    request = compiled.create_infer_request()
    converted = np.stack([request.infer({0: clip[None, None].numpy()})[0][0] for clip in clips])
    inference_precision = compiled_precision(compiled)
    atol, rtol = PARITY_TOLERANCES[precision]
    extra_atol, extra_rtol = INFERENCE_TOLERANCES.get(inference_precision, INFERENCE_TOLERANCES["bf16"])
    max_abs_logit = float(np.abs(reference).max())
    return Parity(
        num_clips=int(clips.shape[0]),
        max_abs_diff=float(np.abs(converted - reference).max()),
        max_abs_logit=max_abs_logit,
        tolerance=atol + extra_atol + (rtol + extra_rtol) * max_abs_logit,
        top1_agreement=float((converted.argmax(axis=1) == reference.argmax(axis=1)).mean()),
        precision=precision,
        inference_precision=inference_precision,
    )
