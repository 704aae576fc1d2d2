"""MediaPrefetcher: a batch fetched together, this worker's next batch fetched early, memory bounded."""

from __future__ import annotations

from actiontrain import storage
from actiontrain.data.prefetch import MediaPrefetcher


def _urls(tmp_name: str, count: int) -> list[str]:
    urls = [f"memory://{tmp_name}/video_{i}.avi" for i in range(count)]
    for i, url in enumerate(urls):
        storage.write_bytes(url, f"bytes of {i}".encode())
    return urls


def test_batch_arrives_in_order_with_contents():
    urls = _urls("prefetch-order", 4)
    prefetcher = MediaPrefetcher(urls)
    files = [future.result() for future in prefetcher.fetch_batch([2, 0, 3])]
    assert [file.read() for file in files] == [b"bytes of 2", b"bytes of 0", b"bytes of 3"]


def test_next_batch_of_this_worker_is_fetched_early():
    urls = _urls("prefetch-ahead", 8)
    prefetcher = MediaPrefetcher(urls)
    prefetcher.set_schedule([5, 1, 7, 0, 2, 6, 3, 4])
    prefetcher.fetch_batch([5, 1])
    ahead = dict(prefetcher._pending)
    assert list(ahead) == [7, 0]  # one worker: the next batch in the schedule
    futures = prefetcher.fetch_batch([7, 0])
    assert futures == [ahead[7], ahead[0]]  # used, not fetched again
    assert futures[0].result().read() == b"bytes of 7"


def test_stale_schedule_does_not_grow_without_bound():
    urls = _urls("prefetch-stale", 40)
    prefetcher = MediaPrefetcher(urls)
    prefetcher.set_schedule(list(range(40)))
    for start in range(0, 20, 2):  # the caller asks for other batches than scheduled
        prefetcher.fetch_batch([39 - start, 38 - start])
    assert len(prefetcher._pending) <= 8


def test_local_files_are_not_prefetched(tmp_path):
    path = tmp_path / "a.avi"
    path.write_bytes(b"x")
    assert MediaPrefetcher([str(path)]).fetch_batch([0])[0].result() is None
