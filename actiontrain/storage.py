"""fsspec URLs: the one place that opens, lists and atomically writes files, local or remote.

Every path the project accepts goes through here: plain local paths, ``file://``, ``s3://``
(s3fs, configured only by the standard AWS variables and files), ``memory://`` and chained
caches such as ``simplecache::s3://bucket/key``. Errors from any backend become one-line
:class:`~actiontrain.errors.StorageError` messages that name the URL and how to fix it, and
never contain credentials.
"""

from __future__ import annotations

import contextlib
import functools
import os
import posixpath
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs as _fsspec_url_to_fs

from actiontrain.errors import NotFoundError, StorageError

__all__ = [
    "atomic_write",
    "cache_dir",
    "copy",
    "exists",
    "find",
    "isdir",
    "is_local",
    "join",
    "list_entries",
    "listdir",
    "open_url",
    "read_bytes",
    "read_range",
    "read_ranges",
    "read_text",
    "redact",
    "relative_to",
    "remove",
    "storage_errors",
    "url_to_fs",
    "write_bytes",
]

# Names of variables whose values must never reach a message, a log line or a file.
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


# Credential values resolved from profiles, files or a service account, beside the variables.
_RESOLVED_SECRETS: set[str] = set()


def redact(text: str) -> str:
    """Replaces any known credential value (environment or resolved by botocore) by ``***``."""
    values = {os.environ.get(name) for name in _SECRET_VARIABLES} | _RESOLVED_SECRETS
    for value in sorted((v for v in values if v and len(v) >= 4), key=len, reverse=True):
        text = text.replace(value, "***")
    return text


def _s3_options() -> dict[str, Any]:
    # botocore reads AWS_ENDPOINT_URL(_S3) itself, but older aiobotocore releases do not; passing
    # it explicitly keeps MinIO/Ceph/moto endpoints working whatever the installed versions.
    options: dict[str, Any] = {}
    for name in _ENDPOINT_VARIABLES:
        if os.environ.get(name):
            options["endpoint_url"] = os.environ[name]
            break
    # Fail fast on a wrong endpoint instead of retrying for minutes.
    options["config_kwargs"] = {"connect_timeout": 10, "retries": {"max_attempts": 3, "mode": "standard"}}
    return options


_CREDENTIAL_VARIABLES = (
    *_SECRET_VARIABLES,
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
)


@functools.lru_cache(maxsize=8)
def _have_credentials(_environment: tuple) -> bool:
    # Start-up: botocore takes a second to import, and only S3 URLs need it.
    import botocore.session  # noqa: PLC0415

    # botocore's own chain: variables, profile files, web identity (a pod's service account),
    # container and instance metadata. s3fs would otherwise fall back to unsigned requests and
    # report a misleading "bucket does not exist".
    credentials = botocore.session.get_session().get_credentials()
    if credentials is None:
        return False
    frozen = credentials.get_frozen_credentials()
    _RESOLVED_SECRETS.update(value for value in (frozen.access_key, frozen.secret_key, frozen.token) if value)
    return True


def _require_credentials(url: str) -> None:
    environment = tuple(os.environ.get(name) for name in _CREDENTIAL_VARIABLES)
    if not _have_credentials(environment):
        raise StorageError(_describe(_NoCredentials(), url))


class _NoCredentials(Exception):
    pass


def _storage_options_for(url: str) -> dict[str, Any]:
    protocols = [part.split("://", 1)[0] for part in url.split("::") if "://" in part]
    if "s3" in protocols or "s3a" in protocols:
        _require_credentials(url)
        # For chained URLs (simplecache::s3://...) fsspec routes options by protocol name.
        return {"s3": _s3_options()} if len(url.split("::")) > 1 else _s3_options()
    return {}


def url_to_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Returns the filesystem and the backend path for ``url``.

    Raises:
        StorageError: the URL's protocol is unknown or its backend is not installed.
    """
    if not isinstance(url, str) or not url:
        raise StorageError("empty URL given; pass a path or a URL such as s3://bucket/dataset")
    try:
        return _fsspec_url_to_fs(url, **_storage_options_for(url))
    except ValueError as error:
        raise StorageError(
            f"unsupported URL {url!r}: {error}; use a local path, file://, s3://, memory:// "
            "or a chain such as simplecache::s3://bucket/key"
        ) from error
    except ImportError as error:
        raise StorageError(f"cannot open {url!r}: {error}") from error


def is_local(url: str) -> bool:
    """True when ``url`` names a file on this machine (plain path or ``file://``)."""
    fs, _ = url_to_fs(url)
    return "file" in _protocols(fs)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def local_path(url: str) -> str:
    """The on-disk path of a local URL (``file:///x`` -> ``/x``)."""
    _, path = url_to_fs(url)
    return path


def join(url: str, *parts: str) -> str:
    """Joins path parts onto a URL with ``/``, keeping chain prefixes and the protocol."""
    result = url.rstrip("/") if url not in ("/",) else url
    for part in parts:
        part = part.strip("/")
        if part:
            result = f"{result}/{part}" if result != "/" else f"/{part}"
    return result


def relative_to(url: str, root: str) -> str:
    """The part of ``url`` below ``root`` (both as given to :func:`join`)."""
    root = root.rstrip("/")
    if url == root:
        return ""
    if not url.startswith(root + "/"):
        raise ValueError(f"{url} is not below {root}")
    return url[len(root) + 1 :]


def cache_dir(*parts: str) -> Path:
    """A local cache folder: ``$ACTIONTRAIN_CACHE_DIR`` or ``$XDG_CACHE_HOME/actiontrain``."""
    base = os.environ.get("ACTIONTRAIN_CACHE_DIR")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "actiontrain")
    path = Path(base, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _describe(error: BaseException, url: str) -> str:
    name = type(error).__name__
    text = redact(str(error))
    endpoint = next((os.environ[n] for n in _ENDPOINT_VARIABLES if os.environ.get(n)), None)
    if name in ("NoCredentialsError", "_NoCredentials") or "Unable to locate credentials" in text:
        return (
            f"no S3 credentials found for {url}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE), or run with a service account that can read the bucket"
        )
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError") or (
        "Could not connect to the endpoint" in text or "Cannot connect to host" in text
    ):
        where = f"endpoint {endpoint}" if endpoint else "the S3 endpoint"
        return (
            f"cannot reach {where} for {url}; check AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) "
            "and that the server is running"
        )
    rejected = (
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidClientTokenId",
        "Access Key Id you provided does not exist",
        "signature we calculated does not match",
        "security token included in the request is invalid",
    )
    if any(marker in text for marker in rejected):
        return (
            f"S3 rejected the credentials for {url}; check AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        )
    if "NoSuchBucket" in text or "bucket does not exist" in text:
        bucket = url.split("://", 1)[-1].split("/", 1)[0]
        return f"bucket {bucket!r} does not exist (from {url}); create it or fix the URL"
    if isinstance(error, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return (
            f"access denied to {url}: the credentials are wrong or lack permission; check "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket's policy"
        )
    if isinstance(error, (FileNotFoundError, NotADirectoryError)):
        return f"not found: {url}; check the path or URL"
    if isinstance(error, IsADirectoryError):
        return f"{url} is a folder, expected a file"
    return f"cannot access {url}: {name}: {text}"


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Turns any backend error raised inside the block into a one-line :class:`StorageError`."""
    try:
        yield
    except StorageError:
        raise
    except Exception as error:  # backends raise OSError, botocore and aiohttp errors alike
        if _is_storage_failure(error):
            message = _describe(error, url)
            if message.startswith("not found: "):
                raise NotFoundError(message) from error
            raise StorageError(message) from error
        raise


def _is_storage_failure(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return True
    module = type(error).__module__ or ""
    return module.startswith(("botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec"))


def exists(url: str) -> bool:
    """True when a file or folder exists at ``url``."""
    fs, path = url_to_fs(url)
    with storage_errors(url):
        return fs.exists(path)


def isdir(url: str) -> bool:
    """True when ``url`` is a folder (on object stores: a non-empty prefix)."""
    fs, path = url_to_fs(url)
    with storage_errors(url):
        return fs.isdir(path)


def list_entries(url: str) -> list[tuple[str, bool]]:
    """``(name, is_folder)`` of everything directly under the folder ``url``, sorted; one listing request.

    Raises:
        StorageError: ``url`` does not exist or cannot be listed.
    """
    fs, path = url_to_fs(url)
    with storage_errors(url):
        entries = fs.ls(path, detail=True)
    base = path.rstrip("/")
    found: dict[str, bool] = {}
    for entry in entries:
        name = entry["name"].rstrip("/")
        if name != base:
            found[posixpath.basename(name)] = entry.get("type") == "directory"
    return sorted(found.items())


def listdir(url: str) -> list[str]:
    """Names directly under the folder ``url`` (files and folders), sorted.

    Raises:
        StorageError: ``url`` does not exist or cannot be listed.
    """
    return [name for name, _ in list_entries(url)]


def find(url: str, *, maxdepth: int | None = None) -> list[str]:
    """Paths of all files below the folder ``url``, relative to it, sorted."""
    fs, path = url_to_fs(url)
    with storage_errors(url):
        found = fs.find(path, maxdepth=maxdepth, withdirs=False)
    base = path.rstrip("/") + "/"
    return sorted(entry[len(base) :] if entry.startswith(base) else entry for entry in found)


def open_url(url: str, mode: str = "rb", **kwargs: Any) -> IO:
    """Opens ``url``; remote files are read lazily with range requests.

    Raises:
        StorageError: missing file, bad credentials, unreachable endpoint.
    """
    fs, path = url_to_fs(url)
    with storage_errors(url):
        return fs.open(path, mode, **kwargs)


def read_bytes(url: str) -> bytes:
    """The whole content of the file at ``url``."""
    fs, path = url_to_fs(url)
    with storage_errors(url):
        return fs.cat_file(path)


def read_range(url: str, start: int, end: int) -> bytes:
    """Bytes ``start`` to ``end`` (exclusive) of the file at ``url``; fewer if it is shorter.

    On object stores this is a single ranged GET, without the HEAD request that opening a
    file object costs.
    """
    fs, path = url_to_fs(url)
    with storage_errors(url):
        try:
            return fs.cat_file(path, start=start, end=end)
        except OSError as error:
            # S3 refuses any range of an empty object (416); for us that is just no bytes.
            if "range is not satisfiable" in str(error).lower() or "InvalidRange" in str(error):
                if start == 0 and fs.size(path) == 0:
                    return b""
            raise


def read_ranges(urls: list[str], start: int, end: int) -> list[bytes | StorageError]:
    """:func:`read_range` of many files at once: concurrent requests from one call.

    Returns, for each URL in order, its bytes or the StorageError it met (not raised, so one
    missing file does not hide the others).
    """
    results: list[bytes | StorageError | None] = [None] * len(urls)
    groups: dict[int, tuple[fsspec.AbstractFileSystem, list[int], list[str]]] = {}
    for position, url in enumerate(urls):
        fs, path = url_to_fs(url)
        group = groups.setdefault(id(fs), (fs, [], []))
        group[1].append(position)
        group[2].append(path)
    for fs, positions, paths in groups.values():
        count = len(paths)
        with storage_errors(urls[positions[0]]):
            fetched = fs.cat_ranges(paths, [start] * count, [end] * count, on_error="return")
        for position, result in zip(positions, fetched):
            if isinstance(result, Exception):
                try:  # empty objects and other per-file cases: the single-file path knows them
                    result = read_range(urls[position], start, end)
                except StorageError as error:
                    result = error
            results[position] = result
    return results


def read_text(url: str, encoding: str = "utf-8") -> str:
    """The whole content of the text file at ``url``."""
    data = read_bytes(url)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise StorageError(f"{url} is not a {encoding} text file") from error


@contextlib.contextmanager
def atomic_write(url: str) -> Iterator[str]:
    """Yields a local temporary path; on success its content appears at ``url`` all at once.

    Readers never see a partial file: locally the file is renamed into place; on object stores
    a single PUT (or a completed multipart upload) makes the object visible only when whole.
    If the block raises, nothing is written.
    """
    fs, path = url_to_fs(url)
    local = "file" in _protocols(fs)
    if local:
        directory = os.path.dirname(os.path.abspath(path)) or "."
        with storage_errors(url):
            os.makedirs(directory, exist_ok=True)
        temporary = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.partial")
    else:
        handle, temporary = tempfile.mkstemp(prefix="actiontrain-", suffix=".partial", dir=cache_dir("tmp"))
        os.close(handle)
    try:
        yield temporary
        with storage_errors(url):
            if local:
                os.replace(temporary, path)
            else:
                fs.put_file(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def remove(url: str) -> None:
    """Deletes the file at ``url`` (missing is fine)."""
    fs, path = url_to_fs(url)
    with storage_errors(url), contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)


def write_bytes(url: str, data: bytes) -> None:
    """Writes ``data`` to ``url`` atomically (see :func:`atomic_write`)."""
    with atomic_write(url) as temporary:
        with open(temporary, "wb") as file:
            file.write(data)


def copy(source: str, destination: str, *, block_size: int = 8 << 20) -> None:
    """Copies one file between any two URLs, atomically at the destination."""
    with atomic_write(destination) as temporary, open(temporary, "wb") as target:
        with open_url(source, "rb") as stream, storage_errors(source):
            while chunk := stream.read(block_size):
                target.write(chunk)
