"""Checkpoints: ``step-N`` folders that count once committed, a ``latest`` pointer, keep the last K."""

from __future__ import annotations

import collections
import contextlib
import datetime
import hashlib
import io
import json
import logging
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import torch

import actiontrain
from actiontrain import storage
from actiontrain.errors import ConfigError, DataError, NotFoundError, StorageError

__all__ = ["MARKER_FILE", "POINTER_FILE", "STATE_FILE", "CheckpointManager", "load_checkpoint"]

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
"""The one ``torch.save``'d dict of a checkpoint."""
MARKER_FILE = "COMMITTED"
"""Written last; without it (or with a hash that does not match) a checkpoint does not exist."""
POINTER_FILE = "latest"
"""``checkpoints/latest``: ``{"step": N, "path": "step-0000000N"}``, a hint for people and tools."""

_FORMAT = 1
_STEP_NAME = re.compile(r"^step-(\d+)$")
# Variables whose values must never reach a checkpoint (they would be readable by anyone who can
# read the bucket, long after the credentials were meant to expire).
_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
# Real AWS values are 20 (key id), 40 (secret) or hundreds (token) characters; shorter values
# (localstack's "test") are not secrets and would match ordinary strings such as "test_acc".
_MIN_SECRET_LENGTH = 8
_CREDENTIAL_KEY = re.compile(
    r"(?:^|[_.\-])(?:password|passwd|secret|secret_key|secret_access_key|access_key_id|session_token"
    r"|access_token|auth_token|api_key|credentials?)$",
    re.IGNORECASE,
)
_AWS_KEY_ID = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
# What torch.load(weights_only=True) rebuilds; anything else would save fine and fail at resume.
_PLAIN_TYPES = (str, bytes, bytearray, int, float, complex, bool, type(None), torch.dtype, torch.device)
_CHUNK = 8 << 20


class CheckpointManager:
    """Saves and restores training state under ``OUTPUT/checkpoints``.

    Layout::

        OUTPUT/checkpoints/step-00000120/state.pt    one torch.save'd dict
        OUTPUT/checkpoints/step-00000120/COMMITTED   JSON: step, epoch, size and sha256 of state.pt
        OUTPUT/checkpoints/latest                    JSON: {"step": 120, "path": "step-00000120"}

    A checkpoint counts only once its ``COMMITTED`` marker exists and the hash it records matches
    ``state.pt`` (torchtitan's ``.metadata`` rule): the marker is written after the state, the
    pointer after the marker, so a crash at any moment leaves at worst an uncommitted folder that
    readers skip. The pointer is a hint; :meth:`load_latest` trusts the listing of committed
    folders and the hashes.

    Only rank 0 may call :meth:`save` (the caller decides which process that is); every rank may
    load. The state is loaded with ``torch.load(weights_only=True)`` so that a file from a bucket
    can never run code; it may therefore hold only tensors, numbers, strings, bytes, ``None``,
    ``torch.dtype``/``torch.device``/``torch.Size`` and lists, tuples, sets and dicts of them:
    the ``state_dict()`` of models, optimizers and LR schedulers qualifies; RNG states go in as
    tensors (``torch.get_rng_state()``, or ``torch.tensor(...)`` of Python's and NumPy's states).
    The conventional top-level keys are ``model``, ``optimizer``, ``lr_scheduler``, ``sampler``
    and ``train_state``; which ones are present is the caller's business.

    Example:
        manager = CheckpointManager("s3://bucket/run-1", keep_last=3)
        resumed = manager.load_latest()
        if resumed is not None:
            step, state = resumed
        ...
        if rank == 0:
            manager.save(step, {"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    """

    def __init__(self, output_url: str, *, keep_last: int = 3):
        if not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 1:
            raise ConfigError(f"train.keep_last must be an integer >= 1, got {keep_last!r}")
        self.output_url = output_url
        self.root = storage.join(output_url, "checkpoints")
        self.keep_last = keep_last

    def step_url(self, step: int) -> str:
        """The folder of checkpoint ``step`` (whether it exists or not)."""
        return storage.join(self.root, _step_name(step))

    def save(self, step: int, state: dict[str, Any], *, epoch: int | None = None) -> str:
        """Writes ``state`` as checkpoint ``step``, commits it, moves ``latest``, prunes old ones.

        Call it on rank 0 only. Saving a step that already exists replaces it: its marker is
        removed first, so a crash meanwhile leaves it uncommitted rather than inconsistent.

        Args:
            step: The training step, >= 0.
            state: A dict of what :meth:`load` must give back (see the class docstring for the
                types allowed). It is not modified.
            epoch: Recorded in the marker for people and tools.

        Returns:
            The URL of the checkpoint folder.

        Raises:
            ConfigError: a bad step, a value that cannot be loaded back with ``weights_only``, or
                anything that looks like a credential (then nothing is written).
            StorageError: the output cannot be written.
        """
        _check_step(step)
        if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0):
            raise ConfigError(f"checkpoint epoch must be an integer >= 0 or None, got {epoch!r}")
        if not isinstance(state, dict):
            raise ConfigError(f"checkpoint state must be a dict, got {type(state).__name__}")
        secrets = _secret_values()
        _check_contents(state, "state", secrets, dict(os.environ))

        directory = self.step_url(step)
        state_url = storage.join(directory, STATE_FILE)
        handle, local = tempfile.mkstemp(prefix="actiontrain-checkpoint-", suffix=".pt", dir=storage.cache_dir("tmp"))
        os.close(handle)
        try:
            torch.save(state, local)
            size, digest, leaked = _digest(local, secrets)
            if leaked:
                # The walk above sees strings; this sees everything else (tensor bytes, pickled
                # reprs). Named by variable, never by value.
                raise ConfigError(
                    f"refusing to save checkpoint step {step}: the serialized state contains the value of "
                    f"{', '.join(leaked)}; remove credentials from the state"
                )
            storage.remove(storage.join(directory, MARKER_FILE))  # re-saving a step: uncommit it first
            with storage.atomic_write(state_url) as temporary:
                shutil.move(local, temporary)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(local)

        marker = {
            "format": _FORMAT,
            "step": step,
            "epoch": epoch,
            "files": {STATE_FILE: {"size": size, "sha256": digest}},
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "actiontrain_version": actiontrain.__version__,
            "torch_version": torch.__version__,
        }
        storage.write_bytes(storage.join(directory, MARKER_FILE), _json(marker))
        storage.write_bytes(storage.join(self.root, POINTER_FILE), _json({"step": step, "path": _step_name(step)}))
        logger.info("saved checkpoint step %d to %s (%.1f MB)", step, directory, size / 1e6)
        self._prune(step)
        return directory

    def list_committed(self) -> list[int]:
        """Steps whose commit marker exists, ascending (hashes are checked only when loading)."""
        return sorted(step for step, files in self._listing().items() if MARKER_FILE in files)

    def latest_step(self) -> int | None:
        """The newest committed step, or None; :meth:`load_latest` may still skip it if corrupt."""
        committed = self.list_committed()
        return committed[-1] if committed else None

    def load(self, step: int, *, map_location: Any = "cpu") -> dict[str, Any]:
        """The state saved as checkpoint ``step``, after checking its marker and hash.

        Raises:
            NotFoundError: the checkpoint does not exist or is not committed.
            DataError: it is corrupt, or holds objects that ``weights_only`` loading refuses.
            StorageError: the storage cannot be read.
        """
        _check_step(step)
        directory = self.step_url(step)
        marker_url = storage.join(directory, MARKER_FILE)
        try:
            marker = json.loads(storage.read_bytes(marker_url))
            expected = marker["files"][STATE_FILE]
            size, digest = int(expected["size"]), str(expected["sha256"])
            if marker["step"] != step:
                raise ValueError(f"it names step {marker['step']}")
        except NotFoundError as error:
            raise NotFoundError(f"checkpoint step {step} is not committed: no {marker_url}") from error
        except (ValueError, KeyError, TypeError) as error:
            raise DataError(f"bad commit marker {marker_url}: {error}") from error

        state_url = storage.join(directory, STATE_FILE)
        try:
            data = storage.read_bytes(state_url)
        except NotFoundError as error:
            raise DataError(f"checkpoint step {step} is committed but {state_url} is missing") from error
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise DataError(
                f"checkpoint {state_url} is corrupt: {len(data)} bytes with sha256 "
                f"{hashlib.sha256(data).hexdigest()[:12]}..., the marker says {size} bytes, {digest[:12]}..."
            )
        try:
            state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as error:
            # torch's message suggests weights_only=False, which is exactly what must not happen.
            found = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: was not an allowed|\.?\n|$)", str(error))
            detail = found.group(1) if found else "refused by the weights_only unpickler"
            raise DataError(
                f"refusing to load {state_url}: it holds objects other than tensors, numbers, strings, "
                f"lists and dicts, and checkpoints are loaded with weights_only=True ({detail})"
            ) from error
        except Exception as error:  # noqa: BLE001 - hash-consistent yet unreadable: forged or damaged zip/pickle
            raise DataError(f"cannot read checkpoint {state_url}: {type(error).__name__}: {error}") from error
        if not isinstance(state, dict):
            raise DataError(f"checkpoint {state_url} holds a {type(state).__name__}, expected a dict")
        return state

    def load_latest(self, *, map_location: Any = "cpu") -> tuple[int, dict[str, Any]] | None:
        """The newest valid checkpoint as ``(step, state)``, or None when none is committed.

        A corrupt or refused checkpoint is skipped with a warning in favour of the one before it.
        The ``latest`` pointer only helps people: a missing, stale or dangling pointer is noted
        and the listing of committed checkpoints decides.

        Raises:
            DataError: checkpoints are committed but none of them can be loaded (starting over
                silently would overwrite them).
            StorageError: the storage cannot be reached (never taken to mean "no checkpoint").
        """
        committed = self.list_committed()
        pointer = self._read_pointer()
        if committed and pointer != committed[-1]:
            logger.info(
                "checkpoint pointer %s says step %s, newest committed is %d; using the listing",
                storage.join(self.root, POINTER_FILE),
                pointer,
                committed[-1],
            )
        problems = []
        for step in reversed(committed):
            try:
                return step, self.load(step, map_location=map_location)
            except (DataError, NotFoundError) as error:  # NotFound: pruned since the listing
                logger.warning("skipping checkpoint step %d: %s", step, error)
                problems.append(f"step {step}: {error}")
        if problems:
            raise DataError(
                f"no usable checkpoint under {self.root} ({'; '.join(problems)}); "
                "delete them or choose another output to start over"
            )
        return None

    def _listing(self) -> dict[int, set[str]]:
        # One recursive listing (one request on object stores, never from s3fs's cache).
        try:
            paths = storage.find(self.root)
        except NotFoundError:
            return {}
        steps: dict[int, set[str]] = {}
        for path in paths:
            folder, _, name = path.partition("/")
            match = _STEP_NAME.match(folder)
            if match and name:
                steps.setdefault(int(match.group(1)), set()).add(name)
        return steps

    def _read_pointer(self) -> int | None:
        url = storage.join(self.root, POINTER_FILE)
        try:
            step = json.loads(storage.read_bytes(url))["step"]
        except NotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as error:
            logger.warning("ignoring unreadable checkpoint pointer %s: %s", url, error)
            return None
        return step if isinstance(step, int) and not isinstance(step, bool) else None

    def _prune(self, saved: int) -> None:
        listing = self._listing()
        committed = sorted(step for step, files in listing.items() if MARKER_FILE in files)
        keep = set(committed[-self.keep_last :]) | {saved}
        if committed and saved < committed[-1]:
            logger.warning(
                "saved checkpoint step %d below the newest committed step %d; load_latest() returns the newest",
                saved,
                committed[-1],
            )
        for step, files in sorted(listing.items()):
            if step in keep:
                continue
            if MARKER_FILE in files or (committed and step < committed[-1]):
                self._delete(step, files)

    def _delete(self, step: int, files: set[str]) -> None:
        directory = self.step_url(step)
        # Marker first: a deletion cut short leaves an uncommitted folder, never a committed
        # checkpoint with missing files.
        ordered = sorted(files, key=lambda name: name != MARKER_FILE)
        try:
            for name in ordered:
                storage.remove(storage.join(directory, name))
            if storage.is_local(directory):  # object stores have no folders to leave behind
                fs, path = storage.url_to_fs(directory)
                with contextlib.suppress(OSError):
                    fs.rmdir(path)
        except StorageError as error:  # the new checkpoint is safe; the next save retries
            logger.warning("could not delete old checkpoint step %d: %s", step, error)
            return
        logger.info("deleted old checkpoint %s", directory)


def load_checkpoint(url: str, *, map_location: Any = "cpu") -> tuple[int, dict[str, Any]]:
    """One checkpoint by URL: a ``checkpoints/step-N`` folder, or a training output (its newest).

    What ``actiontrain eval`` and ``actiontrain export`` accept as ``--checkpoint``.

    Args:
        url: ``OUTPUT/checkpoints/step-00000120`` for that step, or ``OUTPUT`` for the newest
            committed checkpoint under ``OUTPUT/checkpoints``.
        map_location: Where tensors are loaded, as for ``torch.load``.

    Returns:
        ``(step, state)``.

    Raises:
        NotFoundError: no committed checkpoint there.
        DataError: the checkpoint is corrupt or refused (see :meth:`CheckpointManager.load`).
        StorageError: the storage cannot be read.
    """
    url = url.rstrip("/")
    name = url.rsplit("/", 1)[-1]
    match = _STEP_NAME.match(name)
    if match:
        output = url.rsplit("/", 2)[0]
        step = int(match.group(1))
        return step, CheckpointManager(output).load(step, map_location=map_location)
    resumed = CheckpointManager(url).load_latest(map_location=map_location)
    if resumed is None:
        where = storage.join(url, "checkpoints")
        raise NotFoundError(f"no committed checkpoint under {where}; pass a training --output or a step folder")
    return resumed


def _step_name(step: int) -> str:
    return f"step-{step:08d}"


def _check_step(step: Any) -> None:
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ConfigError(f"checkpoint step must be an integer >= 0, got {step!r}")


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


def _secret_values() -> dict[str, bytes]:
    values = {}
    for name in _SECRET_VARIABLES:
        value = os.environ.get(name, "")
        if len(value) >= _MIN_SECRET_LENGTH:
            values[name] = value.encode()
    return values


def _check_contents(value: Any, path: str, secrets: dict[str, bytes], environment: dict[str, str]) -> None:
    """Raises ConfigError for credentials and for types that weights_only loading would refuse."""
    if value is os.environ or (isinstance(value, Mapping) and _equals(value, environment)):
        raise ConfigError(f"{path} is os.environ; never save the environment in a checkpoint (it holds credentials)")
    if isinstance(value, (str, bytes, bytearray)):
        data = value.encode(errors="surrogatepass") if isinstance(value, str) else bytes(value)
        leaked = [name for name, secret in secrets.items() if secret in data]
        if leaked or (isinstance(value, str) and _AWS_KEY_ID.search(value)):
            what = f"the value of {', '.join(leaked)}" if leaked else "an AWS access key id"
            raise ConfigError(
                f"refusing to save a checkpoint: {path} contains {what}; remove credentials from the state"
            )
        return
    if isinstance(value, _PLAIN_TYPES):
        return
    if type(value) in (torch.Tensor, torch.nn.Parameter):
        return
    if isinstance(value, (dict, collections.OrderedDict)) and type(value) in (dict, collections.OrderedDict):
        for key, item in value.items():
            where = f"{path}[{key!r}]"
            if isinstance(key, str) and _CREDENTIAL_KEY.search(key):
                raise ConfigError(f"refusing to save a checkpoint: {path} has a key {key!r} that names a credential")
            if not isinstance(key, _PLAIN_TYPES) and type(key) is not tuple:
                raise ConfigError(f"{path} has a key of type {type(key).__name__}; use strings or numbers")
            _check_contents(key, f"{path} key {key!r}", secrets, environment)
            _check_contents(item, where, secrets, environment)
        return
    if type(value) in (list, tuple, set, frozenset, torch.Size):
        for index, item in enumerate(value):
            _check_contents(item, f"{path}[{index}]", secrets, environment)
        return
    hint = ""
    if type(value).__module__.split(".")[0] == "numpy":
        hint = " (convert NumPy values with torch.from_numpy(...) or .item())"
    raise ConfigError(
        f"{path} is a {type(value).__module__}.{type(value).__qualname__}; checkpoints hold only tensors, "
        "numbers, strings, bytes, None and lists, tuples, sets and dicts of them, because they are loaded "
        f"with torch.load(weights_only=True){hint}; e.g. store an RNG state as torch.tensor(...)"
    )


def _equals(mapping: Mapping, environment: dict[str, str]) -> bool:
    if len(mapping) != len(environment):
        return False
    try:
        return dict(mapping) == environment
    except (RuntimeError, TypeError, ValueError):  # values whose comparison raises (tensors): not the environment
        return False


def _digest(path: str, secrets: dict[str, bytes]) -> tuple[int, str, list[str]]:
    """Size, sha256 and the names of secrets found in the file, in one pass."""
    sha = hashlib.sha256()
    size = 0
    overlap = max((len(value) for value in secrets.values()), default=1) - 1
    tail = b""
    leaked: set[str] = set()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
            window = tail + chunk
            leaked.update(name for name, value in secrets.items() if value in window)
            tail = window[-overlap:] if overlap else b""
    return size, sha.hexdigest(), sorted(leaked)
