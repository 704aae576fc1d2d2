"""``actiontrain export / optimize / pull / predict / eval --model`` as users run them: output, JSON, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from exported_models import motion_export, x3d_export

from actiontrain import storage
from actiontrain.cli import main
from actiontrain.export.manifest import MANIFEST_FILE, MODEL_BIN, MODEL_FILES, MODEL_XML
from actiontrain.export.store import local_export, publish_version

ACTIONTRAIN = os.path.join(os.path.dirname(sys.executable), "actiontrain")


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    return motion_export(tmp_path_factory)


@pytest.fixture(scope="module")
def x3d(tmp_path_factory):
    return x3d_export(tmp_path_factory)


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("[actiontrain")]  # log lines
    assert len(lines) == 1 and lines[0].startswith("actiontrain: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.e2e  # trains or exports for tens of seconds: not the fast tier
def test_export_writes_an_fp16_export_of_a_run(capsys, x3d, tmp_path):
    output = str(tmp_path / "fp16")
    code, out, err = run(capsys, "export", "--checkpoint", x3d.run, "--output", output, "--precision", "fp16")
    assert code == 0, err
    assert out.startswith(f"exported fp16 model (step 7, 3 classes, input 1x1x3x4x64x64) to {output}; parity on 4 clips")
    assert local_export(output).manifest.precision == "fp16"


@pytest.mark.e2e  # trains or exports for tens of seconds: not the fast tier
def test_export_adds_the_next_version_to_a_serving_repository(capsys, x3d, tmp_path):
    repository = str(tmp_path / "models")
    for version in (1, 2):
        code, out, err = run(
            capsys, "export", "--checkpoint", x3d.run, "--serving-repository", repository, "--name", "x3d"
        )
        assert code == 0, err
        assert f"to version {repository}/x3d/{version}; parity on 4 clips" in out
    assert sorted(os.listdir(tmp_path / "models" / "x3d" / "2")) == [MANIFEST_FILE, MODEL_BIN, MODEL_XML]
    code, out, err = run(capsys, "pull", f"{repository}/x3d", str(tmp_path / "pulled"))
    assert code == 0, err
    assert local_export(str(tmp_path / "pulled")).manifest == local_export(f"{repository}/x3d/2").manifest


def test_predict_json_reports_precision_throughput_and_one_object_per_input(capsys, motion):
    samples = motion.test_samples[:2]
    code, out, err = run(capsys, "predict", "--model", motion.export, *[s.url for s in samples], "--json", "--top-k", "2")
    assert code == 0, err
    report = json.loads(out)
    assert report["inference_precision"] == "f32" and report["num_videos"] == 2 and report["num_clips"] == 2
    assert report["throughput(clips/s)"] > 0 and report["batch_size"] == 8 and report["model"] == motion.export
    assert [item["input"] for item in report["predictions"]] == [s.url for s in samples]
    for item, sample in zip(report["predictions"], samples):
        assert len(item["top_k"]) == 2 and set(item["top_k"][0]) == {"label", "score"}
        assert item["top_k"][0]["label"] == motion.classes[sample.label]


def test_predict_text_lists_scores_and_labels_then_throughput(capsys, motion):
    sample = motion.test_samples[0]
    code, out, err = run(capsys, "predict", "--model", motion.export, sample.url, "--top-k", "1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == sample.url and lines[1].split()[1] == motion.classes[sample.label] and len(lines) == 3
    assert lines[2].startswith("1 videos, 1 clips: ") and " clips/s in inference " in lines[2]
    assert lines[2].endswith("OpenVINO computed in f32, OpenVINO's default on this device")


def test_predict_takes_a_folder_of_videos_and_a_dataset_subset(capsys, motion):
    folder = os.path.dirname(motion.test_samples[0].url)
    code, out, err = run(capsys, "predict", "--model", motion.export, folder, "--json", "--top-k", "1")
    assert code == 0, err
    in_folder = json.loads(out)["predictions"]
    assert [item["input"] for item in in_folder] == sorted(
        os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".avi") or name.endswith(".mp4")
    )
    code, out, err = run(capsys, "predict", "--model", motion.export, "--data", motion.data, "--json", "--top-k", "1")
    assert code == 0, err
    predictions = json.loads(out)["predictions"]
    assert [item["input"] for item in predictions] == [sample.url for sample in motion.test_samples]
    for item, sample in zip(predictions, motion.test_samples):
        assert item["top_k"][0]["label"] == motion.classes[sample.label]


def test_predict_and_pull_take_a_model_folder_and_skip_a_version_being_written(capsys, motion, tmp_path):
    repository = str(tmp_path / "models")
    publish_version(motion.export, repository, "motion", motion.result.manifest)
    for name in MODEL_FILES:  # version 2 is being uploaded: its manifest, written last, is not there yet
        storage.copy(os.path.join(motion.export, name), f"{repository}/motion/2/{name}")
    sample = motion.test_samples[0]
    code, out, err = run(capsys, "predict", "--model", f"{repository}/motion", sample.url, "--json", "--top-k", "1")
    assert code == 0, err
    report = json.loads(out)
    assert report["model"] == f"{repository}/motion/1"
    assert report["predictions"][0]["top_k"][0]["label"] == motion.classes[sample.label]
    code, out, err = run(capsys, "pull", f"{repository}/motion", str(tmp_path / "pulled"))
    assert code == 0, err
    assert local_export(str(tmp_path / "pulled")).manifest == motion.result.manifest
    os.remove(f"{repository}/motion/1/{MANIFEST_FILE}")  # no complete version left
    code, out, err = run(capsys, "predict", "--model", f"{repository}/motion", sample.url)
    assert_one_line_error(code, err, "no export at", "no numbered version folder below it has one")


def test_eval_of_an_export_prints_the_checkpoint_keys_and_its_precision(capsys, motion):
    code, out, err = run(capsys, "eval", "--model", motion.export, "--data", motion.data, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["top1"] == 1.0 and report["num_videos"] == 12 and report["subset"] == "test" and report["step"] == 200
    assert (report["precision"], report["inference_precision"]) == ("fp32", "f32")
    code, out, err = run(capsys, "eval", "--model", motion.export, "--data", motion.data)
    assert code == 0, err
    assert out.startswith("test: top1 100.0%  top5 100.0%  (12 videos, fp32 export step 200, OpenVINO f32, ")


def test_pull_then_predict_from_the_folder(capsys, motion, tmp_path):
    target = str(tmp_path / "model")
    code, out, err = run(capsys, "pull", motion.export, target)
    assert code == 0, err
    assert out.strip() == f"pulled fp32 export (3 classes) to {target}; checksums verified"
    assert sorted(os.listdir(target)) == [MANIFEST_FILE, MODEL_BIN, MODEL_XML]
    code, out, err = run(capsys, "predict", "--model", target, motion.test_samples[0].url, "--json")
    assert code == 0, err


def test_optimize_reports_both_accuracies(capsys, motion, tmp_path):
    output = str(tmp_path / "int8")
    code, out, err = run(
        capsys, "optimize", "--model", motion.export, "--data", motion.data, "--output", output, "--subset-size", "8"
    )
    assert code == 0, err
    assert out.startswith(f"INT8 export written to {output}; top-1 on test (12 videos): FP32 100.0%, INT8 ")
    assert "calibrated on 8 clips" in out
    assert local_export(output).manifest.precision == "int8"


def test_bad_inputs_are_one_line_each(capsys, motion, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    tampered = str(tmp_path / "tampered")
    for name in (MODEL_BIN, MODEL_XML, MANIFEST_FILE):
        storage.copy(f"{motion.export}/{name}", f"{tampered}/{name}")
    (tmp_path / "tampered" / MODEL_BIN).write_bytes(b"changed")
    partial = str(tmp_path / "partial")
    storage.copy(f"{motion.export}/{MODEL_XML}", f"{partial}/{MODEL_XML}")
    video = motion.test_samples[0].url
    cases = [
        (("predict", "--model", str(tmp_path / "nowhere"), video), ["no export at"]),
        (("predict", "--model", partial, video), ["no export at", "still being written"]),
        (("predict", "--model", tampered, video), ["corrupt: model.bin"]),
        (("pull", tampered, str(tmp_path / "pulled")), ["corrupt: model.bin"]),
        (("predict", "--model", motion.export, str(broken)), ["broken.mp4"]),
        (("predict", "--model", motion.export, video, "--device", "NOPE"), ["OpenVINO device 'NOPE'"]),
        (("export", "--checkpoint", str(tmp_path / "no-run"), "--output", str(tmp_path / "x")), ["no committed checkpoint"]),
        (("export", "--checkpoint", str(tmp_path / "no-run")), ["needs an output folder (--output)"]),
        (("export", "--checkpoint", "r", "--serving-repository", str(tmp_path)), ["go together"]),
        (("export", "--checkpoint", "r", "--serving-repository", str(tmp_path), "--name", "a/b"), ["model name 'a/b'"]),
        (("predict", "--model", motion.export), ["nothing to predict"]),
        (("predict", "--model", motion.export, str(tmp_path / "no-folder")), ["not found", "no-folder"]),
        (("eval", "--model", motion.export, "--data", motion.data, "data.num_eval_clips=2"), ["an export's is fixed"]),
        (("eval", "--model", partial, "--data", motion.data), ["no export at"]),
    ]
    for args, fragments in cases:
        code, _, err = run(capsys, *args)
        assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "pulled" / MANIFEST_FILE).exists()


@pytest.mark.e2e
def test_predict_straight_from_an_s3_url_in_a_real_process(motion, s3_bucket, s3_env, tmp_path):
    url = f"{s3_bucket}/export"
    for name in (MODEL_BIN, MODEL_XML, MANIFEST_FILE):  # manifest last, as export writes it
        storage.copy(f"{motion.export}/{name}", f"{url}/{name}")
    sample = motion.test_samples[0]
    env = {**os.environ, **s3_env, "ACTIONTRAIN_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        [ACTIONTRAIN, "predict", "--model", url, sample.url, "--json"], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["predictions"][0]["top_k"][0]["label"] == motion.classes[sample.label]
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr

    storage.remove(f"{url}/{MANIFEST_FILE}")  # now it is a partial export
    result = subprocess.run(
        [ACTIONTRAIN, "predict", "--model", url, sample.url], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("actiontrain: error: no export at")
