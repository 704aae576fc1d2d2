"""Fetching remote media ahead of decoding: the current batch concurrently, this worker's next batch early."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

from torch.utils.data import get_worker_info

from actiontrain.data.video import prefetch

__all__ = ["MediaPrefetcher"]


class MediaPrefetcher:
    """Keeps object-store latency off the decode path.

    A batch's files are requested together (one round trip for the batch instead of one per
    clip), and, when the epoch's order is known, the next batch this DataLoader worker will be
    given is requested while the current one decodes. Only I/O runs in the threads.

    Args:
        urls: Media URL of each sample index.
        max_threads: Batches fetched at once (each batch's requests run concurrently anyway).
    """

    def __init__(self, urls: Sequence[str], *, max_threads: int = 2):
        self._urls = list(urls)
        self._max_threads = max_threads
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pending: OrderedDict[int, Future] = OrderedDict()
        self._schedule: list[int] = []
        self._position: dict[int, int] = {}

    def set_schedule(self, schedule: Sequence[int] | None) -> None:
        """The order in which this rank will ask for samples this epoch (None: unknown)."""
        self._discard_pending()
        self._schedule = list(schedule or [])
        self._position = {index: position for position, index in enumerate(self._schedule)}

    def fetch_batch(self, indices: Sequence[int]) -> list[Future]:
        """Futures of the opened files (or None for local media) of ``indices``, in order."""
        missing = [index for index in indices if index not in self._pending]
        fetched = self._submit(missing)
        futures = [self._pending.pop(index, None) or fetched[index] for index in indices]
        ahead = [index for index in self._next_batch_of_this_worker(indices) if index not in self._pending]
        self._pending.update(self._submit(ahead))
        while len(self._pending) > 4 * max(len(indices), 1):  # a schedule that went stale: bound memory
            _close(self._pending.popitem(last=False)[1])
        return futures

    def _next_batch_of_this_worker(self, indices: Sequence[int]) -> list[int]:
        if not self._schedule or not indices or indices[0] not in self._position:
            return []
        worker = get_worker_info()
        num_workers = worker.num_workers if worker is not None else 1
        # The DataLoader hands batches to its workers in turn: ours comes num_workers batches on.
        start = self._position[indices[0]] + num_workers * len(indices)
        return self._schedule[start : start + len(indices)]

    def _submit(self, indices: list[int]) -> dict[int, Future]:
        """One background task fetches ``indices`` together; a future per index."""
        if not indices:
            return {}
        # A forked DataLoader worker inherits the pool object but none of its threads: using it
        # would wait forever. Each process makes its own.
        if self._pool is None or self._pool_pid != os.getpid():
            self._pool = ThreadPoolExecutor(max_workers=self._max_threads, thread_name_prefix="actiontrain-io")
            self._pool_pid = os.getpid()
            self._pending = OrderedDict()
        futures = {index: Future() for index in indices}

        def fetch() -> None:
            try:
                results = prefetch([self._urls[index] for index in indices])
            except BaseException as error:  # every sample of the batch sees why
                for future in futures.values():
                    future.set_exception(error)
                return
            for index, result in zip(indices, results):
                if isinstance(result, Exception):
                    futures[index].set_exception(result)
                else:
                    futures[index].set_result(result)

        self._pool.submit(fetch)
        return futures

    def _discard_pending(self) -> None:
        while self._pending:
            _close(self._pending.popitem()[1])

    def __getstate__(self) -> dict[str, Any]:
        # Threads and in-flight requests stay in the process that made them.
        state = dict(self.__dict__)
        state["_pool"], state["_pending"] = None, OrderedDict()
        return state


def _close(future: Future) -> None:
    future.add_done_callback(lambda done: _close_file(done))


def _close_file(done: Future) -> None:
    if done.cancelled() or done.exception() is not None:
        return
    file: IO[bytes] | None = done.result()
    if file is not None:
        file.close()
