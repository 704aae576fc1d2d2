"""Clip augmentation: random scale, crop and label-aware flip for training; multi-crop views for testing."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from actiontrain.config import X3D_MEAN, X3D_STD, check_positive
from actiontrain.errors import ConfigError

__all__ = [
    "X3D_MEAN",
    "X3D_STD",
    "EvalTransform",
    "LabelAwareHorizontalFlip",
    "TrainTransform",
    "build_eval_transform",
    "build_train_transform",
    "flip_pairs_from_names",
]



class LabelAwareHorizontalFlip:
    """Mirrors a clip left-right with probability ``p`` and swaps direction-dependent labels.

    A flipped "Swiping Left" clip shows a swipe to the right, so its label must follow;
    ``flip_pairs`` maps each such class index to its mirror (both directions). Classes not in
    the map, and every class when ``flip_pairs`` is ``None``, keep their label. Randomness comes
    from torch's global generator, which the data loader seeds per sample.
    """

    def __init__(self, p: float = 0.5, *, flip_pairs: Mapping[int, int] | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"flip probability must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.flip_pairs: dict[int, int] = dict(flip_pairs) if flip_pairs else {}

    def __call__(self, video: torch.Tensor, label: int | None = None) -> tuple[torch.Tensor, int | None]:
        """Returns the (maybe mirrored) ``(..., H, W)`` clip and its (maybe swapped) label."""
        if self.p == 0.0 or (self.p < 1.0 and torch.rand(()).item() >= self.p):
            return video, label
        flipped = F.horizontal_flip(video)
        if label is not None:
            label = self.flip_pairs.get(label, label)
        return flipped, label

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p}, flip_pairs={self.flip_pairs})"


def flip_pairs_from_names(pairs: Sequence[tuple[str, str]], classes: Sequence[str]) -> dict[int, int]:
    """Turns ``[("Swiping Left", "Swiping Right"), ...]`` into a symmetric class-index map.

    Args:
        pairs: Class names that become each other under a horizontal flip.
        classes: All class names, in label-index order.

    Returns:
        ``{left: right, right: left, ...}`` over class indices.

    Raises:
        ConfigError: a name is not a class, or a class is paired with two different classes.
    """
    index = {name: i for i, name in enumerate(classes)}
    mapping: dict[int, int] = {}
    for pair in pairs:
        if len(pair) != 2:
            raise ConfigError(f"each flip pair needs exactly two class names, got {list(pair)!r}")
        first, second = (_class_index(name, index) for name in pair)
        for source, target in ((first, second), (second, first)):
            if mapping.get(source, target) != target:
                raise ConfigError(
                    f"flip pair label {classes[source]!r} is paired with both "
                    f"{classes[mapping[source]]!r} and {classes[target]!r}; keep one pair per class"
                )
            mapping[source] = target
    return mapping


def _class_index(name: str, index: Mapping[str, int]) -> int:
    if name in index:
        return index[name]
    names = list(index)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    shown = ", ".join(repr(n) for n in names[:30]) + (f", ... ({len(names)} in all)" if len(names) > 30 else "")
    raise ConfigError(f"flip pair label {name!r} is not a class{hint}; valid classes: {shown}")


def _check_normalization(mean: Sequence[float], std: Sequence[float]) -> tuple[list[float], list[float]]:
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"mean and std need 3 values (RGB), got mean={list(mean)} std={list(std)}")
    if any(value <= 0 for value in std):
        raise ConfigError(f"std values must be > 0, got {list(std)}")
    return [float(v) for v in mean], [float(v) for v in std]


def _as_video(video: torch.Tensor) -> tv_tensors.Video:
    if video.ndim != 4 or video.shape[1] != 3 or video.dtype != torch.uint8:
        raise ValueError(f"expected a (T, 3, H, W) uint8 clip, got {tuple(video.shape)} {video.dtype}")
    return tv_tensors.Video(video)


class _Normalize:
    """uint8 ``(T, C, H, W)`` -> normalised float32 ``(C, T, H, W)``, X3D's layout.

    The transpose happens on uint8 (4x less memory to move than float) and scaling plus
    normalisation are folded into one multiply and one subtract, in place:
    ``(x / 255 - mean) / std == x * (1 / (255 std)) - mean / std``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        mean_t, std_t = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        self.scale = (1.0 / (255.0 * std_t)).view(-1, 1, 1, 1)
        self.shift = (mean_t / std_t).view(-1, 1, 1, 1)

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        clip = video.as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous()
        return clip.to(torch.float32).mul_(self.scale).sub_(self.shift)


class _ScaledRandomCrop:
    """Scale the short side to a random size in a range, then take a random square crop.

    Done the other way round, with the same result: the crop window is mapped back onto the
    original frames, cut there, and only it is resized (antialiased) to ``crop_size``. That
    resizes about half the pixels of scaling whole frames first, and stays on uint8.
    """

    def __init__(self, *, crop_size: int, short_side_range: tuple[int, int]) -> None:
        self.crop_size = crop_size
        self.low, self.high = short_side_range

    def __call__(self, video: tv_tensors.Video) -> tv_tensors.Video:
        height, width = video.shape[-2:]
        short_side = int(torch.randint(self.low, self.high + 1, ()).item())
        scale = short_side / min(height, width)
        scaled_height, scaled_width = round(height * scale), round(width * scale)
        top = int(torch.randint(0, scaled_height - self.crop_size + 1, ()).item())
        left = int(torch.randint(0, scaled_width - self.crop_size + 1, ()).item())
        window = self.crop_size / scale
        y0, x0 = round(top / scale), round(left / scale)
        size_y = max(1, min(round(window), height - y0))
        size_x = max(1, min(round(window), width - x0))
        cut = F.crop(video, y0, x0, size_y, size_x)
        return F.resize(cut, [self.crop_size, self.crop_size], antialias=True)


class TrainTransform:
    """Random short-side scale, random crop, label-aware flip, then float and normalize.

    Call with a ``(T, 3, H, W)`` uint8 clip and its label; returns the ``(3, T, crop, crop)``
    float32 clip and the label (swapped when the flip mirrored a directional class). A class
    rather than a closure so DataLoader workers can pickle it.
    """

    def __init__(
        self,
        *,
        crop_size: int,
        short_side_range: tuple[int, int],
        flip: LabelAwareHorizontalFlip,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.geometry = _ScaledRandomCrop(crop_size=crop_size, short_side_range=short_side_range)
        self.flip = flip
        self.normalize = _Normalize(mean, std)

    def __call__(self, video: torch.Tensor, label: int | None = None) -> tuple[torch.Tensor, int | None]:
        clip = self.geometry(_as_video(video))
        clip, label = self.flip(clip, label)
        return self.normalize(clip), label


class EvalTransform:
    """Short-side resize, then one centre crop or three crops along the long side.

    Call with a ``(T, 3, H, W)`` uint8 clip; returns ``(num_crops, 3, T, crop, crop)`` float32.
    Three crops are left/centre/right for landscape frames and top/centre/bottom for portrait
    ones, as in SlowFast's multi-view testing.
    """

    def __init__(
        self, *, short_side: int, crop_size: int, num_crops: int, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        self.short_side = short_side
        self.crop_size = crop_size
        self.num_crops = num_crops
        self.resize = v2.Resize(short_side, antialias=True)
        self.normalize = _Normalize(mean, std)

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        clip = self.resize(_as_video(video))
        height, width = clip.shape[-2:]
        size = self.crop_size
        if self.num_crops == 1:
            crops = [F.center_crop(clip, [size, size])]
        else:
            top, left = (height - size) // 2, (width - size) // 2
            if width >= height:
                offsets = [(top, 0), (top, left), (top, width - size)]
            else:
                offsets = [(0, left), (top, left), (height - size, left)]
            crops = [F.crop(clip, y, x, size, size) for y, x in offsets]
        return torch.stack([self.normalize(crop) for crop in crops])


def build_train_transform(
    *,
    crop_size: int,
    short_side_range: tuple[int, int],
    flip_prob: float = 0.5,
    flip_pairs: Mapping[int, int] | None = None,
    mean: Sequence[float] = X3D_MEAN,
    std: Sequence[float] = X3D_STD,
) -> TrainTransform:
    """Builds the training augmentation (X3D recipe: short side in [182, 228], crop 160 for X3D-S).

    Args:
        crop_size: Side of the square crop fed to the model.
        short_side_range: Inclusive range the short side is scaled to, uniformly at random.
        flip_prob: Probability of a horizontal flip.
        flip_pairs: Class index -> mirrored class index (see :func:`flip_pairs_from_names`);
            ``None`` flips without touching labels.
        mean: Per-channel mean, on the [0, 1] scale.
        std: Per-channel standard deviation, on the [0, 1] scale.

    Returns:
        A picklable callable ``(video_uint8_TCHW, label) -> (float_CTHW, label)``.

    Raises:
        ConfigError: a size is not positive, the range is inverted or smaller than the crop,
            ``flip_prob`` is outside [0, 1], or ``mean``/``std`` are not 3 values with ``std > 0``.
    """
    check_positive("crop_size", crop_size)
    low, high = short_side_range
    check_positive("short_side_range[0]", low)
    check_positive("short_side_range[1]", high)
    if low > high:
        raise ConfigError(f"short_side_range must be (low, high) with low <= high, got {tuple(short_side_range)}")
    if low < crop_size:
        raise ConfigError(
            f"short_side_range {tuple(short_side_range)} must start at or above crop_size {crop_size}, "
            f"e.g. ({crop_size}, {round(crop_size * 1.425)})"
        )
    mean, std = _check_normalization(mean, std)
    flip = LabelAwareHorizontalFlip(flip_prob, flip_pairs=flip_pairs)
    return TrainTransform(crop_size=crop_size, short_side_range=(low, high), flip=flip, mean=mean, std=std)


def build_eval_transform(
    *,
    short_side: int,
    crop_size: int,
    num_crops: int = 1,
    mean: Sequence[float] = X3D_MEAN,
    std: Sequence[float] = X3D_STD,
) -> EvalTransform:
    """Builds the test-time transform: resize the short side, then 1 or 3 spatial crops.

    Args:
        short_side: Short side after resizing (>= ``crop_size``).
        crop_size: Side of each square crop.
        num_crops: 1 (centre) or 3 (both ends and centre of the long side).
        mean: Per-channel mean, on the [0, 1] scale.
        std: Per-channel standard deviation, on the [0, 1] scale.

    Returns:
        A picklable callable ``video_uint8_TCHW -> (num_crops, C, T, crop, crop)`` float32.

    Raises:
        ConfigError: sizes not positive, ``short_side < crop_size``, ``num_crops`` not 1 or 3,
            or bad ``mean``/``std``.
    """
    check_positive("crop_size", crop_size)
    check_positive("short_side", short_side)
    if short_side < crop_size:
        raise ConfigError(f"short_side must be >= crop_size {crop_size}, got {short_side}")
    if num_crops not in (1, 3):
        raise ConfigError(f"num_crops must be 1 or 3, got {num_crops!r}")
    mean, std = _check_normalization(mean, std)
    return EvalTransform(short_side=short_side, crop_size=crop_size, num_crops=num_crops, mean=mean, std=std)
