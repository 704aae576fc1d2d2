"""The evaluation views of a video: what every evaluation and every prediction feeds the model.

``num_eval_clips`` clips spread uniformly over the video, each resized and cut into
``num_eval_crops`` crops (SlowFast's multi-view testing). Training-time evaluation, ``actiontrain
eval``, INT8 calibration and ``actiontrain predict`` all read videos through :class:`EvalViews`, so
a video is seen the same way everywhere: a video shorter than a clip's span (or even than
``clip_len`` frames) loops back to its first frame instead of failing.
"""

from __future__ import annotations

import torch

from actiontrain.config import DataConfig
from actiontrain.data.video import MediaReader
from actiontrain.data.sampling import eval_clip_indices
from actiontrain.data.transforms import build_eval_transform

__all__ = ["EvalViews"]


class EvalViews:
    """Reads every evaluation view of a video as one ``(V, 3, T, H, W)`` normalised float tensor.

    ``V = num_eval_clips * num_eval_crops``, clip-major (the crops of the first clip first).
    Picklable, so DataLoader workers can use it.
    """

    def __init__(self, config: DataConfig) -> None:
        self.config = config
        self._transform = build_eval_transform(
            short_side=config.eval_short_side,
            crop_size=config.crop_size,
            num_crops=config.num_eval_crops,
            mean=config.mean,
            std=config.std,
        )

    @property
    def num_views(self) -> int:
        """Views per video: clips x crops."""
        return self.config.num_eval_clips * self.config.num_eval_crops

    def frame_indices(self, num_frames: int) -> list[list[int]]:
        """The frames of each clip of a video with ``num_frames`` frames (looping when it is short).

        Raises:
            DataError: the video has no frames.
        """
        data = self.config
        return eval_clip_indices(
            num_frames, clip_len=data.clip_len, frame_interval=data.frame_interval, num_clips=data.num_eval_clips
        )

    def read(self, reader: MediaReader) -> torch.Tensor:
        """Decodes the frames the views need, once each, and returns the views.

        Raises:
            DataError: the video cannot be decoded or has no frames.
            StorageError: it cannot be read.
        """
        clips = self.frame_indices(reader.num_frames)
        frames = reader.get_frames([index for clip in clips for index in clip])
        return self.from_frames(frames)

    def from_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``(num_eval_clips * clip_len, 3, H, W)`` uint8 frames, clip after clip -> the views."""
        return torch.cat([self._transform(clip) for clip in frames.split(self.config.clip_len)])
