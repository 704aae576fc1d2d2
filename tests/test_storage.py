"""Storage: one module for every URL, atomic writes, one-line errors without credentials."""

from __future__ import annotations

import os
import socket

import pytest

from actiontrain import storage
from actiontrain.errors import StorageError


def test_join_keeps_protocol_and_chain():
    assert storage.join("s3://bucket/root/", "a", "/b/") == "s3://bucket/root/a/b"
    assert storage.join("simplecache::s3://bucket", "x.avi") == "simplecache::s3://bucket/x.avi"
    assert storage.join("/data", "ucf") == "/data/ucf"
    assert storage.relative_to("s3://b/root/a/b.txt", "s3://b/root/") == "a/b.txt"


@pytest.mark.parametrize("scheme", ["local", "file", "memory"])
def test_write_read_list_roundtrip(tmp_path, scheme):
    root = {"local": str(tmp_path), "file": f"file://{tmp_path}", "memory": f"memory://{tmp_path.name}"}[scheme]
    storage.write_bytes(storage.join(root, "d", "a #1 (x)&!.txt"), b"one")
    storage.write_bytes(storage.join(root, "d", "sub", "b.txt"), b"two")
    assert storage.read_bytes(storage.join(root, "d", "a #1 (x)&!.txt")) == b"one"
    assert storage.listdir(storage.join(root, "d")) == ["a #1 (x)&!.txt", "sub"]
    assert storage.find(storage.join(root, "d")) == ["a #1 (x)&!.txt", "sub/b.txt"]
    assert storage.exists(storage.join(root, "d", "sub", "b.txt"))
    assert storage.isdir(storage.join(root, "d", "sub"))


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out" / "model.bin"
    with pytest.raises(RuntimeError):
        with storage.atomic_write(str(target)) as temporary:
            with open(temporary, "wb") as file:
                file.write(b"half")
            raise RuntimeError("crash while writing")
    assert not target.exists()
    assert os.listdir(tmp_path / "out") == []  # no temporary file left behind either


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "x.bin"
    storage.write_bytes(str(target), b"old")
    storage.write_bytes(str(target), b"new content")
    assert target.read_bytes() == b"new content"


def test_missing_local_file_is_one_line():
    with pytest.raises(StorageError, match=r"^not found: /nonexistent/file\.avi; check the path or URL$"):
        storage.read_bytes("/nonexistent/file.avi")


def test_unknown_protocol_names_url_and_choices():
    with pytest.raises(StorageError, match=r"unsupported URL 'nope://x'.*s3://"):
        storage.url_to_fs("nope://x")


def test_redact_hides_credentials(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "supersecretvalue")
    assert storage.redact("token supersecretvalue here") == "token *** here"


@pytest.mark.e2e
class TestS3:
    def test_roundtrip_with_special_characters(self, s3_bucket):
        url = storage.join(s3_bucket, "hmdb", "Sample_#1_(take)_&_go!.avi")
        storage.write_bytes(url, b"video bytes")
        assert storage.read_bytes(url) == b"video bytes"
        assert storage.read_bytes("simplecache::" + url) == b"video bytes"
        with storage.open_url(url) as file:
            file.seek(6)
            assert file.read(5) == b"bytes"
        assert storage.find(storage.join(s3_bucket, "hmdb")) == ["Sample_#1_(take)_&_go!.avi"]

    def test_copy_between_local_and_s3(self, s3_bucket, tmp_path):
        source = tmp_path / "a.bin"
        source.write_bytes(b"x" * 100_000)
        storage.copy(str(source), storage.join(s3_bucket, "a.bin"))
        storage.copy(storage.join(s3_bucket, "a.bin"), str(tmp_path / "b.bin"))
        assert (tmp_path / "b.bin").read_bytes() == source.read_bytes()

    def test_missing_bucket(self, s3_env):
        with pytest.raises(StorageError, match=r"^bucket 'no-such-bucket-x' does not exist"):
            storage.read_bytes("s3://no-such-bucket-x/data/a.avi")

    def test_missing_key(self, s3_bucket):
        with pytest.raises(StorageError, match=r"^not found: s3://.*/nothing\.avi"):
            storage.read_bytes(storage.join(s3_bucket, "nothing.avi"))

    def test_unreachable_endpoint_names_the_variable(self, s3_env, monkeypatch):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed_port = sock.getsockname()[1]
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
        with pytest.raises(StorageError, match=r"cannot reach endpoint http://127\.0\.0\.1:\d+ .*AWS_ENDPOINT_URL") as error:
            storage.read_bytes("s3://bucket-x/a.avi")
        assert s3_env["AWS_SECRET_ACCESS_KEY"] not in str(error.value)

    def test_missing_credentials(self, s3_env, monkeypatch, tmp_path):
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        with pytest.raises(StorageError, match=r"^no S3 credentials found .*AWS_ACCESS_KEY_ID"):
            storage.read_bytes("s3://some-bucket/a.avi")


@pytest.mark.e2e
def test_wrong_credentials_are_reported_without_the_secret(authenticating_s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", authenticating_s3)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value-123")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    # S3 answers a HEAD with a bare 403, so "wrong key" and "no permission" read alike.
    pattern = r"^(S3 rejected the credentials for|access denied to) s3://bucket-y/a\.avi.*AWS_ACCESS_KEY_ID"
    with pytest.raises(StorageError, match=pattern) as error:
        storage.read_bytes("s3://bucket-y/a.avi")
    assert "wrong-secret-value-123" not in str(error.value)
    assert "AKIAWRONGKEY" not in str(error.value)


def test_read_range_returns_what_exists(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"0123456789")
    assert storage.read_range(str(path), 2, 5) == b"234"
    assert storage.read_range(str(path), 0, 1 << 20) == b"0123456789"


@pytest.mark.e2e
def test_read_range_on_s3_handles_empty_and_missing_objects(s3_bucket):
    storage.write_bytes(storage.join(s3_bucket, "empty.avi"), b"")
    storage.write_bytes(storage.join(s3_bucket, "small.avi"), b"abc")
    assert storage.read_range(storage.join(s3_bucket, "small.avi"), 0, 1 << 24) == b"abc"
    assert storage.read_range(storage.join(s3_bucket, "empty.avi"), 0, 1 << 24) == b""
    with pytest.raises(StorageError, match="^not found: "):
        storage.read_range(storage.join(s3_bucket, "missing.avi"), 0, 10)


@pytest.mark.e2e
def test_credentials_from_a_profile_file_are_redacted_too(s3_env, monkeypatch, tmp_path):
    credentials = tmp_path / "credentials"
    credentials.write_text("[ci]\naws_access_key_id = AKIAFROMPROFILE\naws_secret_access_key = profile-secret-42\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "ci")
    storage.url_to_fs("s3://any-bucket/x")  # resolves the profile's credentials
    assert storage.redact("key AKIAFROMPROFILE secret profile-secret-42") == "key *** secret ***"
