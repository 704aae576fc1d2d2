"""Shared fixtures (a real S3 HTTP server, moto, on loopback, reached through s3fs) and the test tiers.

Tiers: a test that starts a process (subprocess, multiprocessing: DataLoader workers, torchrun,
Helm's worker) or a server is end-to-end and carries the ``e2e`` marker; ``pytest -m "not e2e"``
is the fast unit tier. Tests that use the S3 server fixtures are marked automatically; any other
unmarked test that starts a process fails and says to mark it, so the tiers stay what they claim.
"""

from __future__ import annotations

import multiprocessing.process
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


# Fixtures that start a server: a test using any of them is end-to-end.
_SERVER_FIXTURES = {"s3_server", "_s3_session_env", "s3_env", "s3_bucket", "authenticating_s3"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _unit_tier_starts_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a test without the ``e2e`` marker, starting a process is an error that names the fix."""
    if request.node.get_closest_marker("e2e") is not None:
        return

    def refuse(*_args, **_kwargs):
        raise AssertionError(
            f"{request.node.nodeid} starts a process (subprocess, DataLoader workers, a pool): "
            "mark it @pytest.mark.e2e, or keep it in-process"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
