"""An S3 server on loopback (moto's), for the demo, the benchmarks and the tests.

It speaks the real S3 HTTP protocol, so the code under test reaches it through s3fs exactly as
it reaches AWS or MinIO in production; only the endpoint and throwaway credentials differ.
"""

from __future__ import annotations

import logging
import socket
from types import TracebackType

from actiontrain.errors import ConfigError

__all__ = ["EmbeddedS3"]

_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "actiontrain-embedded",
    "AWS_SECRET_ACCESS_KEY": "actiontrain-embedded-secret",
    "AWS_REGION": "us-east-1",
}


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedS3:
    """Starts moto's S3 server on a free loopback port; use as a context manager.

    Example:
        with EmbeddedS3() as s3:
            os.environ.update(s3.env)
            s3.create_bucket("data")
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None):
        self.host = host
        self.port = port or _free_port(host)
        self._server = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Standard AWS variables that point s3fs/boto at this server (throwaway credentials)."""
        return {**_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def start(self) -> EmbeddedS3:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            raise ConfigError(
                "the embedded S3 server needs moto: pip install 'actiontrain[demo]' (or 'moto[server]')"
            ) from None
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def create_bucket(self, name: str) -> str:
        """Creates bucket ``name``; returns ``s3://name``."""
        import s3fs

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
