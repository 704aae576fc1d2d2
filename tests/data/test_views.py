"""The evaluation views: uniformly spread clips, their crops, and short videos looping back."""

from __future__ import annotations

import numpy as np

from actiontrain.config import DataConfig
from actiontrain.data.media_writer import write_video
from actiontrain.data.motion import decode_frame_index, render_clip
from actiontrain.data.video import open_media
from actiontrain.data.views import EvalViews

# No resize or normalisation in the way of reading the frame codes back: crop = short side = 128.
RAW = {"crop_size": 128, "train_short_side": (128, 128), "eval_short_side": 128, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def _frame_codes(views) -> list[list[int]]:
    """The frame index each view's frames carry (the synthetic code in the top-left corner)."""
    pixels = (views.clamp(0, 1) * 255).round().to("cpu").numpy().astype(np.uint8)
    return [[decode_frame_index(view[:, t]) for t in range(view.shape[1])] for view in pixels]


def test_a_video_shorter_than_clip_len_loops_back_to_its_first_frame(tmp_path):
    url = str(tmp_path / "short.mp4")
    write_video(url, render_clip("move_left", num_frames=3, height=128, width=128))
    views = EvalViews(DataConfig(clip_len=5, frame_interval=1, **RAW))
    with open_media(url) as reader:
        read = views.read(reader)
    assert read.shape == (1, 3, 5, 128, 128)
    assert _frame_codes(read) == [[0, 1, 2, 0, 1]]


def test_clips_spread_over_the_video_with_every_crop_of_each(tmp_path):
    url = str(tmp_path / "long.mp4")
    write_video(url, render_clip("move_up", num_frames=20, height=128, width=192))
    views = EvalViews(DataConfig(clip_len=2, frame_interval=3, num_eval_clips=3, num_eval_crops=3, **RAW))
    assert views.num_views == 9
    with open_media(url) as reader:
        read = views.read(reader)
    assert read.shape == (9, 3, 2, 128, 128)
    # Clips start at frames 0, 8 and 16 (the last ends at frame 19); crops left, centre, right of each.
    # Only the left crop holds the code (it sits in the top-left corner of the frame).
    assert [_frame_codes(read)[index] for index in (0, 3, 6)] == [[0, 3], [8, 11], [16, 19]]
