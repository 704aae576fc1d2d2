"""Publishing and pulling exports: manifest last, checksums verified, partial exports never accepted."""

from __future__ import annotations

import json
import os

import pytest
from exported_models import motion_export

from actiontrain import storage
from actiontrain.errors import ConfigError, DataError, NotFoundError, StorageError
from actiontrain.export import export_model
from actiontrain.export.manifest import MANIFEST_FILE, MODEL_BIN, MODEL_XML
from actiontrain.export.store import local_export, pull, read_manifest
from actiontrain.inference import Predictor


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    return motion_export(tmp_path_factory)


def export_to(motion, url: str):
    return export_model(motion.model, classes=motion.classes, config=motion.config, output_url=url, step=200)


def copy_export(source: str, destination: str, names=(MODEL_BIN, MODEL_XML, MANIFEST_FILE)) -> None:
    for name in names:
        storage.copy(storage.join(source, name), storage.join(destination, name))


def test_export_removes_the_old_manifest_first_and_writes_the_new_one_last(motion, tmp_path, monkeypatch):
    output = str(tmp_path / "export")
    copy_export(motion.export, output)  # an earlier export is there
    events = []
    for name in ("remove", "copy", "write_bytes"):
        original = getattr(storage, name)

        def recording(url, *args, _name=name, _original=original):
            target = url if _name != "copy" else args[0]
            events.append((_name, os.path.basename(target)))
            return _original(url, *args)

        monkeypatch.setattr(storage, name, recording)
    export_to(motion, output)
    assert events == [
        ("remove", MANIFEST_FILE),
        ("copy", MODEL_BIN),
        ("copy", MODEL_XML),
        ("write_bytes", MANIFEST_FILE),
    ]


def test_an_export_cut_short_leaves_no_manifest_so_readers_refuse_it(motion, tmp_path, monkeypatch):
    output = str(tmp_path / "export")
    copy_export(motion.export, output)  # a complete older export
    original = storage.copy

    def dies_before_the_graph(source, destination, **kwargs):
        if destination.endswith(MODEL_XML):
            raise StorageError("connection reset (simulated)")
        return original(source, destination, **kwargs)

    monkeypatch.setattr(storage, "copy", dies_before_the_graph)
    with pytest.raises(StorageError, match="simulated"):
        export_to(motion, output)
    monkeypatch.undo()
    assert not storage.exists(storage.join(output, MANIFEST_FILE))
    refusal = r"no export at .*manifest.json does not exist \(not an export, or one still being written"
    for reader in (lambda: pull(output, tmp_path / "pulled"), lambda: local_export(output)):
        with pytest.raises(NotFoundError, match=refusal):
            reader()
    assert not (tmp_path / "pulled" / MANIFEST_FILE).exists()


def test_files_without_a_manifest_are_not_an_export(motion, tmp_path):
    partial = str(tmp_path / "partial")
    copy_export(motion.export, partial, names=(MODEL_BIN, MODEL_XML))
    with pytest.raises(NotFoundError, match="no export at"):
        Predictor.from_url(partial)


def test_an_old_manifest_beside_new_weights_is_refused(motion, tmp_path):
    mixed = str(tmp_path / "mixed")
    copy_export(motion.export, mixed)
    path = tmp_path / "mixed" / MODEL_BIN
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt: model.bin"):
        Predictor.from_url(mixed)
    with pytest.raises(DataError, match=r"corrupt: model.bin .* \(or it changed while being pulled: retry\)"):
        pull(mixed, tmp_path / "pulled")


def test_a_failed_pull_keeps_the_previous_good_copy_and_leaves_no_staging(motion, tmp_path):
    target = tmp_path / "model"
    pull(motion.export, target)
    good = (target / MODEL_BIN).read_bytes()
    source = str(tmp_path / "source")
    copy_export(motion.export, source)
    (tmp_path / "source" / MODEL_BIN).write_bytes(b"truncated")
    with pytest.raises(DataError):
        pull(source, target)
    assert sorted(os.listdir(target)) == [MANIFEST_FILE, MODEL_BIN, MODEL_XML]  # no .pull-* left
    assert (target / MODEL_BIN).read_bytes() == good
    local_export(str(target))  # still verifies


def test_a_manifest_whose_files_are_gone_is_one_line(motion, tmp_path):
    gutted = str(tmp_path / "gutted")
    copy_export(motion.export, gutted, names=(MODEL_XML, MANIFEST_FILE))
    with pytest.raises(DataError, match="is incomplete: its manifest names model.bin, which is missing"):
        pull(gutted, tmp_path / "pulled")


def test_pull_writes_to_local_folders_only(motion):
    with pytest.raises(ConfigError, match="local folder"):
        pull(motion.export, "s3://bucket/model")


def test_a_garbled_manifest_is_one_line(motion, tmp_path):
    broken = str(tmp_path / "broken")
    copy_export(motion.export, broken)
    (tmp_path / "broken" / MANIFEST_FILE).write_text("{")
    with pytest.raises(DataError, match="not a valid manifest: not JSON"):
        read_manifest(broken)


@pytest.mark.e2e
def test_export_to_s3_then_pull_and_predict_from_the_url(motion, s3_bucket, tmp_path, monkeypatch):
    url = f"{s3_bucket}/runs/motion/export"
    result = export_to(motion, url)
    assert storage.listdir(url) == [MANIFEST_FILE, MODEL_BIN, MODEL_XML]
    remote = json.loads(storage.read_bytes(f"{url}/{MANIFEST_FILE}"))
    assert remote["files"] == {name: {"size": e.size, "sha256": e.sha256} for name, e in result.manifest.files.items()}

    manifest = pull(url, tmp_path / "pulled")
    assert manifest == result.manifest
    local_export(str(tmp_path / "pulled"))

    sample = motion.test_samples[0]
    predictor = Predictor.from_url(url)  # pulled into the cache, verified
    assert predictor.predict(sample.url).top_k[0][0] == motion.classes[sample.label]
    cached = predictor.export.directory
    assert str(cached).startswith(str(storage.cache_dir("exports")))

    # Unchanged remote manifest: the verified cache is used, nothing is downloaded again.
    from actiontrain.export import store

    monkeypatch.setattr(store, "_pull", lambda *args: pytest.fail("downloaded again"))
    assert local_export(url).directory == cached
    monkeypatch.undo()

    # A tampered remote object is caught on the next pull, whatever the cache holds.
    storage.write_bytes(f"{url}/{MODEL_BIN}", b"tampered")
    with pytest.raises(DataError, match="corrupt: model.bin"):
        pull(url, tmp_path / "again")
    assert not (tmp_path / "again" / MANIFEST_FILE).exists()
