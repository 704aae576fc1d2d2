"""Media readers return exactly the frames asked for, and bad media fails with a one-line DataError."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from actiontrain import storage
from actiontrain.data import video
from actiontrain.data.media_writer import encode_jpeg, write_frame_folder, write_video
from actiontrain.data.motion import decode_frame_index, render_clip
from actiontrain.data.media import is_frame_folder
from actiontrain.data.video import open_media
from actiontrain.errors import ConfigError, DataError, StorageError

NUM_FRAMES = 40
HEIGHT, WIDTH = 96, 128  # the frame-index code needs 128 pixels of width
INDICES = [17, 3, 3, 39, 0, 25, 16]  # unsorted, repeated, both ends
DECODERS = ["torchcodec", "pyav"]


def _indices_of(frames) -> list[int]:
    return [decode_frame_index(frame.numpy()) for frame in frames]


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return render_clip("move_right", num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH, seed=3)


@pytest.fixture(scope="module")
def media(tmp_path_factory, frames) -> dict[str, str]:
    root = tmp_path_factory.mktemp("media")
    paths = {
        "avi": str(root / "clip.avi"),
        "avi_gop250": str(root / "clip_gop250.avi"),
        "mp4": str(root / "clip.mp4"),
        "webm": str(root / "clip.webm"),
        "frames": str(root / "clip_frames"),
    }
    write_video(paths["avi"], frames, gop=12)
    write_video(paths["avi_gop250"], frames, gop=250)
    write_video(paths["mp4"], frames, gop=12)
    write_video(paths["webm"], frames, gop=12)
    write_frame_folder(paths["frames"], frames)
    return paths


def _check_reader(url: str, decoder: str = "auto") -> None:
    with open_media(url, decoder=decoder) as reader:
        assert reader.num_frames == NUM_FRAMES
        clip = reader.get_frames(INDICES)
    assert clip.shape == (len(INDICES), 3, HEIGHT, WIDTH)
    assert clip.dtype == torch.uint8
    assert _indices_of(clip) == INDICES


def test_is_frame_folder_by_suffix():
    assert is_frame_folder("s3://b/jester/12345")
    assert is_frame_folder("/data/frames/video_1/")
    assert not is_frame_folder("s3://b/ucf/v_Run_g01_c01.AVI")
    assert not any(is_frame_folder(f"/data/clip{suffix}") for suffix in (".mp4", ".webm", ".mkv"))


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("kind", ["avi", "avi_gop250", "mp4", "webm"])
def test_video_returns_exactly_the_requested_frames(media, kind, decoder):
    _check_reader(media[kind], decoder)


def test_frame_folder_returns_exactly_the_requested_frames(media):
    _check_reader(media["frames"])


def test_frame_folder_sorts_unpadded_names_numerically(tmp_path, frames):
    folder = tmp_path / "unpadded"
    write_frame_folder(str(folder), frames[:12], pattern="img_{}.jpg")
    with open_media(str(folder)) as reader:
        assert _indices_of(reader.get_frames([9, 10, 11, 1])) == [9, 10, 11, 1]


def test_pyav_reads_successive_clips_from_one_reader(media):
    with open_media(media["avi_gop250"], decoder="pyav") as reader:
        assert _indices_of(reader.get_frames([30, 31])) == [30, 31]
        assert _indices_of(reader.get_frames([2, 5])) == [2, 5]


def test_unknown_decoder_is_a_config_error(media):
    with pytest.raises(ConfigError, match="decoder"):
        open_media(media["avi"], decoder="opencv")


@pytest.mark.parametrize("decoder", DECODERS)
def test_index_past_the_end_is_a_data_error(media, decoder):
    with open_media(media["avi"], decoder=decoder) as reader:
        with pytest.raises(DataError, match=re.escape(media["avi"])):
            reader.get_frames([NUM_FRAMES])


def test_missing_file_is_a_storage_error(tmp_path):
    with pytest.raises(StorageError, match="not found"):
        open_media(str(tmp_path / "missing.avi"))


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(
    "name, content",
    [
        ("empty.avi", b""),
        ("garbage.mp4", bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8))),
        ("notes.webm", b"this is a text file, not a video\n" * 50),
    ],
)
def test_undecodable_file_is_a_data_error_naming_it(tmp_path, decoder, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(str(path))) as caught:
        with open_media(str(path), decoder=decoder) as reader:
            reader.get_frames([0])
    assert "\n" not in str(caught.value)
    if not content:
        assert "empty" in str(caught.value)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("kind", ["avi", "avi_gop250", "mp4"])
def test_truncated_file_fails_on_frames_it_no_longer_holds(media, tmp_path, kind, decoder):
    data = storage.read_bytes(media[kind])
    path = tmp_path / f"truncated_{kind}{media[kind][-4:]}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=re.escape(str(path))):
        with open_media(str(path), decoder=decoder) as reader:
            # The header may still claim every frame; the last one must not silently appear.
            reader.get_frames([NUM_FRAMES - 1])


@pytest.mark.parametrize("decoder", DECODERS)
def test_corrupt_file_is_a_data_error(media, tmp_path, decoder):
    # Keep the RIFF/AVI signature so the demuxer is chosen, then fill the rest with noise.
    data = bytearray(storage.read_bytes(media["avi"]))
    data[12:] = bytes(np.random.default_rng(1).integers(0, 256, len(data) - 12, dtype=np.uint8))
    path = tmp_path / "corrupt.avi"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=re.escape(str(path))):
        with open_media(str(path), decoder=decoder) as reader:
            reader.get_frames([0, 20])


def test_unreadable_jpeg_is_a_data_error_naming_the_frame(tmp_path, frames):
    folder = tmp_path / "broken_frames"
    write_frame_folder(str(folder), frames[:6])
    (folder / "00004.jpg").write_bytes(encode_jpeg(frames[3])[:200])
    with open_media(str(folder)) as reader:
        assert _indices_of(reader.get_frames([0, 1])) == [0, 1]
        with pytest.raises(DataError, match=re.escape(str(folder / "00004.jpg"))):
            reader.get_frames([2, 3, 4])


def test_frame_deleted_after_listing_is_a_data_error(tmp_path, frames):
    folder = tmp_path / "frames"
    write_frame_folder(str(folder), frames[:4])
    with open_media(str(folder)) as reader:
        (folder / "00003.jpg").unlink()
        with pytest.raises(DataError, match=re.escape(str(folder / "00003.jpg")) + ".*missing"):
            reader.get_frames([0, 2])


class _FailingFile:
    """A file whose reads past ``fail_at`` bytes raise, like a dropped S3 connection."""

    def __init__(self, path: str, fail_at: int) -> None:
        self._file = open(path, "rb")
        self._fail_at = fail_at

    def read(self, size: int = -1) -> bytes:
        if self._file.tell() + max(size, 1) > self._fail_at:
            raise ConnectionResetError("connection reset by peer")
        return self._file.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("fail_at_fraction", [0.0, 0.5, 0.9])
def test_read_failure_is_a_storage_error_not_a_corrupt_file(media, monkeypatch, capfd, decoder, fail_at_fraction):
    path = media["avi_gop250"]
    fail_at = int(len(storage.read_bytes(path)) * fail_at_fraction)
    # A long remote video is streamed with range requests; this one drops mid-stream.
    monkeypatch.setattr(video, "_open_video_file", lambda url: _FailingFile(path, fail_at))
    with pytest.raises(StorageError, match="s3://bucket/clip.avi.*connection reset"):
        with open_media("s3://bucket/clip.avi", decoder=decoder) as reader:
            reader.get_frames([NUM_FRAMES - 1])
    assert "Traceback" not in capfd.readouterr().err  # nothing printed by the C libraries


def test_empty_jpeg_and_empty_folder_are_data_errors(tmp_path, frames):
    folder = tmp_path / "frames"
    write_frame_folder(str(folder), frames[:3])
    (folder / "00002.jpg").write_bytes(b"")
    with open_media(str(folder)) as reader, pytest.raises(DataError, match="empty"):
        reader.get_frames([1])
    (tmp_path / "no_frames").mkdir()
    (tmp_path / "no_frames" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no frames"):
        open_media(str(tmp_path / "no_frames"))


@pytest.fixture
def s3_media(s3_bucket, media) -> dict[str, str]:
    urls = {}
    for kind in ("avi_gop250", "mp4"):
        urls[kind] = f"{s3_bucket}/videos/{media[kind].rsplit('/', 1)[1]}"
        storage.copy(media[kind], urls[kind])
    urls["frames"] = f"{s3_bucket}/frames/clip"
    for name in storage.listdir(media["frames"]):
        storage.copy(storage.join(media["frames"], name), storage.join(urls["frames"], name))
    return urls


@pytest.mark.e2e
@pytest.mark.parametrize("decoder", DECODERS)
def test_s3_videos_return_exactly_the_requested_frames(s3_media, decoder):
    for kind in ("avi_gop250", "mp4"):
        _check_reader(s3_media[kind], decoder)
        _check_reader(f"simplecache::{s3_media[kind]}", decoder)


@pytest.mark.e2e
def test_s3_frame_folder_returns_exactly_the_requested_frames(s3_media):
    _check_reader(s3_media["frames"])


@pytest.mark.e2e
def test_s3_missing_and_undecodable_objects(s3_bucket):
    with pytest.raises(StorageError, match="not found"):
        open_media(f"{s3_bucket}/missing.avi")
    url = f"{s3_bucket}/bad.avi"
    storage.write_bytes(url, b"RIFF not really an avi" * 100)
    with pytest.raises(DataError, match=re.escape(url)):
        with open_media(url) as reader:
            reader.get_frames([0])


class _RecordingFile:
    """A remote file object that records where each read starts and how much it asks for."""

    def __init__(self, file, reads: list[tuple[int, int]]) -> None:
        self._file = file
        self._reads = reads

    def read(self, size: int = -1) -> bytes:
        self._reads.append((self._file.tell(), size))
        return self._file.read(size)

    def __getattr__(self, name: str):
        return getattr(self._file, name)


@pytest.mark.e2e
@pytest.mark.parametrize("decoder", DECODERS)
def test_long_remote_video_reads_its_start_from_the_fetched_head_and_only_the_rest_remotely(
    s3_bucket, tmp_path, monkeypatch, decoder
):
    # A video longer than the head (noise keeps it from compressing) and a head longer than one
    # read of either decoder (32 or 64 KiB), so some reads fit in it and others do not.
    head = 128 << 10
    monkeypatch.setattr(video, "_WHOLE_FILE_BYTES", head)
    path = tmp_path / "long.avi"
    noisy = render_clip("move_right", num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH, seed=3, noise_std=20.0)
    write_video(str(path), noisy, gop=250, bit_rate=4_000_000)
    assert path.stat().st_size > 2 * head
    url = storage.join(s3_bucket, "long.avi")
    storage.copy(str(path), url)

    fetched, remote_reads = [], []
    read_range, open_url = storage.read_range, storage.open_url
    monkeypatch.setattr(storage, "read_range", lambda *args: fetched.append(args) or read_range(*args))
    monkeypatch.setattr(storage, "open_url", lambda *args: _RecordingFile(open_url(*args), remote_reads))
    with open_media(url, decoder=decoder) as reader:
        frames = reader.get_frames([0, NUM_FRAMES - 1, 5])
    assert _indices_of(frames) == [0, NUM_FRAMES - 1, 5]
    assert fetched == [(url, 0, head)]  # the head: one ranged GET
    assert remote_reads, "nothing was read past the head"
    # The container's start came from the head, and no read that fits in the head went to S3.
    assert min(position for position, _ in remote_reads) > 0, remote_reads
    assert all(size < 0 or position + size > head for position, size in remote_reads), remote_reads
