"""Synthetic action datasets written in the original layouts of UCF101, HMDB51, Jester, Kinetics, Datumaro.

Classes differ only in motion (see :mod:`actiontrain.data.motion`), videos are encoded with the
codecs the real datasets ship, and file names, split files and line endings copy the originals,
including their awkward parts (CRLF lists, ``#&!()`` in names, trailing spaces), so importers are
tested against what they will really meet.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import datumaro as dm
import numpy as np
from datumaro.components.annotation import AnnotationType, Label, LabelCategories
from datumaro.components.media import Video

from actiontrain import storage
from actiontrain.data.formats.common import FLIP_PAIRS_INFO
from actiontrain.data.media_writer import write_frame_folder, write_video
from actiontrain.data.motion import MOTIONS, render_clip
from actiontrain.errors import ConfigError, DataError

__all__ = ["SYNTH_FORMATS", "SynthItem", "SynthSummary", "class_names", "synthesize"]

logger = logging.getLogger(__name__)

SYNTH_FORMATS: tuple[str, ...] = ("ucf101", "hmdb51", "jester", "kinetics", "datumaro")
"""Layouts :func:`synthesize` can write."""

_UCF_CLASSES = (
    "MoveLeft", "MoveRight", "MoveUp", "MoveDown", "Grow", "Shrink", "RotateClockwise", "RotateCounterclockwise",
)
_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "ucf101": _UCF_CLASSES,
    "hmdb51": tuple(motion.key for motion in MOTIONS),
    "jester": (
        "Swiping Left", "Swiping Right", "Swiping Up", "Swiping Down", "Zooming In With Full Hand",
        "Zooming Out With Full Hand", "Turning Hand Clockwise", "Turning Hand Counterclockwise",
    ),
    "kinetics": tuple(motion.key.replace("_", " ") for motion in MOTIONS),
    "datumaro": _UCF_CLASSES,
}

# Frame size (height, width) and frame rate of each layout, as in the real datasets.
_FRAME_SIZE = {
    "ucf101": (240, 320),
    "hmdb51": (240, 320),
    "jester": (100, 176),
    "kinetics": (240, 320),
    "datumaro": (240, 320),
}
_FPS = {"ucf101": 25, "hmdb51": 30, "jester": 12, "kinetics": 30, "datumaro": 25}

# UCF names carry the group as two digits (g01..g25 in the real set).
_MAX_UCF_GROUPS = 99

# Real HMDB51 titles come from movies and YouTube and contain characters that break naive URL
# handling ('#' starts a fragment, '&' a query parameter); every synthetic name has all of them.
_HMDB_TITLES = (
    "Sample_#{k}_(take)_&_go!",
    "(Best_Of)_Clip_#{k}_Rock_&_Roll!",
    "Wow!_&_More_(part_#{k})",
    "#{k}_Fun_&_Games_(HD)!",
)
# HMDB51 name tags: visible body part, camera motion, number of people, viewpoint, quality.
_HMDB_TAGS = (("f", "u", "h", "l"), ("nm", "cm"), ("np1", "np2", "np3"), ("fr", "ba", "le", "ri"),
              ("goo", "med", "bad"))

_YOUTUBE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_KINETICS_CSV = (("train.csv", "train"), ("validate.csv", "val"), ("test.csv", "test"))

# Independent random streams, so changing how one thing is drawn never shifts the others.
_STREAM_VIDEO, _STREAM_SPLIT, _STREAM_IDS = 0, 1, 2


@dataclass(frozen=True, kw_only=True)
class SynthItem:
    """One written video, described as the layout's importer should report it."""

    item_id: str
    """The id the importer gives it, e.g. ``MoveLeft/v_MoveLeft_g01_c01``."""
    subset: str
    """Its subset (split 1 where the layout has several splits)."""
    label: str | None
    """Its class name; ``None`` where the layout gives none (Jester's test set)."""
    media: str
    """Path of its video file (or Jester frame folder) relative to the dataset root."""
    num_frames: int
    """Number of frames written."""


@dataclass(frozen=True, kw_only=True)
class SynthSummary:
    """What :func:`synthesize` wrote."""

    format: str
    """The layout, one of :data:`SYNTH_FORMATS`."""
    classes: list[str]
    """Class names in class-index order."""
    items: list[SynthItem]
    """Every item of the dataset (split 1), in class order."""
    flip_pairs: list[tuple[str, str]] = field(default_factory=list)
    """Classes that become each other under a horizontal flip (left/right, the two rotations).
    Jester's and Datumaro's layouts declare them; UCF101's, HMDB51's and Kinetics' cannot, so pass
    them on when converting (``convert_dataset(..., flip_pairs=...)``) or in ``data.flip_pairs``."""

    def subset_counts(self) -> dict[str, int]:
        """Number of items per subset, keyed by subset name in sorted order."""
        counts = Counter(item.subset for item in self.items)
        return {subset: counts[subset] for subset in sorted(counts)}


@dataclass(frozen=True, kw_only=True)
class _Video:
    media: str
    motion: str
    num_frames: int
    seed: int


@dataclass(kw_only=True)
class _Plan:
    videos: list[_Video] = field(default_factory=list)
    items: list[SynthItem] = field(default_factory=list)
    text_files: dict[str, str] = field(default_factory=dict)


def class_names(format: str) -> list[str]:
    """All eight class names of ``format``, in class-index order (the order of ``MOTIONS``)."""
    _check_format(format)
    return list(_CLASS_NAMES[format])


def synthesize(
    dst: str,
    *,
    format: str,
    num_classes: int = 4,
    videos_per_class: int = 6,
    num_frames: tuple[int, int] = (40, 64),
    seed: int = 0,
    workers: int = 4,
) -> SynthSummary:
    """Writes a small synthetic action dataset under ``dst`` in a public dataset's original layout.

    Each video shows one object performing the motion of its class; the frame count is drawn
    from ``num_frames`` per video and every frame carries its index as a code (see
    :func:`~actiontrain.data.motion.decode_frame_index`). Media are written before the annotation
    files, so a reader that finds the annotations finds every video too. Existing files under
    ``dst`` are overwritten, never deleted.

    Args:
        dst: Dataset root: a local path or any URL :mod:`actiontrain.storage` accepts.
        format: One of :data:`SYNTH_FORMATS`.
        num_classes: Number of classes, 1 to 8, taken from ``MOTIONS`` in order.
        videos_per_class: Videos per class (at most 99 for ``ucf101`` and ``datumaro``).
        num_frames: Inclusive range ``(min, max)`` of frames per video.
        seed: Seed of every random choice; the same seed writes the same dataset.
        workers: Number of videos rendered and encoded at once.

    Returns:
        The classes and items written; where the layout has three splits, items are those of split 1.

    Raises:
        ConfigError: an argument is out of range.
        StorageError: ``dst`` cannot be written.
    """
    _check_arguments(
        format=format,
        num_classes=num_classes,
        videos_per_class=videos_per_class,
        num_frames=num_frames,
        seed=seed,
        workers=workers,
    )
    classes = list(_CLASS_NAMES[format][:num_classes])
    draw = _VideoDraw(seed=seed, num_frames=(int(num_frames[0]), int(num_frames[1])))
    planner = _PLANNERS[format]
    plan = planner(classes, videos_per_class=videos_per_class, seed=seed, draw=draw)
    size, fps = _FRAME_SIZE[format], _FPS[format]
    flip_pairs = mirror_pairs(classes, _CLASS_NAMES[format])
    if format == "datumaro":
        _write_datumaro(dst, plan, classes=classes, flip_pairs=flip_pairs, size=size, fps=fps, workers=workers)
    else:
        _write_media(dst, plan.videos, size=size, fps=fps, workers=workers)
    for path, text in plan.text_files.items():
        storage.write_bytes(storage.join(dst, path), text.encode("utf-8"))
    logger.info("wrote %d synthetic %s videos of %d classes to %s", len(plan.videos), format, len(classes), dst)
    return SynthSummary(format=format, classes=classes, items=plan.items, flip_pairs=flip_pairs)


def mirror_pairs(classes: Sequence[str], names: Sequence[str]) -> list[tuple[str, str]]:
    """The pairs among ``classes`` whose motions mirror each other (``names`` spells ``MOTIONS``)."""
    name_of = {motion.key: name for motion, name in zip(MOTIONS, names)}
    pairs = []
    for motion, name in zip(MOTIONS, names):
        mirror = name_of[motion.mirror]
        if name < mirror and name in classes and mirror in classes:
            pairs.append((name, mirror))
    return sorted(pairs, key=lambda pair: list(names).index(pair[0]))


def _check_format(format: str) -> None:
    if format not in SYNTH_FORMATS:
        raise ConfigError(f"format must be one of {', '.join(SYNTH_FORMATS)}, got {format!r}")


def _check_arguments(
    *, format: str, num_classes: int, videos_per_class: int, num_frames: tuple[int, int], seed: int, workers: int
) -> None:
    _check_format(format)
    if not _is_int(num_classes) or not 1 <= num_classes <= len(MOTIONS):
        raise ConfigError(f"num_classes must be between 1 and {len(MOTIONS)}, got {num_classes!r}")
    limit = _MAX_UCF_GROUPS if format in ("ucf101", "datumaro") else None
    if not _is_int(videos_per_class) or videos_per_class < 1 or (limit and videos_per_class > limit):
        valid = f"between 1 and {limit}" if limit else ">= 1"
        raise ConfigError(f"videos_per_class must be {valid} for format {format}, got {videos_per_class!r}")
    if (
        not isinstance(num_frames, Sequence)
        or len(num_frames) != 2
        or not all(_is_int(n) for n in num_frames)
        or not 1 <= num_frames[0] <= num_frames[1]
    ):
        raise ConfigError(
            f"num_frames must be a range (min, max) with 1 <= min <= max, e.g. (40, 64), got {num_frames!r}"
        )
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    if not _is_int(workers) or workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


@dataclass(frozen=True, kw_only=True)
class _VideoDraw:
    """Draws the content of video ``index`` of class ``label``: same seed, same video in every layout."""

    seed: int
    num_frames: tuple[int, int]

    def __call__(self, *, label: int, index: int, media: str) -> _Video:
        rng = _rng(self.seed, _STREAM_VIDEO, label, index)
        length = int(rng.integers(self.num_frames[0], self.num_frames[1] + 1))
        return _Video(media=media, motion=MOTIONS[label].key, num_frames=length, seed=int(rng.integers(2**31)))


def _lines(lines: Sequence[str], *, newline: str = "\n") -> str:
    return "".join(line + newline for line in lines)


def _three_way(count: int) -> tuple[int, int, int]:
    """Train / validation / test sizes: about 60/20/20, each at least 1 from three videos on."""
    if count >= 3:
        held_out = max(1, round(0.2 * count))
        return count - 2 * held_out, held_out, held_out
    return (1, 1, 0) if count == 2 else (1, 0, 0)


def _assign(order: np.ndarray, sizes: Sequence[tuple[str, int | None]]) -> dict[int, str]:
    """Maps each index of ``order`` to a subset: the first ``size`` indices to the first, and so on."""
    subsets: dict[int, str] = {}
    bounds, total = [], 0
    for name, size in sizes:
        total = len(order) if size is None else total + size
        bounds.append((total, name))
    for rank, index in enumerate(order):
        subsets[int(index)] = next(name for bound, name in bounds if rank < bound)
    return subsets


def _plan_ucf101(classes: list[str], *, videos_per_class: int, seed: int, draw: _VideoDraw) -> _Plan:
    plan = _Plan()
    train: dict[int, list[str]] = {split: [] for split in (1, 2, 3)}
    test: dict[int, list[str]] = {split: [] for split in (1, 2, 3)}
    for label, name in enumerate(classes):
        for index in range(videos_per_class):
            group = index + 1
            relative = f"{name}/v_{name}_g{group:02d}_c01.avi"
            media = f"UCF-101/{relative}"
            video = draw(label=label, index=index, media=media)
            plan.videos.append(video)
            # UCF101 holds out whole groups (same actor/scene) per split, never single clips.
            for split in (1, 2, 3):
                if (group - 1) % 3 == split - 1:
                    test[split].append(relative)
                else:
                    train[split].append(f"{relative} {label + 1}")
            subset = "test" if (group - 1) % 3 == 0 else "train"
            plan.items.append(
                SynthItem(
                    item_id=relative.removesuffix(".avi"),
                    subset=subset,
                    label=name,
                    media=media,
                    num_frames=video.num_frames,
                )
            )
    # The real lists are Windows files: CRLF line endings.
    plan.text_files["ucfTrainTestlist/classInd.txt"] = _lines(
        [f"{label + 1} {name}" for label, name in enumerate(classes)], newline="\r\n"
    )
    for split in (1, 2, 3):
        plan.text_files[f"ucfTrainTestlist/trainlist{split:02d}.txt"] = _lines(train[split], newline="\r\n")
        plan.text_files[f"ucfTrainTestlist/testlist{split:02d}.txt"] = _lines(test[split], newline="\r\n")
    return plan


def _hmdb_name(name: str, index: int) -> str:
    title = _HMDB_TITLES[index % len(_HMDB_TITLES)].format(k=index)
    tags = "_".join(choices[(index + offset) % len(choices)] for offset, choices in enumerate(_HMDB_TAGS))
    return f"{title}_{name}_{tags}_{index}"


def _plan_hmdb51(classes: list[str], *, videos_per_class: int, seed: int, draw: _VideoDraw) -> _Plan:
    plan = _Plan()
    count = videos_per_class
    # Like the real 70/30 splits, a few videos per class are in neither subset (flag 0), and
    # which ones changes between splits: importers must skip them rather than guess.
    num_unused = max(1, count // 10) if count >= 4 else 0
    kept = count - num_unused
    num_test = max(1, round(0.3 * kept)) if kept >= 2 else 0
    for label, name in enumerate(classes):
        names = [_hmdb_name(name, index) for index in range(count)]
        order = _rng(seed, _STREAM_SPLIT, label).permutation(count)
        flags_by_split: dict[int, list[int]] = {}
        for split in (1, 2, 3):
            # Rotating by num_unused gives each split different unused videos (3 * unused <= count).
            rotated = np.roll(order, -(split - 1) * num_unused)
            flags = [1] * count
            for position, index in enumerate(rotated):
                if position < num_unused:
                    flags[index] = 0
                elif position < num_unused + num_test:
                    flags[index] = 2
            flags_by_split[split] = flags
            # The real files list videos sorted by name and end each line with a space.
            lines = [f"{names[i]}.avi {flags[i]} " for i in sorted(range(count), key=lambda i: names[i])]
            plan.text_files[f"testTrainMulti_7030_splits/{name}_test_split{split}.txt"] = _lines(lines)
        for index in range(count):
            media = f"hmdb51_org/{name}/{names[index]}.avi"
            video = draw(label=label, index=index, media=media)
            plan.videos.append(video)
            flag = flags_by_split[1][index]
            if flag:
                plan.items.append(
                    SynthItem(
                        item_id=f"{name}/{names[index]}",
                        subset="train" if flag == 1 else "test",
                        label=name,
                        media=media,
                        num_frames=video.num_frames,
                    )
                )
    return plan


def _plan_jester(classes: list[str], *, videos_per_class: int, seed: int, draw: _VideoDraw) -> _Plan:
    plan = _Plan()
    count = videos_per_class
    # Ids 1..N shuffled across classes and subsets, as in the real release.
    ids = _rng(seed, _STREAM_IDS).permutation(len(classes) * count) + 1
    num_train, num_val, _ = _three_way(count)
    rows: dict[str, list[tuple[int, str]]] = {"train": [], "validation": [], "test": []}
    for label, name in enumerate(classes):
        order = _rng(seed, _STREAM_SPLIT, label).permutation(count)
        subsets = _assign(order, (("train", num_train), ("validation", num_val), ("test", None)))
        for index in range(count):
            video_id = int(ids[label * count + index])
            media = f"20bn-jester-v1/{video_id}"
            video = draw(label=label, index=index, media=media)
            plan.videos.append(video)
            subset = subsets[index]
            rows[subset].append((video_id, name))
            plan.items.append(
                SynthItem(
                    item_id=str(video_id),
                    subset=subset,
                    label=None if subset == "test" else name,
                    media=media,
                    num_frames=video.num_frames,
                )
            )
    plan.text_files["jester-v1-labels.csv"] = _lines(classes)
    for subset in ("train", "validation"):
        plan.text_files[f"jester-v1-{subset}.csv"] = _lines([f"{i};{name}" for i, name in sorted(rows[subset])])
    plan.text_files["jester-v1-test.csv"] = _lines([str(i) for i, _ in sorted(rows["test"])])
    return plan


def _youtube_ids(seed: int, count: int) -> list[str]:
    rng = _rng(seed, _STREAM_IDS)
    ids: list[str] = []
    while len(ids) < count:
        candidate = "".join(_YOUTUBE_ALPHABET[i] for i in rng.integers(len(_YOUTUBE_ALPHABET), size=11))
        # Datumaro finds a video by a substring match of the id in file names
        # (<id>_<start>_<end>.mp4), so no id may occur inside another video's name: an 11-character
        # id can only do so by ending in "_" or running into the time fields ("_0...").
        if candidate not in ids and not candidate.endswith("_") and "_0" not in candidate:
            ids.append(candidate)
    return ids


def _plan_kinetics(classes: list[str], *, videos_per_class: int, seed: int, draw: _VideoDraw) -> _Plan:
    plan = _Plan()
    count = videos_per_class
    ids = _youtube_ids(seed, len(classes) * count)
    starts = _rng(seed, _STREAM_IDS, 1).integers(0, 291, size=len(classes) * count)
    num_train, num_val, _ = _three_way(count)
    rows: dict[str, list[list[str]]] = {split: [] for _, split in _KINETICS_CSV}
    for label, name in enumerate(classes):
        order = _rng(seed, _STREAM_SPLIT, label).permutation(count)
        splits = _assign(order, (("train", num_train), ("val", num_val), ("test", None)))
        for index in range(count):
            youtube_id, start = ids[label * count + index], int(starts[label * count + index])
            split = splits[index]
            media = f"{split}/{youtube_id}_{start:06d}_{start + 10:06d}.mp4"
            video = draw(label=label, index=index, media=media)
            plan.videos.append(video)
            rows[split].append([name, youtube_id, str(start), str(start + 10), split])
            plan.items.append(
                SynthItem(item_id=youtube_id, subset=split, label=name, media=media, num_frames=video.num_frames)
            )
    for filename, split in _KINETICS_CSV:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        writer.writerows(rows[split])
        plan.text_files[filename] = buffer.getvalue()
    return plan


def _plan_datumaro(classes: list[str], *, videos_per_class: int, seed: int, draw: _VideoDraw) -> _Plan:
    plan = _Plan()
    for label, name in enumerate(classes):
        for index in range(videos_per_class):
            group = index + 1
            stem = f"v_{name}_g{group:02d}_c01"
            subset = "test" if (group - 1) % 3 == 0 else "train"  # UCF101 split 1
            # Datumaro's exporter flattens media to videos/<subset>/<file name>: names stay unique.
            video = draw(label=label, index=index, media=f"videos/{subset}/{stem}.avi")
            plan.videos.append(video)
            plan.items.append(
                SynthItem(
                    item_id=f"{MOTIONS[label].key}/{stem}",
                    subset=subset,
                    label=name,
                    media=video.media,
                    num_frames=video.num_frames,
                )
            )
    return plan


_PLANNERS: dict[str, Callable[..., _Plan]] = {
    "ucf101": _plan_ucf101,
    "hmdb51": _plan_hmdb51,
    "jester": _plan_jester,
    "kinetics": _plan_kinetics,
    "datumaro": _plan_datumaro,
}


def _write_media(root: str, videos: Sequence[_Video], *, size: tuple[int, int], fps: int, workers: int) -> None:
    height, width = size

    def write(video: _Video) -> None:
        # Rendered inside the task, so at most `workers` clips are in memory at once.
        frames = render_clip(video.motion, num_frames=video.num_frames, height=height, width=width, seed=video.seed)
        url = storage.join(root, video.media)
        if os.path.splitext(video.media)[1]:
            write_video(url, frames, fps=fps)
        else:
            write_frame_folder(url, frames)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="synth") as pool:
        # Consuming the results re-raises the first failure here and cancels what has not started.
        for _ in pool.map(write, videos):
            pass


def _write_datumaro(
    dst: str,
    plan: _Plan,
    *,
    classes: list[str],
    flip_pairs: list[tuple[str, str]],
    size: tuple[int, int],
    fps: int,
    workers: int,
) -> None:
    # Datumaro only exports to local folders: encode and export in local scratch, then upload.
    with tempfile.TemporaryDirectory(prefix="synth-datumaro-", dir=storage.cache_dir("tmp")) as scratch:
        sources = os.path.join(scratch, "sources")
        exported = os.path.join(scratch, "dataset")
        _write_media(sources, plan.videos, size=size, fps=fps, workers=workers)
        dataset = dm.Dataset.from_iterable(
            [
                dm.DatasetItem(
                    id=item.item_id,
                    subset=item.subset,
                    media=Video(os.path.join(sources, video.media)),
                    annotations=[Label(classes.index(item.label))],
                )
                for item, video in zip(plan.items, plan.videos, strict=True)
            ],
            categories={AnnotationType.label: LabelCategories.from_iterable(classes)},
            media_type=Video,
            infos={FLIP_PAIRS_INFO: [list(pair) for pair in flip_pairs]} if flip_pairs else {},
        )
        dataset.export(exported, "datumaro", save_media=True)
        written = set(storage.find(exported))
        expected = {item.media for item in plan.items} | {f"annotations/{item.subset}.json" for item in plan.items}
        if not expected <= written:
            missing = ", ".join(sorted(expected - written)[:3])
            raise DataError(
                f"Datumaro's exporter did not write the expected layout (missing {missing}); "
                "datumaro 1.13 is known to work"
            )

        def upload(relative: str) -> None:
            storage.copy(storage.join(exported, relative), storage.join(dst, relative))

        # Media first, annotations last, as for the other layouts.
        annotations = sorted(path for path in written if path.startswith("annotations/"))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="synth-upload") as pool:
            for _ in pool.map(upload, sorted(written - set(annotations))):
                pass
        for relative in annotations:
            upload(relative)
