"""Shared fixtures: a real S3 HTTP server (moto) on loopback, reached through s3fs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from actiontrain.embedded_s3 import EmbeddedS3

@pytest.fixture(scope="session")
def s3_server() -> Iterator[EmbeddedS3]:
    """moto's S3 server on a free loopback port for the whole session."""
    with EmbeddedS3() as server:
        yield server


@pytest.fixture(scope="session")
def _s3_session_env(s3_server: EmbeddedS3) -> Iterator[None]:
    with s3_server.environment():
        yield


@pytest.fixture
def s3_env(_s3_session_env, s3_server: EmbeddedS3) -> dict[str, str]:
    """The environment a process needs to reach the loopback S3 server (as in production)."""
    return dict(s3_server.env)


@pytest.fixture
def s3_bucket(s3_env, s3_server: EmbeddedS3) -> str:
    """A fresh, empty bucket; returns ``s3://NAME``."""
    return s3_server.create_bucket(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def authenticating_s3() -> Iterator[str]:
    """A second moto S3 server that checks signatures: every key we have is unknown to it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    moto_server = os.path.join(os.path.dirname(sys.executable), "moto_server")
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    process = subprocess.Popen(
        [moto_server, "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch) -> None:
    monkeypatch.setenv("ACTIONTRAIN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
