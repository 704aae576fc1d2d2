"""The manifest: round trip, refused when malformed or foreign, checksums that catch any change."""

from __future__ import annotations

import json

import pytest

from actiontrain.errors import DataError
from actiontrain.export.manifest import (
    MODEL_BIN,
    MODEL_XML,
    Manifest,
    file_entry,
    input_shape,
    new_manifest,
    verify_files,
)
from actiontrain.recipe import config_to_dict, load_config


@pytest.fixture
def export_dir(tmp_path):
    (tmp_path / MODEL_XML).write_text("<net/>")
    (tmp_path / MODEL_BIN).write_bytes(b"\x00" * 100)
    return tmp_path


def make_manifest(directory, **changes) -> Manifest:
    config = load_config("cpu_smoke")
    values = {
        "precision": "fp32",
        "classes": ["Move Left", "MoveRight"],
        "recipe": config_to_dict(config),
        "files": {name: file_entry(directory / name) for name in (MODEL_XML, MODEL_BIN)},
        "step": 12,
        "metrics": {"top1": 0.75},
        "parity": {"max_abs_diff": 1e-6},
    }
    values.update(changes)
    return new_manifest(**values)


def test_round_trip_keeps_every_field_and_records_the_input(export_dir):
    manifest = make_manifest(export_dir)
    document = json.loads(manifest.to_json())
    assert document["input"]["shape"] == [1, 1, 3, 4, 64, 64] == list(input_shape(manifest.config))
    assert document["input"]["layout"] == "NSCTHW"
    assert document["input"]["normalization"] == {"mean": [0.45] * 3, "std": [0.225] * 3, "scale": "x / 255"}
    assert document["files"][MODEL_BIN]["sha256"] == file_entry(export_dir / MODEL_BIN).sha256
    assert document["versions"]["openvino"] and document["created"]
    again = Manifest.from_json(manifest.to_json(), url="x")
    assert again == manifest
    assert again.config.data.clip_len == 4


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: "not json{", "not JSON"),
        (lambda d: {**d, "format": "something-else"}, "not an actiontrain export manifest"),
        (lambda d: {**d, "format_version": 99}, "format_version 99"),
        (lambda d: {**d, "files": {MODEL_XML: d["files"][MODEL_XML]}}, "no checksum for model.bin"),
        (lambda d: {**d, "precision": "int4"}, "precision 'int4'"),
        (lambda d: {k: v for k, v in d.items() if k != "classes"}, "KeyError"),
        (lambda d: {**d, "recipe": {"data": {"clip_len": 0}}}, "data.clip_len must be > 0"),
        (lambda d: {**d, "input": {**d["input"], "shape": [1, 1, 3, 8, 64, 64]}}, "inconsistent"),
    ],
)
def test_malformed_or_foreign_manifests_are_refused_in_one_line(export_dir, mutate, message):
    document = json.loads(make_manifest(export_dir).to_json())
    changed = mutate(document)
    data = changed.encode() if isinstance(changed, str) else json.dumps(changed).encode()
    with pytest.raises(DataError, match="s3://b/m/manifest.json") as raised:
        Manifest.from_json(data, url="s3://b/m/manifest.json")
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_files_that_match_pass(export_dir):
    verify_files(export_dir, make_manifest(export_dir))


def test_a_changed_byte_is_caught_and_named(export_dir):
    manifest = make_manifest(export_dir)
    data = bytearray((export_dir / MODEL_BIN).read_bytes())
    data[50] ^= 1
    (export_dir / MODEL_BIN).write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"corrupt: model.bin has 100 bytes with sha256 .*; export or pull it again"):
        verify_files(export_dir, manifest)


def test_a_missing_file_is_caught(export_dir):
    manifest = make_manifest(export_dir)
    (export_dir / MODEL_XML).unlink()
    with pytest.raises(DataError, match="incomplete: model.xml is missing"):
        verify_files(export_dir, manifest)
