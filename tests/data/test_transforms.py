"""Augmentation: output layout, normalization, label-aware flip, multi-crop test views."""

from __future__ import annotations

import pickle

import pytest
import torch

from actiontrain.data.transforms import (
    X3D_MEAN,
    X3D_STD,
    LabelAwareHorizontalFlip,
    build_eval_transform,
    build_train_transform,
    flip_pairs_from_names,
)
from actiontrain.errors import ConfigError

CLASSES = ["Swiping Left", "Swiping Right", "Thumb Up", "Rolling Hand Forward"]
LEFT, RIGHT, THUMB = 0, 1, 2


def _video(t: int = 8, h: int = 120, w: int = 160, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=generator)


def _normalized(video: torch.Tensor) -> torch.Tensor:
    """Reference: uint8 TCHW -> normalized float CTHW."""
    mean = torch.tensor(X3D_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(X3D_STD).view(3, 1, 1, 1)
    return (video.permute(1, 0, 2, 3).float() / 255 - mean) / std


def test_train_transform_outputs_normalized_float_cthw():
    transform = build_train_transform(crop_size=64, short_side_range=(72, 90))
    torch.manual_seed(0)
    clip, label = transform(_video(), 3)
    assert clip.shape == (3, 8, 64, 64) and clip.dtype == torch.float32 and clip.is_contiguous()
    assert label == 3
    grey = torch.full((4, 3, 100, 100), round(0.45 * 255), dtype=torch.uint8)
    normalized, _ = transform(grey, None)
    assert normalized.abs().max() < 0.02  # mean grey maps to ~0


def test_train_transform_is_reproducible_under_a_seed():
    transform = build_train_transform(crop_size=64, short_side_range=(72, 90), flip_pairs={LEFT: RIGHT, RIGHT: LEFT})
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        outputs.append(transform(_video(), LEFT))
    assert torch.equal(outputs[0][0], outputs[1][0]) and outputs[0][1] == outputs[1][1]


def test_flip_swaps_left_right_labels():
    pairs = flip_pairs_from_names([("Swiping Left", "Swiping Right")], CLASSES)
    transform = build_train_transform(crop_size=64, short_side_range=(64, 80), flip_prob=1.0, flip_pairs=pairs)
    assert transform(_video(), LEFT)[1] == RIGHT
    assert transform(_video(), RIGHT)[1] == LEFT
    assert transform(_video(), THUMB)[1] == THUMB
    assert transform(_video(), None)[1] is None


def test_plain_flip_keeps_labels_when_no_pairs_given():
    transform = build_train_transform(crop_size=64, short_side_range=(64, 80), flip_prob=1.0, flip_pairs=None)
    assert transform(_video(), LEFT)[1] == LEFT


def test_flip_mirrors_the_pixels():
    # Square input at the crop size: no resize, no crop, so the output is the flipped input.
    video = _video(h=64, w=64)
    flipped = build_train_transform(crop_size=64, short_side_range=(64, 64), flip_prob=1.0)(video, 0)[0]
    unflipped = build_train_transform(crop_size=64, short_side_range=(64, 64), flip_prob=0.0)(video, 0)[0]
    torch.testing.assert_close(unflipped, _normalized(video))
    torch.testing.assert_close(flipped, _normalized(video).flip(-1))


def test_label_aware_flip_alone_respects_its_probability():
    video = _video(t=2, h=16, w=16)
    never = LabelAwareHorizontalFlip(0.0, flip_pairs={LEFT: RIGHT})
    always = LabelAwareHorizontalFlip(1.0, flip_pairs={LEFT: RIGHT})
    assert never(video, LEFT)[0] is video and never(video, LEFT)[1] == LEFT
    out, label = always(video, LEFT)
    assert torch.equal(out, video.flip(-1)) and label == RIGHT
    torch.manual_seed(0)
    flips = sum(LabelAwareHorizontalFlip(0.5)(video, 0)[0] is not video for _ in range(400))
    assert 140 < flips < 260


def test_flip_pairs_from_names_is_symmetric():
    assert flip_pairs_from_names([("Swiping Right", "Swiping Left")], CLASSES) == {RIGHT: LEFT, LEFT: RIGHT}


def test_flip_pair_with_unknown_label_lists_the_classes():
    with pytest.raises(ConfigError, match="'Swiping Leftt' is not a class.*did you mean 'Swiping Left'.*Thumb Up"):
        flip_pairs_from_names([("Swiping Leftt", "Swiping Right")], CLASSES)


def test_flip_pair_conflict_is_a_config_error():
    with pytest.raises(ConfigError, match="paired with both"):
        flip_pairs_from_names([("Swiping Left", "Swiping Right"), ("Swiping Left", "Thumb Up")], CLASSES)


def test_eval_center_crop_shape():
    views = build_eval_transform(short_side=72, crop_size=64)(_video())
    assert views.shape == (1, 3, 8, 64, 64) and views.dtype == torch.float32


@pytest.mark.parametrize("height, width", [(64, 128), (128, 64)])
def test_eval_three_crops_span_the_long_side(height, width):
    video = _video(h=height, w=width)
    views = build_eval_transform(short_side=64, crop_size=64, num_crops=3)(video)
    assert views.shape == (3, 3, 8, 64, 64)
    reference = _normalized(video)
    if width > height:
        expected = [reference[..., :, 0:64], reference[..., :, 32:96], reference[..., :, 64:128]]
    else:
        expected = [reference[..., 0:64, :], reference[..., 32:96, :], reference[..., 64:128, :]]
    for view, want in zip(views, expected):
        torch.testing.assert_close(view, want)


def test_transforms_pickle_for_dataloader_workers():
    pairs = {LEFT: RIGHT, RIGHT: LEFT}
    train = pickle.loads(pickle.dumps(build_train_transform(crop_size=32, short_side_range=(32, 40), flip_pairs=pairs)))
    assert train(_video(h=48, w=64), LEFT)[0].shape == (3, 8, 32, 32)
    evaluate = pickle.loads(pickle.dumps(build_eval_transform(short_side=32, crop_size=32, num_crops=3)))
    assert evaluate(_video(h=48, w=64)).shape == (3, 3, 8, 32, 32)


def test_caller_flip_pairs_are_not_mutated():
    pairs = {LEFT: RIGHT, RIGHT: LEFT}
    transform = build_train_transform(crop_size=32, short_side_range=(32, 40), flip_pairs=pairs)
    transform.flip.flip_pairs[THUMB] = THUMB
    assert pairs == {LEFT: RIGHT, RIGHT: LEFT}


@pytest.mark.parametrize(
    "build, kwargs, match",
    [
        (build_train_transform, {"crop_size": 0, "short_side_range": (64, 80)}, "crop_size"),
        (build_train_transform, {"crop_size": 64, "short_side_range": (90, 80)}, "short_side_range"),
        (build_train_transform, {"crop_size": 64, "short_side_range": (50, 80)}, "crop_size 64"),
        (build_train_transform, {"crop_size": 64, "short_side_range": (64, 80), "flip_prob": 1.5}, "flip"),
        (build_train_transform, {"crop_size": 64, "short_side_range": (64, 80), "std": (0.2, 0.0, 0.2)}, "std"),
        (build_eval_transform, {"short_side": 64, "crop_size": 64, "num_crops": 2}, "num_crops"),
        (build_eval_transform, {"short_side": 50, "crop_size": 64}, "short_side"),
        (build_eval_transform, {"short_side": 64, "crop_size": 64, "mean": (0.5, 0.5)}, "mean"),
    ],
)
def test_bad_settings_are_config_errors(build, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build(**kwargs)
