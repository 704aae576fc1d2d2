"""Each supported layout imported through Datumaro, from disk and from S3, with exact contents."""

from __future__ import annotations

import hashlib

import datumaro
import pytest

from actiontrain import storage
from actiontrain.data.catalog import load_dataset
from actiontrain.data.convert import convert_dataset
from actiontrain.data.formats import FORMATS
from actiontrain.data.synth import synthesize
from actiontrain.errors import ConfigError, DataError

SIZES = {"num_classes": 3, "videos_per_class": 4, "num_frames": (12, 16)}


@pytest.fixture(scope="module")
def local_datasets(tmp_path_factory):
    """Every format written once to local disk: format -> (root, summary)."""
    root = tmp_path_factory.mktemp("datasets")
    return {name: (str(root / name), synthesize(str(root / name), format=name, seed=7, **SIZES)) for name in FORMATS}


@pytest.fixture(scope="module")
def s3_datasets(_s3_session_env, s3_server):
    bucket = s3_server.create_bucket("formats-module")
    return {
        name: (f"{bucket}/{name}", synthesize(f"{bucket}/{name}", format=name, seed=7, **SIZES)) for name in FORMATS
    }


def _expected_items(summary) -> dict[tuple[str, str], str | None]:
    return {(item.subset, item.item_id): item.label for item in summary.items}


def _imported_items(dataset) -> dict[tuple[str, str], str | None]:
    result = {}
    for subset in dataset.subsets:
        for sample in dataset.samples(subset):
            label = None if sample.label is None else dataset.classes[sample.label]
            result[(subset, sample.item_id)] = label
    return result


def _assert_matches(dataset, root, summary):
    assert dataset.format == summary.format
    assert dataset.classes == summary.classes
    assert dataset.subsets == summary.subset_counts()
    assert _imported_items(dataset) == _expected_items(summary)
    media = {(item.subset, item.item_id): storage.join(root, item.media) for item in summary.items}
    for subset in dataset.subsets:
        for sample in dataset.samples(subset):
            assert sample.url == media[(subset, sample.item_id)]
    assert dataset.problems == []


@pytest.mark.parametrize("format_name", FORMATS)
def test_import_from_disk_with_detection(local_datasets, format_name):
    root, summary = local_datasets[format_name]
    _assert_matches(load_dataset(root), root, summary)


@pytest.mark.e2e
@pytest.mark.parametrize("format_name", FORMATS)
def test_import_from_s3_with_detection(s3_datasets, format_name):
    root, summary = s3_datasets[format_name]
    _assert_matches(load_dataset(root), root, summary)


@pytest.mark.e2e
def test_import_through_simplecache_chain(s3_datasets):
    root, summary = s3_datasets["hmdb51"]
    dataset = load_dataset("simplecache::" + root, format="hmdb51")
    assert dataset.subsets == summary.subset_counts()
    sample = dataset.samples("train")[0]
    assert sample.url.startswith("simplecache::s3://") and "#" in sample.url
    assert storage.read_bytes(sample.url)[:4] == b"RIFF"  # AVI container, read through the chain


@pytest.mark.parametrize("format_name", ["ucf101", "hmdb51", "jester", "kinetics"])
def test_plain_datumaro_api_knows_the_formats(local_datasets, format_name):
    root, summary = local_datasets[format_name]
    assert datumaro.Dataset.detect(root) == format_name
    dataset = datumaro.Dataset.import_from(root, format_name)
    assert len(dataset) == len(summary.items)


@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf101_splits_differ_and_cover_all_videos(local_datasets, split):
    root, summary = local_datasets["ucf101"]
    dataset = load_dataset(root, split=split)
    test_ids = {sample.item_id for sample in dataset.samples("test")}
    groups = {int(item_id.rsplit("_g", 1)[1][:2]) for item_id in test_ids}
    assert groups and all((group - 1) % 3 == split - 1 for group in groups)
    assert sum(dataset.subsets.values()) == len(summary.items)


def test_hmdb51_split_two_differs_and_skips_unused(local_datasets):
    root, _ = local_datasets["hmdb51"]
    one, two = load_dataset(root, split=1), load_dataset(root, split=2)
    assert {s.item_id for s in one.samples("test")} != {s.item_id for s in two.samples("test")}
    lines = storage.read_text(storage.join(root, "testTrainMulti_7030_splits", "move_left_test_split2.txt"))
    unused = {line.rsplit(" ", 2)[0][:-4] for line in lines.splitlines() if line.rstrip().endswith(" 0")}
    assert unused and not unused & {s.item_id.split("/", 1)[1] for s in two.samples("train") + two.samples("test")}


def test_jester_declares_flip_pairs_and_unlabelled_test(local_datasets):
    root, _ = local_datasets["jester"]
    dataset = load_dataset(root)
    assert ("Swiping Left", "Swiping Right") in dataset.flip_pairs
    assert all(sample.label is None for sample in dataset.samples("test"))
    assert all(sample.label is not None for sample in dataset.samples("train"))


def _media_digest(url: str) -> str:
    digest = hashlib.sha256()
    files = storage.find(url) if not url.endswith((".avi", ".mp4")) else [""]
    for relative in files:
        digest.update(storage.read_bytes(storage.join(url, relative) if relative else url))
    return digest.hexdigest()


def _snapshot(dataset) -> dict:
    return {
        (subset, sample.item_id): (sample.label, _media_digest(sample.url))
        for subset in dataset.subsets
        for sample in dataset.samples(subset)
    }


@pytest.mark.parametrize("format_name", ["ucf101", "jester", "kinetics"])
def test_datumaro_round_trip_is_lossless(local_datasets, tmp_path, format_name):
    root, _ = local_datasets[format_name]
    original = load_dataset(root)
    convert_dataset(original, str(tmp_path / "first"))
    first = load_dataset(str(tmp_path / "first"))
    assert first.format == "datumaro"
    assert first.classes == original.classes and first.flip_pairs == original.flip_pairs
    assert _snapshot(first) == _snapshot(original)
    convert_dataset(first, str(tmp_path / "second"))
    for subset in first.subsets:  # a second conversion writes byte-identical annotations
        name = f"annotations/{subset}.json"
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()


def test_generated_mirror_pairs_are_declared_where_the_layout_can_and_added_by_convert_where_it_cannot(
    local_datasets, tmp_path
):
    ucf_root, ucf = local_datasets["ucf101"]
    assert ucf.classes == ["MoveLeft", "MoveRight", "MoveUp"] and ucf.flip_pairs == [("MoveLeft", "MoveRight")]
    assert load_dataset(ucf_root).flip_pairs == []  # UCF101's layout has no place for them
    datumaro_root, datumaro_summary = local_datasets["datumaro"]
    assert load_dataset(datumaro_root).flip_pairs == datumaro_summary.flip_pairs == [("MoveLeft", "MoveRight")]
    convert_dataset(load_dataset(ucf_root), str(tmp_path / "internal"), flip_pairs=ucf.flip_pairs)
    assert load_dataset(str(tmp_path / "internal")).flip_pairs == [("MoveLeft", "MoveRight")]


def test_a_flip_pair_naming_no_class_is_one_line_naming_the_classes(local_datasets, tmp_path):
    root, _ = local_datasets["ucf101"]
    with pytest.raises(ConfigError, match=r"flip pair \['MoveLeft', 'Left'\] .*not a class: 'Left'; classes: MoveLeft, MoveRight, MoveUp"):
        convert_dataset(load_dataset(root), str(tmp_path / "internal"), flip_pairs=[("MoveLeft", "Left")])
    assert not (tmp_path / "internal").exists()  # refused before anything is written


@pytest.mark.e2e
def test_convert_from_s3_to_s3(s3_datasets):
    root, summary = s3_datasets["hmdb51"]
    destination = root.rsplit("/", 1)[0] + "/hmdb51-internal"
    report = convert_dataset(load_dataset(root), destination)
    assert report.subsets == summary.subset_counts()
    assert _snapshot(load_dataset(destination)) == _snapshot(load_dataset(root))


def test_wrong_format_is_one_clear_error(local_datasets):
    root, _ = local_datasets["ucf101"]
    with pytest.raises(DataError, match=r"is not a jester dataset .*jester-v1-labels\.csv.*--format"):
        load_dataset(root, format="jester")
    with pytest.raises(ConfigError, match=r"unknown dataset format 'avi'; valid: ucf101, hmdb51"):
        load_dataset(root, format="avi")
    with pytest.raises(ConfigError, match=r"ucf101 split must be 1, 2 or 3, got 4"):
        load_dataset(root, split=4)


def test_unrecognised_folder_lists_the_layouts(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"no supported dataset layout at .*ucf101: UCF-101/"):
        load_dataset(str(tmp_path))


def test_convert_over_an_older_dataset_leaves_no_stale_subset(local_datasets, tmp_path):
    destination = str(tmp_path / "internal")
    convert_dataset(load_dataset(local_datasets["jester"][0]), destination)  # train/validation/test
    convert_dataset(load_dataset(local_datasets["ucf101"][0]), destination)  # train/test only
    dataset = load_dataset(destination)
    assert set(dataset.subsets) == {"train", "test"}
    assert dataset.classes == local_datasets["ucf101"][1].classes
