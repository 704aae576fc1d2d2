"""A model server's repository: numbered versions, never overwritten, counted only with their manifest; pull
and predict take a model folder (its newest version) or a version folder."""

from __future__ import annotations

import os

import pytest
from exported_models import motion_export

from actiontrain import storage
from actiontrain.errors import ConfigError, NotFoundError
from actiontrain.export import export_model
from actiontrain.export.manifest import MANIFEST_FILE, MODEL_BIN, MODEL_FILES, MODEL_XML
from actiontrain.export.repository import all_versions, check_model_name, complete_versions, newest_version_url
from actiontrain.export.store import local_export, publish_version, pull, read_manifest
from actiontrain.inference import Predictor


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    return motion_export(tmp_path_factory)


def add_version(motion, repository: str, name: str = "motion") -> str:
    return publish_version(motion.export, repository, name, motion.result.manifest)


def copy_files(source: str, destination: str, names) -> None:
    for name in names:
        storage.copy(storage.join(source, name), storage.join(destination, name))


def test_versions_count_from_one_and_never_overwrite(motion, tmp_path):
    repository = str(tmp_path / "models")
    assert add_version(motion, repository) == f"{repository}/motion/1"
    assert add_version(motion, repository) == f"{repository}/motion/2"
    assert sorted(os.listdir(tmp_path / "models" / "motion")) == ["1", "2"]  # no staging folder left
    assert sorted(os.listdir(tmp_path / "models" / "motion" / "2")) == [MANIFEST_FILE, MODEL_BIN, MODEL_XML]
    assert complete_versions(f"{repository}/motion") == [1, 2]


def test_a_version_without_its_manifest_is_not_a_version_but_keeps_its_number(motion, tmp_path):
    model = tmp_path / "models" / "motion"
    add_version(motion, str(tmp_path / "models"))
    copy_files(motion.export, str(model / "2"), MODEL_FILES)  # an upload that broke off before the manifest
    (model / "notes").mkdir()
    (model / "notes" / MANIFEST_FILE).write_text("{}")  # not a number: not a version
    (model / "07").mkdir()  # OVMS versions are positive integers; a leading zero is not one
    (model / "0").mkdir()
    assert complete_versions(str(model)) == [1]
    assert all_versions(str(model)) == [1, 2]
    assert newest_version_url(str(model)) == f"{model}/1"
    assert read_manifest(str(model)) == motion.result.manifest
    assert add_version(motion, str(tmp_path / "models")).endswith("/motion/3")


def test_pull_and_predict_take_the_newest_complete_version_of_a_model_folder(motion, tmp_path):
    repository = str(tmp_path / "models")
    add_version(motion, repository)
    add_version(motion, repository)
    copy_files(motion.export, f"{repository}/motion/3", (MODEL_BIN,))  # being written
    assert local_export(f"{repository}/motion").url == f"{repository}/motion/2"
    assert pull(f"{repository}/motion", tmp_path / "pulled") == motion.result.manifest
    assert sorted(os.listdir(tmp_path / "pulled")) == [MANIFEST_FILE, MODEL_BIN, MODEL_XML]
    assert local_export(f"{repository}/motion/1/").url == f"{repository}/motion/1"  # a version folder works too
    sample = motion.test_samples[0]
    predictor = Predictor.from_url(f"{repository}/motion")
    assert predictor.export.url == f"{repository}/motion/2"
    assert predictor.predict(sample.url, top_k=1).top_k[0][0] == motion.classes[sample.label]


def test_a_model_folder_without_a_complete_version_is_no_export(motion, tmp_path):
    model = str(tmp_path / "models" / "motion")
    copy_files(motion.export, f"{model}/1", MODEL_FILES)
    with pytest.raises(NotFoundError, match=r"no export at .*motion: .*no numbered version folder below it has one"):
        Predictor.from_url(model)
    with pytest.raises(NotFoundError, match="no export at"):
        pull(model, tmp_path / "pulled")
    with pytest.raises(NotFoundError, match="no export at"):
        local_export(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("name", ["", "a/b", "-x", "x y", "../up", "n" * 64])
def test_model_names_that_cannot_be_a_folder_and_a_served_name_are_refused(name):
    with pytest.raises(ConfigError, match=r"must be 1-63 letters, digits.*e.g. --name x3d-ucf101"):
        check_model_name(name)


def test_export_writes_the_plain_folder_and_the_next_version(motion, tmp_path):
    repository = str(tmp_path / "models")
    add_version(motion, repository, "motion")
    result = export_model(
        motion.model,
        classes=motion.classes,
        config=motion.config,
        output_url=str(tmp_path / "export"),
        serving_repository=repository,
        name="motion",
    )
    assert (result.url, result.serving_url) == (str(tmp_path / "export"), f"{repository}/motion/2")
    assert read_manifest(result.serving_url) == read_manifest(result.url) == result.manifest


def test_export_to_a_repository_alone_and_bad_destinations(motion, tmp_path):
    result = export_model(
        motion.model, classes=motion.classes, config=motion.config, serving_repository=str(tmp_path), name="m"
    )
    assert result.url == result.serving_url == f"{tmp_path}/m/1"
    common = {"classes": motion.classes, "config": motion.config}
    with pytest.raises(ConfigError, match=r"needs an output folder \(--output\), a serving repository"):
        export_model(motion.model, **common)
    with pytest.raises(ConfigError, match="a serving repository and a model name go together"):
        export_model(motion.model, **common, serving_repository=str(tmp_path))
    with pytest.raises(ConfigError, match="model name 'a b' must be"):
        export_model(motion.model, **common, serving_repository=str(tmp_path), name="a b")


@pytest.mark.e2e
def test_versions_in_s3_are_listed_pulled_and_predicted_from(motion, s3_bucket, tmp_path):
    repository = f"{s3_bucket}/models"
    assert add_version(motion, repository) == f"{repository}/motion/1"
    copy_files(motion.export, f"{repository}/motion/2", MODEL_FILES)  # an upload cut short
    assert add_version(motion, repository) == f"{repository}/motion/3"
    assert storage.listdir(f"{repository}/motion/3") == [MANIFEST_FILE, MODEL_BIN, MODEL_XML]
    assert complete_versions(f"{repository}/motion") == [1, 3]
    assert pull(f"{repository}/motion", tmp_path / "pulled") == motion.result.manifest
    predictor = Predictor.from_url(f"{repository}/motion")
    assert predictor.export.url == f"{repository}/motion/3"
    sample = motion.test_samples[0]
    assert predictor.predict(sample.url, top_k=1).top_k[0][0] == motion.classes[sample.label]
