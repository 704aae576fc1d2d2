"""``data check``: counts, classes and every problem, from disk and S3."""

from __future__ import annotations

import os

import pytest

from actiontrain import storage
from actiontrain.data.check import check_dataset
from actiontrain.data.synth import synthesize

SIZES = {"num_classes": 3, "videos_per_class": 4, "num_frames": (12, 16)}


@pytest.fixture
def ucf(tmp_path):
    root = str(tmp_path / "ucf")
    return root, synthesize(root, format="ucf101", **SIZES)


def test_clean_dataset_has_no_problems(ucf):
    root, summary = ucf
    report = check_dataset(root, deep=True)
    assert report.usable and report.problems == []
    assert report.format == "ucf101" and report.classes == summary.classes
    assert report.subsets == summary.subset_counts()


def test_missing_media_and_unknown_label_are_errors(ucf):
    root, summary = ucf
    victim = summary.items[0]
    os.remove(os.path.join(root, victim.media))
    with open(os.path.join(root, "ucfTrainTestlist", "trainlist01.txt"), "a", newline="") as file:
        file.write("Dance/v_Dance_g01_c01.avi 42\r\n")
    report = check_dataset(root)
    kinds = {(problem.kind, problem.item) for problem in report.problems}
    assert ("missing_media", f"{victim.subset}/{victim.item_id}") in kinds
    assert ("unknown_label", "train/Dance/v_Dance_g01_c01") in kinds
    assert not report.usable
    assert report.to_dict()["problems"][0]["severity"] == "error"


def test_empty_class_is_reported(ucf):
    root, _ = ucf
    path = os.path.join(root, "ucfTrainTestlist", "classInd.txt")
    with open(path, "a", newline="") as file:
        file.write("4 Unused\r\n")
    report = check_dataset(root)
    assert any(p.kind == "empty_class" and "'Unused'" in p.message and p.severity == "error" for p in report.problems)


def test_deep_finds_corrupt_and_truncated_videos(ucf):
    root, summary = ucf
    corrupt, truncated = summary.items[0], summary.items[1]
    size = os.path.getsize(os.path.join(root, corrupt.media))
    with open(os.path.join(root, corrupt.media), "r+b") as file:
        file.seek(12)  # keep the RIFF/AVI signature, destroy the headers and the frames
        file.write(os.urandom(size - 12))
    path = os.path.join(root, truncated.media)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])  # cut in the middle, header still claims every frame
    assert check_dataset(root).usable  # a shallow check cannot see it
    report = check_dataset(root, deep=True)
    bad = {p.item for p in report.problems if p.kind == "undecodable"}
    assert bad == {f"{corrupt.subset}/{corrupt.item_id}", f"{truncated.subset}/{truncated.item_id}"}
    assert all(p.message.startswith(("cannot decode", "truncated video")) for p in report.problems)


def test_deep_finds_unreadable_and_missing_frames(tmp_path):
    root = str(tmp_path / "jester")
    summary = synthesize(root, format="jester", **SIZES)
    broken, emptied = summary.items[0], summary.items[1]
    frames = sorted(os.listdir(os.path.join(root, broken.media)))
    with open(os.path.join(root, broken.media, frames[3]), "wb") as file:
        file.write(b"not a jpeg")
    for name in os.listdir(os.path.join(root, emptied.media)):
        os.remove(os.path.join(root, emptied.media, name))
    report = check_dataset(root, deep=True)
    by_item = {p.item: p.kind for p in report.problems}
    assert by_item[f"{broken.subset}/{broken.item_id}"] == "undecodable"
    assert by_item[f"{emptied.subset}/{emptied.item_id}"] == "missing_media"


@pytest.mark.e2e
def test_check_on_s3_sees_missing_media(s3_bucket):
    root = f"{s3_bucket}/hmdb"
    summary = synthesize(root, format="hmdb51", **SIZES)
    victim = summary.items[-1]
    fs, path = storage.url_to_fs(storage.join(root, victim.media))
    fs.rm(path)
    report = check_dataset(root, deep=True)
    assert [(p.kind, p.item) for p in report.problems] == [("missing_media", f"{victim.subset}/{victim.item_id}")]
    assert report.subsets == summary.subset_counts()
