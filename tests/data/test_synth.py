"""Tests for the synthetic dataset generator: exact layouts, real codecs, determinism, S3."""

from __future__ import annotations

import io
import os
import re
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from actiontrain import storage
from actiontrain.data.motion import decode_frame_index
from actiontrain.data.synth import SYNTH_FORMATS, SynthSummary, class_names, synthesize
from actiontrain.errors import ConfigError

NUM_CLASSES = 3
VIDEOS_PER_CLASS = 4
NUM_FRAMES = (16, 24)
SMALL = {"num_classes": NUM_CLASSES, "videos_per_class": VIDEOS_PER_CLASS, "num_frames": NUM_FRAMES, "workers": 2}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, tuple[Path, SynthSummary]]:
    """Every format written once, locally, with the small settings (shared: encoding costs time)."""
    root = tmp_path_factory.mktemp("synth")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACTIONTRAIN_CACHE_DIR", str(root / "cache"))
        return {name: (root / name, synthesize(str(root / name), format=name, **SMALL)) for name in SYNTH_FORMATS}


def _files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def _decoded_indices(source: str | io.BytesIO) -> list[int]:
    with av.open(source) as container:
        return [decode_frame_index(frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]


def _frame_size(source: str) -> tuple[int, int]:
    with av.open(source) as container:
        stream = container.streams.video[0]
        return stream.height, stream.width


def test_ucf101_writes_official_layout_with_crlf_split_lists(written):
    root, summary = written["ucf101"]
    classes = ["MoveLeft", "MoveRight", "MoveUp"]
    assert summary.format == "ucf101" and summary.classes == classes
    videos = [f"{c}/v_{c}_g{g:02d}_c01.avi" for c in classes for g in range(1, VIDEOS_PER_CLASS + 1)]
    lists = [f"ucfTrainTestlist/{kind}list0{s}.txt" for kind in ("train", "test") for s in (1, 2, 3)]
    assert _files(root) == {f"UCF-101/{v}" for v in videos} | {"ucfTrainTestlist/classInd.txt", *lists}
    assert (root / "ucfTrainTestlist/classInd.txt").read_bytes() == b"1 MoveLeft\r\n2 MoveRight\r\n3 MoveUp\r\n"
    assert (root / "ucfTrainTestlist/trainlist01.txt").read_bytes() == b"".join(
        f"{c}/v_{c}_g{g:02d}_c01.avi {i + 1}\r\n".encode() for i, c in enumerate(classes) for g in (2, 3)
    )
    assert (root / "ucfTrainTestlist/testlist01.txt").read_bytes() == b"".join(
        f"{c}/v_{c}_g{g:02d}_c01.avi\r\n".encode() for c in classes for g in (1, 4)
    )
    # Every split holds every video exactly once.
    for split in (1, 2, 3):
        train = (root / f"ucfTrainTestlist/trainlist0{split}.txt").read_text().splitlines()
        test = (root / f"ucfTrainTestlist/testlist0{split}.txt").read_text().splitlines()
        assert sorted([line.split(" ")[0] for line in train] + test) == sorted(videos)
    items = {item.item_id: item for item in summary.items}
    assert items["MoveUp/v_MoveUp_g04_c01"].subset == "test" and items["MoveUp/v_MoveUp_g04_c01"].label == "MoveUp"
    assert items["MoveLeft/v_MoveLeft_g02_c01"].media == "UCF-101/MoveLeft/v_MoveLeft_g02_c01.avi"
    assert summary.subset_counts() == {"test": 6, "train": 6}


def test_hmdb51_names_carry_url_breaking_characters_and_splits_have_trailing_spaces(written):
    root, summary = written["hmdb51"]
    assert summary.classes == ["move_left", "move_right", "move_up"]
    media = sorted(path for path in _files(root) if path.startswith("hmdb51_org/"))
    assert len(media) == NUM_CLASSES * VIDEOS_PER_CLASS
    for path in media:
        name = path.split("/")[-1]
        assert all(char in name for char in "#&!()") and " " not in name and name.endswith(".avi")
    splits = {path for path in _files(root) if path.startswith("testTrainMulti_7030_splits/")}
    assert splits == {f"testTrainMulti_7030_splits/{c}_test_split{s}.txt" for c in summary.classes for s in (1, 2, 3)}
    expected_items = set()
    for name in summary.classes:
        videos = {p.split("/")[-1] for p in media if p.split("/")[1] == name}
        unused_per_split = []
        for split in (1, 2, 3):
            text = (root / f"testTrainMulti_7030_splits/{name}_test_split{split}.txt").read_bytes().decode()
            assert "\r" not in text and text.endswith(" \n")
            lines = [re.fullmatch(r"(.+\.avi) ([012]) ", line) for line in text.split("\n")[:-1]]
            assert all(lines), text
            flags = {m.group(1): int(m.group(2)) for m in lines}
            assert set(flags) == videos
            assert sorted(Counter(flags.values()).items()) == [(0, 1), (1, 2), (2, 1)]
            unused_per_split.append(next(v for v, f in flags.items() if f == 0))
            if split == 1:
                expected_items |= {
                    (f"{name}/{v[:-4]}", "train" if f == 1 else "test") for v, f in flags.items() if f
                }
        assert len(set(unused_per_split)) == 3, "the unused video must change between splits"
    assert {(item.item_id, item.subset) for item in summary.items} == expected_items
    assert all((root / item.media).is_file() for item in summary.items)
    assert summary.subset_counts() == {"test": 3, "train": 6}


def test_jester_writes_jpeg_folders_and_semicolon_csvs(written):
    root, summary = written["jester"]
    classes = ["Swiping Left", "Swiping Right", "Swiping Up"]
    assert summary.classes == classes
    assert (root / "jester-v1-labels.csv").read_bytes() == b"Swiping Left\nSwiping Right\nSwiping Up\n"
    ids = sorted(int(item.item_id) for item in summary.items)
    assert ids == list(range(1, NUM_CLASSES * VIDEOS_PER_CLASS + 1))
    by_subset = {subset: [i for i in summary.items if i.subset == subset] for subset in ("train", "validation", "test")}
    assert summary.subset_counts() == {"test": 3, "train": 6, "validation": 3}
    for subset in ("train", "validation"):
        expected = sorted((int(i.item_id), i.label) for i in by_subset[subset])
        assert (root / f"jester-v1-{subset}.csv").read_text() == "".join(f"{i};{label}\n" for i, label in expected)
    test_ids = sorted(int(i.item_id) for i in by_subset["test"])
    assert (root / "jester-v1-test.csv").read_text() == "".join(f"{i}\n" for i in test_ids)
    assert all(item.label is None for item in by_subset["test"])
    assert all(item.label in classes for item in by_subset["train"] + by_subset["validation"])
    for item in summary.items:
        assert item.media == f"20bn-jester-v1/{item.item_id}"
        names = sorted(os.listdir(root / item.media))
        assert names == [f"{i:05d}.jpg" for i in range(1, item.num_frames + 1)]
    item = summary.items[0]
    frames = [np.asarray(Image.open(root / item.media / f"{i:05d}.jpg")) for i in range(1, item.num_frames + 1)]
    assert frames[0].shape == (100, 176, 3)
    assert [decode_frame_index(frame) for frame in frames] == list(range(item.num_frames))


def test_kinetics_layout_is_read_by_datumaro_with_every_video_found(written):
    import datumaro as dm

    root, summary = written["kinetics"]
    assert summary.classes == ["move left", "move right", "move up"]
    assert summary.subset_counts() == {"test": 3, "train": 6, "val": 3}
    for filename, split in (("train.csv", "train"), ("validate.csv", "val"), ("test.csv", "test")):
        lines = (root / filename).read_text().splitlines()
        assert lines[0] == "label,youtube_id,time_start,time_end,split"
        items = [i for i in summary.items if i.subset == split]
        assert len(lines) == len(items) + 1
        for line, item in zip(lines[1:], items, strict=True):
            label, youtube_id, start, end, split_value = line.split(",")
            assert (label, youtube_id, split_value) == (item.label, item.item_id, split)
            assert re.fullmatch(r"[A-Za-z0-9_-]{11}", youtube_id) and int(end) == int(start) + 10
            assert item.media == f"{split}/{youtube_id}_{int(start):06d}_{int(end):06d}.mp4"
    assert len({i.item_id for i in summary.items}) == len(summary.items)

    dataset = dm.Dataset.import_from(str(root), "kinetics")
    assert len(dataset) == len(summary.items)
    labels = dataset.categories()[dm.AnnotationType.label]
    expected = {item.item_id: item for item in summary.items}
    for item in dataset:
        assert item.media is not None, f"datumaro found no video for {item.id}"
        assert Path(item.media.path) == root / expected[item.id].media
        assert item.subset == expected[item.id].subset
        assert labels[item.annotations[0].label].name == expected[item.id].label


def test_datumaro_export_is_read_back_by_datumaro(written):
    import datumaro as dm

    root, summary = written["datumaro"]
    assert summary.classes == ["MoveLeft", "MoveRight", "MoveUp"]
    assert _files(root) == {"annotations/train.json", "annotations/test.json"} | {i.media for i in summary.items}
    assert {i.media for i in summary.items if i.subset == "test"} == {
        f"videos/test/v_{c}_g{g:02d}_c01.avi" for c in summary.classes for g in (1, 4)
    }
    dataset = dm.Dataset.import_from(str(root), "datumaro")
    assert len(dataset) == len(summary.items)
    assert Counter(item.subset for item in dataset) == Counter(summary.subset_counts())
    labels = dataset.categories()[dm.AnnotationType.label]
    assert [category.name for category in labels] == summary.classes
    expected = {(item.item_id, item.subset): item for item in summary.items}
    for item in dataset:
        synth = expected[(item.id, item.subset)]
        motion = class_names("hmdb51")[summary.classes.index(synth.label)]
        assert item.id == f"{motion}/{Path(synth.media).stem}"
        assert labels[item.annotations[0].label].name == synth.label
        assert Path(item.media.path) == root / synth.media


@pytest.mark.parametrize("name", ["ucf101", "hmdb51", "kinetics", "datumaro"])
def test_encoded_videos_decode_to_every_frame_in_order(written, name):
    root, summary = written[name]
    item = summary.items[-1]
    assert NUM_FRAMES[0] <= item.num_frames <= NUM_FRAMES[1]
    assert _frame_size(str(root / item.media)) == (240, 320)
    assert _decoded_indices(str(root / item.media)) == list(range(item.num_frames))


def test_frame_counts_vary_within_the_range(written):
    counts = {item.num_frames for item in written["ucf101"][1].items}
    assert len(counts) > 1 and all(NUM_FRAMES[0] <= n <= NUM_FRAMES[1] for n in counts)


def test_same_seed_gives_same_dataset_and_another_seed_differs(tmp_path):
    settings = {"format": "kinetics", "num_classes": 1, "videos_per_class": 3, "num_frames": (2, 9), "workers": 2}
    first = synthesize(str(tmp_path / "a"), seed=7, **settings)
    again = synthesize(str(tmp_path / "b"), seed=7, **settings)
    other = synthesize(str(tmp_path / "c"), seed=8, **settings)
    assert first == again
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert [(i.item_id, i.num_frames) for i in other.items] != [(i.item_id, i.num_frames) for i in first.items]


def test_class_names_follow_motion_order():
    assert class_names("jester")[-1] == "Turning Hand Counterclockwise"
    assert class_names("kinetics")[:2] == ["move left", "move right"]
    assert class_names("hmdb51")[6] == "rotate_clockwise"


@pytest.mark.parametrize(
    ("overrides", "argument"),
    [
        ({"format": "ucf"}, "format"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 9}, "num_classes"),
        ({"videos_per_class": 0}, "videos_per_class"),
        ({"videos_per_class": 100}, "videos_per_class"),
        ({"num_frames": (10, 5)}, "num_frames"),
        ({"num_frames": (0, 5)}, "num_frames"),
        ({"seed": -1}, "seed"),
        ({"workers": 0}, "workers"),
    ],
)
def test_bad_arguments_raise_config_error_naming_the_argument(tmp_path, overrides, argument):
    arguments = {"format": "ucf101", **overrides}
    with pytest.raises(ConfigError, match=rf"^{argument} must be .*got "):
        synthesize(str(tmp_path), **arguments)
    assert not any(tmp_path.iterdir()), "nothing may be written when the arguments are bad"


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["hmdb51", "jester"])
def test_writes_to_s3_with_the_same_keys_as_locally(written, s3_bucket, name):
    local_root, local_summary = written[name]
    url = storage.join(s3_bucket, "datasets", name)
    summary = synthesize(url, format=name, **SMALL)
    assert summary == local_summary
    assert set(storage.find(url)) == _files(local_root)
    item = summary.items[0]
    if name == "hmdb51":
        # Keys with '#', '&', '!' and parentheses survive the round trip and decode.
        data = storage.read_bytes(storage.join(url, item.media))
        assert _decoded_indices(io.BytesIO(data)) == list(range(item.num_frames))
        split = f"testTrainMulti_7030_splits/{summary.classes[0]}_test_split1.txt"
        assert storage.read_text(storage.join(url, split)) == (local_root / split).read_text()
    else:
        frames = storage.listdir(storage.join(url, item.media))
        assert frames == [f"{i:05d}.jpg" for i in range(1, item.num_frames + 1)]
        assert storage.read_text(storage.join(url, "jester-v1-train.csv")) == (
            local_root / "jester-v1-train.csv"
        ).read_text()
