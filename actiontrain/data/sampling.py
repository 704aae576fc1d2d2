"""Temporal sampling: which frame indices make up a training clip or the clips of a test view."""

from __future__ import annotations

import torch

from actiontrain.config import check_positive
from actiontrain.errors import DataError

__all__ = ["clip_span", "eval_clip_indices", "train_clip_indices"]


def _check_num_frames(num_frames: int) -> None:
    if isinstance(num_frames, bool) or not isinstance(num_frames, int):
        raise TypeError(f"num_frames must be an int, got {type(num_frames).__name__}")
    if num_frames <= 0:
        raise DataError(
            f"cannot sample a clip from a video with {num_frames} frames; re-encode or remove the sample"
        )


def clip_span(*, clip_len: int, frame_interval: int) -> int:
    """Number of source frames one clip covers, first to last frame inclusive.

    Raises:
        ConfigError: ``clip_len`` or ``frame_interval`` is not a positive integer.
    """
    check_positive("clip_len", clip_len)
    check_positive("frame_interval", frame_interval)
    return (clip_len - 1) * frame_interval + 1


def _segment(start: int, num_frames: int, *, clip_len: int, frame_interval: int) -> list[int]:
    # Videos shorter than the span loop back to their first frame (mmaction's "loop" rule):
    # every sample still yields a full clip instead of failing or padding with black frames.
    return [(start + i * frame_interval) % num_frames for i in range(clip_len)]


def train_clip_indices(
    num_frames: int, *, clip_len: int, frame_interval: int, generator: torch.Generator
) -> list[int]:
    """Frame indices of one training clip: ``clip_len`` frames ``frame_interval`` apart, at a random start.

    The start is uniform over every position where the clip fits. A video shorter than the clip's
    span starts at frame 0 and loops (indices modulo ``num_frames``).

    Args:
        num_frames: Frames in the video (>= 1).
        clip_len: Frames per clip.
        frame_interval: Distance between consecutive sampled frames.
        generator: Source of randomness, so a seeded generator gives a reproducible clip.

    Returns:
        ``clip_len`` indices in ``[0, num_frames)``, in playback order.

    Raises:
        ConfigError: ``clip_len`` or ``frame_interval`` is not a positive integer.
        DataError: the video has no frames.
    """
    span = clip_span(clip_len=clip_len, frame_interval=frame_interval)
    _check_num_frames(num_frames)
    if num_frames < span:
        start = 0
    else:
        start = int(torch.randint(0, num_frames - span + 1, (1,), generator=generator).item())
    return _segment(start, num_frames, clip_len=clip_len, frame_interval=frame_interval)


def eval_clip_indices(num_frames: int, *, clip_len: int, frame_interval: int, num_clips: int) -> list[list[int]]:
    """Frame indices of ``num_clips`` test clips spaced uniformly over the whole video.

    As in SlowFast's multi-view testing: the first clip starts at frame 0, the last ends at the
    final frame, the others are evenly spaced between; a single clip is centred. A video shorter
    than the span gives clips that start at 0 and loop, like :func:`train_clip_indices`.

    Args:
        num_frames: Frames in the video (>= 1).
        clip_len: Frames per clip.
        frame_interval: Distance between consecutive sampled frames.
        num_clips: Number of clips (temporal views).

    Returns:
        ``num_clips`` lists of ``clip_len`` indices, in temporal order.

    Raises:
        ConfigError: ``clip_len``, ``frame_interval`` or ``num_clips`` is not a positive integer.
        DataError: the video has no frames.
    """
    span = clip_span(clip_len=clip_len, frame_interval=frame_interval)
    check_positive("num_clips", num_clips)
    _check_num_frames(num_frames)
    slack = max(num_frames - span, 0)
    if num_clips == 1:
        starts = [slack // 2]
    else:
        starts = [round(slack * i / (num_clips - 1)) for i in range(num_clips)]
    return [_segment(start, num_frames, clip_len=clip_len, frame_interval=frame_interval) for start in starts]
