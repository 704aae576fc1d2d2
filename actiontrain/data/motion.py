"""Synthetic motion clips: classes that differ only in how an object moves, never in one frame.

Every frame also carries its own index as an 8-bit code in its top-left corner, so tests can check
that a decoder returned exactly the frames it was asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CODE_BLOCK",
    "MOTIONS",
    "Motion",
    "decode_frame_index",
    "encode_frame_index",
    "render_clip",
]

CODE_BLOCK = 16
"""Side in pixels of one bit of the frame-index code (a macroblock, so codecs keep it)."""
_CODE_BITS = 8


@dataclass(frozen=True, kw_only=True)
class Motion:
    """One synthetic class: how the object moves, and its mirror image under a horizontal flip."""

    key: str
    """Stable identifier, e.g. ``move_left``."""
    mirror: str
    """The motion this one becomes when the video is flipped left-right."""


MOTIONS: tuple[Motion, ...] = (
    Motion(key="move_left", mirror="move_right"),
    Motion(key="move_right", mirror="move_left"),
    Motion(key="move_up", mirror="move_up"),
    Motion(key="move_down", mirror="move_down"),
    Motion(key="grow", mirror="grow"),
    Motion(key="shrink", mirror="shrink"),
    Motion(key="rotate_clockwise", mirror="rotate_counterclockwise"),
    Motion(key="rotate_counterclockwise", mirror="rotate_clockwise"),
)


def encode_frame_index(frame: np.ndarray, index: int) -> None:
    """Writes ``index % 256`` in place into the top-left corner of an HxWx3 uint8 frame."""
    for bit in range(_CODE_BITS):
        value = 255 if (index >> bit) & 1 else 0
        frame[:CODE_BLOCK, bit * CODE_BLOCK : (bit + 1) * CODE_BLOCK] = value


def decode_frame_index(frame: np.ndarray) -> int:
    """Reads the code written by :func:`encode_frame_index` from an HxWx3 (or 3xHxW) frame."""
    if frame.shape[0] == 3 and frame.shape[-1] != 3:
        frame = np.moveaxis(frame, 0, -1)
    index = 0
    margin = CODE_BLOCK // 4  # read block centres: codecs blur the edges
    for bit in range(_CODE_BITS):
        block = frame[margin : CODE_BLOCK - margin, bit * CODE_BLOCK + margin : (bit + 1) * CODE_BLOCK - margin]
        if float(block.mean()) > 127:
            index |= 1 << bit
    return index


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    # Smooth random colour field: static, so it carries no class information.
    coarse = rng.integers(40, 140, size=(height // 40 + 2, width // 40 + 2, 3)).astype(np.float32)
    rows = np.linspace(0, coarse.shape[0] - 1.001, height)
    cols = np.linspace(0, coarse.shape[1] - 1.001, width)
    r0, c0 = rows.astype(int), cols.astype(int)
    fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bottom = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    return (top * (1 - fr) + bottom * fr).astype(np.uint8)


def render_clip(
    motion: str,
    *,
    num_frames: int,
    height: int = 240,
    width: int = 320,
    seed: int = 0,
    frame_codes: bool = True,
    noise_std: float = 0.0,
) -> np.ndarray:
    """Renders a clip of an object performing ``motion``; returns ``(T, H, W, 3)`` uint8 RGB.

    Position, size, colour and speed are random (from ``seed``) but drawn from the same ranges
    for every motion, so only the movement across frames tells the classes apart.

    ``noise_std`` adds Gaussian sensor noise (in 0-255 levels), so encoders produce the bitrates
    of real camera footage instead of the tiny files a flat synthetic scene gives.
    """
    keys = [m.key for m in MOTIONS]
    if motion not in keys:
        raise ValueError(f"unknown motion {motion!r}; valid: {', '.join(keys)}")
    rng = np.random.default_rng(seed)
    background = _background(rng, height, width)
    color = rng.integers(170, 256, size=3).astype(np.uint8)
    color[rng.integers(0, 3)] = rng.integers(0, 60)  # saturated, stands out from the background
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy = rng.uniform(0.35, 0.65) * height
    cx = rng.uniform(0.35, 0.65) * width
    base_size = rng.uniform(0.16, 0.24) * min(height, width)
    speed = rng.uniform(0.55, 0.8) * min(height, width) / max(num_frames - 1, 1)
    angle0 = rng.uniform(0, 2 * math.pi)

    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        # Centre the trajectory on (cy, cx) so every motion covers the same region on average.
        offset = (t - (num_frames - 1) / 2) * speed
        y, x, size, angle = cy, cx, base_size, angle0
        if motion == "move_left":
            x = cx - offset
        elif motion == "move_right":
            x = cx + offset
        elif motion == "move_up":
            y = cy - offset
        elif motion == "move_down":
            y = cy + offset
        elif motion in ("grow", "shrink"):
            scale = 1.0 + (0.8 if motion == "grow" else -0.8) * offset / max(height, width) * 2.2
            size = base_size * max(scale, 0.25)
        else:
            step = 2 * math.pi / 3 / max(num_frames - 1, 1)
            angle = angle0 + (t * step if motion == "rotate_clockwise" else -t * step)
        frame = background.copy()
        # A bar with a knob at one end: rotation is visible and the shape has no symmetry axis.
        dy, dx = yy - y, xx - x
        along = dx * math.cos(angle) + dy * math.sin(angle)
        across = -dx * math.sin(angle) + dy * math.cos(angle)
        bar = (np.abs(along) <= size) & (np.abs(across) <= size * 0.3)
        knob = (along - size) ** 2 + across**2 <= (size * 0.45) ** 2
        frame[bar | knob] = color
        if noise_std > 0:
            noisy = frame.astype(np.float32) + rng.normal(0.0, noise_std, frame.shape).astype(np.float32)
            frame = np.clip(noisy, 0, 255).astype(np.uint8)
        if frame_codes:
            encode_frame_index(frame, t)
        frames[t] = frame
    return frames
