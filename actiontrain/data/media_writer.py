"""Encodes frames into real video files (MPEG-4/XviD AVI, H.264 MP4, VP8 WebM) or JPEG folders."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
from PIL import Image

from actiontrain import storage

__all__ = ["CONTAINERS", "encode_jpeg", "write_frame_folder", "write_video"]

# container -> (codec, codec tag, extra encoder options). The AVI entry matches what UCF101 and
# HMDB51 ship (MPEG-4 Part 2 tagged XVID); MP4/H.264 is what Kinetics downloads are.
CONTAINERS: dict[str, tuple[str, str | None, dict[str, str]]] = {
    "avi": ("mpeg4", "XVID", {"qscale": "4"}),
    "mp4": ("libx264", None, {"preset": "veryfast", "crf": "20"}),
    "webm": ("libvpx", None, {"crf": "10", "b": "1M"}),
}


def write_video(
    url: str, frames: np.ndarray, *, fps: int = 25, gop: int = 12, bit_rate: int | None = None
) -> None:
    """Encodes ``(T, H, W, 3)`` uint8 RGB frames to ``url``; the container comes from its suffix.

    ``gop`` is the keyframe interval: decoders must seek to a keyframe and decode forward, as with
    real downloads. ``bit_rate`` (bits/s) switches from constant quality to an average bitrate.
    The file appears at ``url`` only once complete.
    """
    container = os.path.splitext(url)[1].lstrip(".").lower()
    if container not in CONTAINERS:
        raise ValueError(f"cannot encode {url}: unknown container {container!r}; use {', '.join(CONTAINERS)}")
    codec, tag, options = CONTAINERS[container]
    height, width = frames.shape[1:3]
    with storage.atomic_write(url) as temporary:
        with av.open(temporary, mode="w", format=container) as output:
            stream = output.add_stream(codec, rate=fps)
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            stream.codec_context.gop_size = gop
            if bit_rate:
                stream.bit_rate = bit_rate
                options = {key: value for key, value in options.items() if key not in ("qscale", "crf")}
            stream.options = dict(options)
            if tag:
                stream.codec_tag = tag
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    output.mux(packet)
            for packet in stream.encode():
                output.mux(packet)


def encode_jpeg(frame: np.ndarray, *, quality: int = 92) -> bytes:
    """JPEG bytes of one HxWx3 uint8 RGB frame."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_frame_folder(url: str, frames: np.ndarray, *, pattern: str = "{:05d}.jpg", start: int = 1) -> list[str]:
    """Writes each frame as a JPEG under the folder ``url`` (Jester names: 00001.jpg, ...).

    Returns the file names written, in frame order.
    """
    names = [pattern.format(start + i) for i in range(len(frames))]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda args: storage.write_bytes(storage.join(url, args[0]), encode_jpeg(args[1])),
                      zip(names, frames)))
    return names
