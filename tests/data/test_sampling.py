"""Temporal sampling: reproducible random training clips, uniform test clips, short videos loop."""

from __future__ import annotations

import pytest
import torch

from actiontrain.data.sampling import clip_span, eval_clip_indices, train_clip_indices
from actiontrain.errors import ConfigError, DataError


def _generator(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def test_train_clip_is_reproducible_with_a_seeded_generator():
    first = [train_clip_indices(300, clip_len=8, frame_interval=4, generator=_generator(7)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    generator = _generator(7)
    draws = {tuple(train_clip_indices(300, clip_len=8, frame_interval=4, generator=generator)) for _ in range(20)}
    assert len(draws) > 1  # successive draws from one generator differ


def test_train_clip_is_strided_and_inside_the_video():
    generator = _generator(0)
    starts = set()
    for _ in range(500):
        indices = train_clip_indices(40, clip_len=8, frame_interval=4, generator=generator)
        assert len(indices) == 8
        assert all(b - a == 4 for a, b in zip(indices, indices[1:]))
        assert 0 <= indices[0] and indices[-1] < 40
        starts.add(indices[0])
    assert starts == set(range(40 - clip_span(clip_len=8, frame_interval=4) + 1))  # every start reachable


@pytest.mark.parametrize("num_frames", [1, 5, 28])
def test_short_video_loops_instead_of_failing(num_frames):
    indices = train_clip_indices(num_frames, clip_len=8, frame_interval=4, generator=_generator(0))
    assert indices == [(i * 4) % num_frames for i in range(8)]
    views = eval_clip_indices(num_frames, clip_len=8, frame_interval=4, num_clips=3)
    assert views == [indices] * 3


def test_video_exactly_one_span_long_has_one_start():
    assert train_clip_indices(29, clip_len=8, frame_interval=4, generator=_generator(3)) == list(range(0, 29, 4))


def test_eval_clips_cover_the_video_uniformly():
    views = eval_clip_indices(100, clip_len=8, frame_interval=4, num_clips=5)
    assert len(views) == 5 and all(len(view) == 8 for view in views)
    assert views[0][0] == 0 and views[-1][-1] == 99  # first at the start, last at the end
    starts = [view[0] for view in views]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert max(gaps) - min(gaps) <= 1
    assert eval_clip_indices(100, clip_len=8, frame_interval=4, num_clips=5) == views  # deterministic


def test_single_eval_clip_is_centred():
    (view,) = eval_clip_indices(101, clip_len=8, frame_interval=4, num_clips=1)
    assert view[0] == 101 - 1 - view[-1]


def test_video_without_frames_is_a_data_error():
    with pytest.raises(DataError, match="0 frames"):
        train_clip_indices(0, clip_len=8, frame_interval=4, generator=_generator(0))
    with pytest.raises(DataError, match="0 frames"):
        eval_clip_indices(0, clip_len=8, frame_interval=4, num_clips=1)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"clip_len": 0, "frame_interval": 4, "num_clips": 1}, "clip_len"),
        ({"clip_len": 8, "frame_interval": 0, "num_clips": 1}, "frame_interval"),
        ({"clip_len": 8, "frame_interval": 4, "num_clips": 0}, "num_clips"),
        ({"clip_len": 2.5, "frame_interval": 4, "num_clips": 1}, "clip_len"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        eval_clip_indices(50, **kwargs)
    if name != "num_clips":
        train_kwargs = {k: v for k, v in kwargs.items() if k != "num_clips"}
        with pytest.raises(ConfigError, match=name):
            train_clip_indices(50, **train_kwargs, generator=_generator(0))
