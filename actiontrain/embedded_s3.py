"""An S3 server on loopback (moto's), for the demo, the benchmarks and the tests.

It speaks the real S3 HTTP protocol, so the code under test reaches it through s3fs exactly as
it reaches AWS or MinIO in production; only the endpoint and throwaway credentials differ.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from types import TracebackType

import s3fs

from actiontrain.errors import ConfigError

__all__ = ["EmbeddedS3"]

_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "actiontrain-embedded",
    "AWS_SECRET_ACCESS_KEY": "actiontrain-embedded-secret",
    "AWS_REGION": "us-east-1",
}


_OVERRIDING = ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN")


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedS3:
    """Starts moto's S3 server on a free loopback port; use as a context manager.

    Example:
        with EmbeddedS3() as s3, s3.environment():
            s3.create_bucket("data")
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None, separate_process: bool = False):
        self.host = host
        self.port = port or _free_port(host)
        # A separate process is closer to a real object store: its request handling (moto is
        # pure Python) then neither holds this process's GIL nor counts as this process's work.
        self.separate_process = separate_process
        self._server = None
        self._process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Standard AWS variables that point s3fs/boto at this server (throwaway credentials)."""
        return {**_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    @contextlib.contextmanager
    def environment(self) -> Iterator[dict[str, str]]:
        """Points this process's AWS variables at the server for the block, then restores them.

        Variables that would override the endpoint or the credentials (a profile, a session
        token, an S3-specific endpoint) are unset meanwhile.
        """
        names = [*self.env, *_OVERRIDING]
        saved = {name: os.environ.get(name) for name in names}
        for name in _OVERRIDING:
            os.environ.pop(name, None)
        os.environ.update(self.env)
        try:
            yield dict(self.env)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def start(self) -> EmbeddedS3:
        try:
            # An optional dependency (the demo and test extras), so imported only when it is used.
            from moto.server import ThreadedMotoServer  # noqa: PLC0415
        except ImportError as error:
            raise ConfigError(
                "the embedded S3 server needs moto: pip install 'actiontrain[demo]' (or 'moto[server]')"
            ) from error
        if self.separate_process:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self._wait_until_listening()
            return self
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        return self

    def _wait_until_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"the S3 server exited with code {self._process.returncode}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the S3 server did not listen on {self.endpoint} within {timeout:.0f} s")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def create_bucket(self, name: str) -> str:
        """Creates bucket ``name``; returns ``s3://name``."""
        fs = s3fs.S3FileSystem(
            endpoint_url=self.endpoint, key=_CREDENTIALS["AWS_ACCESS_KEY_ID"], secret=_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
        )
        fs.mkdir(name)
        fs.invalidate_cache()
        return f"s3://{name}"

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
