"""The ``actiontrain data`` commands as users run them: real processes, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# End-to-end: every test runs the actiontrain command as a process.
pytestmark = pytest.mark.e2e

ACTIONTRAIN = os.path.join(os.path.dirname(sys.executable), "actiontrain")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ACTIONTRAIN, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def ucf_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cli") / "ucf")
    result = run("data", "synth", root, "--format", "ucf101", "--classes", "3", "--videos-per-class", "3", "--frames", "12:16")
    assert result.returncode == 0, result.stderr
    assert "3 classes" in result.stdout
    return root


def test_check_json_has_the_documented_keys(ucf_dir):
    result = run("data", "check", ucf_dir, "--json", "--deep")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["format"] == "ucf101"
    assert report["classes"] == ["MoveLeft", "MoveRight", "MoveUp"]
    assert report["subsets"] == {"test": 3, "train": 6}
    assert report["problems"] == []


def test_check_text_output(ucf_dir):
    result = run("data", "check", ucf_dir, "--split", "2")
    assert result.returncode == 0
    assert "format:   ucf101" in result.stdout and "usable:   yes" in result.stdout


def test_check_exit_code_1_when_unusable(tmp_path):
    root = str(tmp_path / "hmdb")
    assert run("data", "synth", root, "--format", "hmdb51", "--classes", "2", "--videos-per-class", "4", "--frames", "8:10").returncode == 0
    victims = os.path.join(root, "hmdb51_org", "move_left")
    for name in os.listdir(victims):
        os.remove(os.path.join(victims, name))
    result = run("data", "check", root, "--json")
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    assert problems and all(p["kind"] == "missing_media" for p in problems)


def test_convert_declares_the_flip_pairs_it_is_given_and_check_shows_them(ucf_dir, tmp_path):
    internal = str(tmp_path / "internal")
    result = run("data", "convert", ucf_dir, internal, "--flip-pair", "MoveLeft,MoveRight")
    assert result.returncode == 0, result.stderr
    check = run("data", "check", internal, "--json")
    assert json.loads(check.stdout)["flip_pairs"] == [["MoveLeft", "MoveRight"]]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("data", "check", "/no/such/dataset"), ("dataset folder /no/such/dataset does not exist",)),
        (("data", "check", "nope://bucket/x"), ("unsupported URL 'nope://bucket/x'",)),
        (("data", "check", "--format", "avi", "/tmp"), ("argument --format: invalid choice: 'avi'",)),
        (("data", "synth", "/tmp/x", "--format", "ucf101", "--classes", "9"), ("num_classes", "9")),
        (("data", "synth", "/tmp/x", "--format", "ucf101", "--frames", "ten"), ("MIN:MAX",)),
        (("data", "convert", "/tmp/x", "/tmp/y", "--flip-pair", "MoveLeft"), ("--flip-pair", "MoveLeft,MoveRight")),
    ],
)
def test_user_errors_are_one_line(args, fragments):
    assert_one_line_error(run(*args), *fragments)


def test_a_flip_pair_of_unknown_classes_is_one_line(ucf_dir, tmp_path):
    result = run("data", "convert", ucf_dir, str(tmp_path / "x"), "--flip-pair", "Left,Right")
    assert_one_line_error(result, "flip pair ['Left', 'Right']", "not a class: 'Left', 'Right'", "classes: MoveLeft")


def test_wrong_format_is_one_line(ucf_dir):
    assert_one_line_error(run("data", "check", ucf_dir, "--format", "jester"), "is not a jester dataset", "--format")


class TestS3:
    def test_synth_check_convert_on_s3(self, s3_bucket, s3_env):
        source, internal = f"{s3_bucket}/jester", f"{s3_bucket}/jester-internal"
        assert run("data", "synth", source, "--format", "jester", "--classes", "2", "--videos-per-class", "5",
                   "--frames", "8:10", env=s3_env).returncode == 0
        result = run("data", "convert", source, internal, env=s3_env)
        assert result.returncode == 0, result.stderr
        report = json.loads(run("data", "check", internal, "--json", "--deep", env=s3_env).stdout)
        assert report["format"] == "datumaro"
        assert report["flip_pairs"] == [["Swiping Left", "Swiping Right"]]
        assert sum(report["subsets"].values()) == 10
        assert s3_env["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr

    def test_missing_bucket(self, s3_env):
        assert_one_line_error(run("data", "check", "s3://no-such-bucket-cli/x", env=s3_env), "no-such-bucket-cli")

    def test_unreachable_endpoint(self, s3_env):
        env = {**s3_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
        assert_one_line_error(run("data", "check", "s3://bucket/x", env=env), "cannot reach endpoint http://127.0.0.1:9")

    def test_missing_credentials(self, s3_env, tmp_path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ENDPOINT_URL=s3_env["AWS_ENDPOINT_URL"],
            AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
            AWS_CONFIG_FILE=str(tmp_path / "none"),
            AWS_EC2_METADATA_DISABLED="true",
        )
        result = subprocess.run([ACTIONTRAIN, "data", "check", "s3://bucket/x"], capture_output=True, text=True, env=env)
        assert_one_line_error(result, "no S3 credentials found", "AWS_ACCESS_KEY_ID")


def _wrong_credentials(endpoint: str, *, key_id: str, secret: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "us-east-1"}


def test_wrong_credentials_are_one_line_without_the_secret(authenticating_s3):
    env = _wrong_credentials(authenticating_s3, key_id="AKIAWRONGKEY", secret="wrong-secret-value-123")
    result = run("data", "check", "s3://bucket-z/ucf", env=env)
    assert_one_line_error(result, "AWS_ACCESS_KEY_ID")
    assert "wrong-secret-value-123" not in result.stderr + result.stdout


def test_verbose_errors_show_their_causes_and_still_no_credentials(authenticating_s3):
    env = _wrong_credentials(authenticating_s3, key_id="AKIAWRONGKEYVERBOSE1", secret="wrong-secret-value-456")
    quiet = run("data", "check", "s3://bucket-z/ucf", env=env)
    verbose = run("-v", "data", "check", "s3://bucket-z/ucf", env=env)
    assert quiet.returncode == verbose.returncode == 2
    # The same one line ends both; -v puts the chain of causes above it, botocore's error first.
    assert verbose.stderr.strip().splitlines()[-1] == quiet.stderr.strip().splitlines()[-1]
    assert "The above exception was the direct cause of the following exception" in verbose.stderr
    assert "botocore" in verbose.stderr or "ClientError" in verbose.stderr, verbose.stderr[-2000:]
    for secret in ("wrong-secret-value-456", "AKIAWRONGKEYVERBOSE1"):
        assert secret not in verbose.stderr + verbose.stdout
