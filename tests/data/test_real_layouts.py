"""Importers against annotation files written literally as the public datasets ship them.

The synthetic generator and the importers could share a misunderstanding; these fixtures are
copied line by line from the real files' conventions (CRLF, trailing spaces, BOMs, real names).
"""

from __future__ import annotations

import os

import pytest

from actiontrain import storage
from actiontrain.data.catalog import load_dataset
from actiontrain.data.check import check_dataset
from actiontrain.data.media_writer import write_frame_folder, write_video
from actiontrain.data.motion import render_clip
from actiontrain.errors import DataError


def _video(path: str) -> None:
    write_video(path, render_clip("move_left", num_frames=6, height=64, width=160))


def _write(root, relative: str, text: str, *, bom: bool = False) -> None:
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as file:
        file.write((b"\xef\xbb\xbf" if bom else b"") + text.encode())


@pytest.fixture
def ucf(tmp_path):
    root = str(tmp_path)
    # As in UCF101TrainTestSplits-RecognitionTask.zip: CRLF, 1-based ids, classInd's known
    # "HandstandPushups" vs the files' "HandStandPushups" spelling.
    _write(root, "ucfTrainTestlist/classInd.txt", "1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n")
    _write(
        root,
        "ucfTrainTestlist/trainlist01.txt",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nHandstandPushups/v_HandStandPushups_g08_c01.avi 2\r\n",
    )
    _write(root, "ucfTrainTestlist/testlist01.txt", "HandstandPushups/v_HandStandPushups_g01_c01.avi\r\n")
    for relative in (
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
        "HandstandPushups/v_HandStandPushups_g08_c01.avi",
        "HandstandPushups/v_HandStandPushups_g01_c01.avi",
    ):
        _video(os.path.join(root, "UCF-101", relative))
    return root


def test_ucf101_real_lines(ucf):
    dataset = load_dataset(ucf)
    assert dataset.classes == ["ApplyEyeMakeup", "HandstandPushups"]
    assert [(s.item_id, s.label) for s in dataset.samples("test")] == [
        ("HandstandPushups/v_HandStandPushups_g01_c01", 1)
    ]
    report = check_dataset(ucf, deep=True)
    assert report.usable
    assert [(p.severity, p.kind) for p in report.problems] == [("warning", "empty_class")]  # no test video


@pytest.mark.e2e
def test_ucf101_missing_split_file_names_the_url(ucf, s3_bucket):
    os.remove(os.path.join(ucf, "ucfTrainTestlist", "trainlist01.txt"))
    with pytest.raises(DataError, match=r"annotation file missing: .*ucfTrainTestlist/trainlist01\.txt"):
        load_dataset(ucf, format="ucf101")
    fs, path = storage.url_to_fs(s3_bucket)
    fs.put(ucf, f"{path}/ucf", recursive=True)
    with pytest.raises(DataError, match=rf"annotation file missing: {s3_bucket}/ucf/ucfTrainTestlist/trainlist01\.txt"):
        load_dataset(f"{s3_bucket}/ucf", format="ucf101")


def test_duplicate_lines_are_reported_not_fatal(ucf):
    with open(os.path.join(ucf, "ucfTrainTestlist", "trainlist01.txt"), "ab") as file:
        file.write(b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n")
    dataset = load_dataset(ucf)
    assert dataset.subsets == {"test": 1, "train": 2}
    assert [(p.kind, p.item) for p in dataset.problems] == [("duplicate_item", "train/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01")]


def test_hmdb51_real_lines_with_trailing_spaces_and_odd_names(tmp_path):
    root = str(tmp_path)
    names = ["#122_Cleaning_Up_The_Beach_pick_f_cm_np1_ba_bad_0.avi", "Yoga_(Dog)_&_Cat!_stand_u_nm_np1_fr_med_1.avi"]
    # As shipped in test_train_splits.rar: "name.avi F " with a trailing space, LF endings.
    _write(root, "testTrainMulti_7030_splits/pick_test_split1.txt", f"{names[0]} 1 \n{names[1]} 2 \n")
    _write(root, "testTrainMulti_7030_splits/pick_test_split2.txt", f"{names[0]} 0 \n{names[1]} 1 \n")
    for name in names:
        _video(os.path.join(root, "hmdb51_org", "pick", name))
    one = load_dataset(root)
    assert [s.item_id for s in one.samples("train")] == ["pick/" + names[0][:-4]]
    assert [s.item_id for s in one.samples("test")] == ["pick/" + names[1][:-4]]
    assert load_dataset(root, split=2).subsets == {"train": 1}


def test_jester_real_lines_with_bom_and_leaking_ids(tmp_path):
    root = str(tmp_path)
    _write(root, "jester-v1-labels.csv", "Swiping Left\nSwiping Right\nNo gesture\n", bom=True)
    _write(root, "jester-v1-train.csv", "34870;Swiping Left\n56557;Swiping Right\n", bom=True)
    _write(root, "jester-v1-validation.csv", "9223;No gesture\n56557;Swiping Right\n")
    _write(root, "jester-v1-test.csv", "100;\n")
    for video_id in ("34870", "56557", "9223", "100"):
        write_frame_folder(os.path.join(root, "20bn-jester-v1", video_id), render_clip("grow", num_frames=4, height=32, width=48))
    dataset = load_dataset(root)
    assert dataset.classes == ["Swiping Left", "Swiping Right", "No gesture"]
    assert dataset.subsets == {"test": 1, "train": 2, "validation": 1}
    assert [(p.kind, p.item) for p in dataset.problems] == [("duplicate_item", "validation/56557")]
    assert dataset.flip_pairs == [("Swiping Left", "Swiping Right")]


def test_jester_frame_folder_with_a_hole_is_undecodable(tmp_path):
    root = str(tmp_path)
    _write(root, "jester-v1-labels.csv", "Swiping Left\n")
    _write(root, "jester-v1-train.csv", "1;Swiping Left\n")
    _write(root, "jester-v1-validation.csv", "")
    folder = os.path.join(root, "20bn-jester-v1", "1")
    write_frame_folder(folder, render_clip("grow", num_frames=6, height=32, width=48))
    os.remove(os.path.join(folder, "00003.jpg"))
    report = check_dataset(root, deep=True)
    assert [(p.kind, p.item) for p in report.problems] == [("undecodable", "train/1")]
    assert "misses frame 3" in report.problems[0].message


def test_kinetics_400_csv_with_missing_videos_and_underscore_ids(tmp_path):
    root = str(tmp_path)
    # Kinetics-400's header; ids may end in "_" or contain "_0" (Datumaro's substring match misfires).
    _write(
        root,
        "train.csv",
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,--Ntp4N_0UU,14,24,train\n"
        "abseiling,Ntp4N_0UU_,0,10,train\n"
        "air drumming,-I6sHsvSuc8,17,27,train\n"
        "air drumming,-VtLx-mcPds,2,12,train\n",
    )
    _video(os.path.join(root, "train", "--Ntp4N_0UU_000014_000024.mp4"))
    _video(os.path.join(root, "train", "Ntp4N_0UU__000000_000010.mp4"))
    _video(os.path.join(root, "train", "-VtLx-mcPds_000002_000012.mp4"))
    dataset = load_dataset(root)
    urls = {s.item_id: os.path.basename(s.url) for s in dataset.samples("train")}
    assert urls == {
        "--Ntp4N_0UU": "--Ntp4N_0UU_000014_000024.mp4",
        "Ntp4N_0UU_": "Ntp4N_0UU__000000_000010.mp4",
        "-VtLx-mcPds": "-VtLx-mcPds_000002_000012.mp4",
    }
    report = check_dataset(root, max_bad_fraction=0.5)
    assert [(p.kind, p.item) for p in report.problems if p.severity == "error"] == [
        ("missing_media", "train/-I6sHsvSuc8")
    ]
    assert report.usable and not check_dataset(root).usable
