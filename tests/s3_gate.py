"""A TCP proxy in front of the test S3 server that holds back one chosen request.

A client pointed at the gate (``AWS_ENDPOINT_URL=gate.endpoint``) talks to the real server through
it, byte for byte, until it sends the first request that ``hold`` matches: that request does not
reach the server and its client waits for the answer. The test then knows exactly where the client
stands (every earlier request answered, the held one not even received) and acts there: kills the
client, or does something else and then lets the request through with :meth:`S3Gate.release`,
instead of polling the server and racing the client.

The gate reads only what it must to find request boundaries: the request line, the headers and
``Content-Length`` bytes of body. Responses flow back unread.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

__all__ = ["Request", "S3Gate", "uploading"]

_HEAD_LIMIT = 64 << 10


class Request:
    """One HTTP request as the gate saw it: method, path and query (values as lists)."""

    def __init__(self, method: str, target: str) -> None:
        self.method = method
        self.target = target
        parts = urlsplit(target)
        self.path = parts.path
        self.query = parse_qs(parts.query, keep_blank_values=True)

    def __repr__(self) -> str:
        return f"{self.method} {self.target}"


def uploading(key_suffix: str) -> Callable[[Request], bool]:
    """A ``hold`` for the upload of an object whose key ends with ``key_suffix``: its PUT, or
    the PUT of one of its parts when it goes up in parts."""
    return lambda request: request.method == "PUT" and request.path.endswith(key_suffix)


class S3Gate:
    """Forwards HTTP to ``upstream`` and holds the first request for which ``hold`` is true.

    Use as a context manager. ``held`` is set once that request has arrived; it is not forwarded
    until :meth:`release` (closing the gate drops it). ``held_request`` is that request;
    ``forwarded`` lists the requests passed on, in order; ``errors`` says what the gate could not
    handle (its client then sees a dropped connection).

    Args:
        upstream: The server's endpoint, ``http://HOST:PORT``.
        hold: Called with each request; True holds it (only the first such request is held).
        host: The address to listen on: one the clients reach (a pod network's gateway).
    """

    def __init__(self, upstream: str, hold: Callable[[Request], bool], *, host: str = "127.0.0.1") -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname, parts.port)
        self._hold = hold
        self.held = threading.Event()
        self.held_request: Request | None = None
        self.forwarded: list[Request] = []
        self.errors: list[str] = []
        self._closing = threading.Event()
        self._go = threading.Event()  # release() or close()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server((host, 0))
        self.endpoint = f"http://{host}:{self._listener.getsockname()[1]}"

    def __enter__(self) -> S3Gate:
        self._start(self._accept)
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def release(self) -> None:
        """Lets the held request (and any later one) through to the server."""
        self._go.set()

    def close(self) -> None:
        """Drops every connection, a held request included, and stops the gate."""
        self._closing.set()
        self._go.set()
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            thread.join(timeout=10)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
        return sock

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self._track(client)
            self._start(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        try:
            server = self._track(socket.create_connection(self._upstream))
        except OSError:
            client.close()
            return
        self._start(self._pipe, server, client)
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = client.recv(65536)
                    if not chunk:
                        return  # the client closed (or died)
                    buffer += chunk
                    if len(buffer) > _HEAD_LIMIT:
                        raise ValueError(f"no end of headers in {len(buffer)} bytes")
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                request, length = self._parse(head)
                with self._lock:
                    holding = not self.held.is_set() and self._hold(request)
                    if holding:
                        self.held_request = request
                        self.held.set()
                if holding:
                    self._go.wait()  # the client waits for its answer meanwhile
                    if self._closing.is_set():
                        return
                with self._lock:
                    self.forwarded.append(request)
                server.sendall(head + b"\r\n\r\n")
                while length:
                    if not buffer:
                        buffer = client.recv(min(length, 1 << 20))
                        if not buffer:
                            return
                    part, buffer = buffer[:length], buffer[length:]
                    server.sendall(part)
                    length -= len(part)
        except OSError:
            return  # a connection was dropped: by the client, the server or close()
        except Exception as error:  # noqa: BLE001 - reported to the test, the client sees a dropped connection
            with self._lock:
                self.errors.append(repr(error))
            client.close()
        finally:
            try:
                server.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    @staticmethod
    def _parse(head: bytes) -> tuple[Request, int]:
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            # botocore sends Content-Length with every body; a chunked one would need decoding here.
            raise ValueError(f"{method} {target}: chunked request bodies are not supported by the gate")
        return Request(method, target), int(headers.get("content-length", "0"))

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass
