"""ClipDataset and ClipLoader: seeded clips, label-aware flip, bad samples, S3 with worker processes."""

from __future__ import annotations

import os

import pytest
import torch

from actiontrain.config import DataConfig
from actiontrain.data.catalog import Sample, load_dataset
from actiontrain.data.dataset import ClipDataset, build_clip_dataset
from actiontrain.data.loader import ClipLoader
from actiontrain.data.synth import synthesize
from actiontrain.errors import DataError

SMALL = dict(clip_len=4, frame_interval=2, crop_size=64, train_short_side=(64, 80), eval_short_side=64)


@pytest.fixture(scope="module")
def jester(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("jester") / "jester")
    synthesize(root, format="jester", num_classes=4, videos_per_class=4, num_frames=(10, 14))
    return load_dataset(root)


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ucf") / "ucf")
    synthesize(root, format="ucf101", num_classes=2, videos_per_class=6, num_frames=(12, 20))
    return root


def _train_set(dataset, **overrides):
    return build_clip_dataset(dataset, subset="train", config=DataConfig(**{**SMALL, **overrides}), train=True)


def test_train_clip_shape_and_determinism(jester):
    clips = _train_set(jester)
    first = clips[0]
    assert first["video"].shape == (3, 4, 64, 64) and first["video"].dtype == torch.float32
    assert torch.equal(first["video"], clips[0]["video"])  # same (seed, epoch, index), same clip
    clips.set_epoch(1)
    assert not torch.equal(first["video"], clips[0]["video"])


def test_eval_item_holds_every_view(jester):
    config = DataConfig(**SMALL, num_eval_clips=2, num_eval_crops=3)
    clips = ClipDataset(jester.samples("validation"), config=config, train=False)
    assert clips[0]["video"].shape == (6, 3, 4, 64, 64)


def test_flip_swaps_left_right_labels(jester):
    left = jester.classes.index("Swiping Left")
    right = jester.classes.index("Swiping Right")
    always = _train_set(jester, flip_prob=1.0)
    never_aware = _train_set(jester, flip_prob=1.0, label_aware_flip=False)
    for index, sample in enumerate(always.samples):
        if sample.label in (left, right):
            assert always[index]["label"] == (right if sample.label == left else left)
            assert never_aware[index]["label"] == sample.label
        else:
            assert always[index]["label"] == sample.label


def test_short_video_loops_instead_of_failing(tmp_path):
    from actiontrain.data.media_writer import write_video
    from actiontrain.data.motion import decode_frame_index, render_clip

    path = str(tmp_path / "short.avi")
    write_video(path, render_clip("grow", num_frames=3, height=128, width=128))
    # No resize, crop, flip or normalisation in the way of reading the frame codes back.
    raw = {"crop_size": 128, "train_short_side": (128, 128), "flip_prob": 0.0, "mean": (0.0,) * 3, "std": (1.0,) * 3}
    config = DataConfig(clip_len=4, frame_interval=2, eval_short_side=128, **raw)
    clip = ClipDataset([Sample(url=path, label=0, item_id="short")], config=config, train=True)[0]["video"]
    assert clip.shape == (3, 4, 128, 128)
    pixels = (clip.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    # Frames 0, 2, 4 and 6 of a 3-frame video, wrapped around: 0, 2, 1, 0.
    assert [decode_frame_index(pixels[:, t]) for t in range(4)] == [0, 2, 1, 0]


def _corrupt(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as file:
        file.seek(12)
        file.write(os.urandom(size - 12))


def test_bad_samples_are_skipped_counted_then_fatal(ucf):
    dataset = load_dataset(ucf)
    samples = dataset.samples("train")
    _corrupt(samples[0].url)
    clips = ClipDataset(samples, config=DataConfig(**SMALL, max_bad_fraction=0.2), train=True)
    loader = ClipLoader(clips, batch_size=2, num_workers=0)
    loader.set_epoch(0)
    seen = sum(len(batch["index"]) for batch in loader)
    assert seen == len(samples) - 1
    assert list(loader.tracker.bad) == [0]

    _corrupt(samples[1].url)
    _corrupt(samples[2].url)
    strict = ClipLoader(
        ClipDataset(samples, config=DataConfig(**SMALL, max_bad_fraction=0.2), train=True), batch_size=2, num_workers=0
    )
    strict.set_epoch(0)
    with pytest.raises(DataError, match=r"2 of 8 samples could not be read, more than data.max_bad_fraction=0.2"):
        for _ in strict:
            pass


def test_ranks_read_disjoint_parts_that_cover_the_epoch(jester):
    clips = _train_set(jester)
    seen = []
    for rank in range(2):
        loader = ClipLoader(clips, batch_size=3, rank=rank, world_size=2, num_workers=0)
        loader.set_epoch(3)
        seen.append([int(i) for batch in loader for i in batch["index"]])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(len(clips)))


@pytest.mark.e2e
def test_worker_processes_read_from_s3_after_the_parent_did(s3_bucket):
    root = f"{s3_bucket}/hmdb"
    synthesize(root, format="hmdb51", num_classes=2, videos_per_class=5, num_frames=(12, 16))
    dataset = load_dataset(root)  # the parent process now holds s3fs connections and a loop
    clips = ClipDataset(dataset.samples("train"), config=DataConfig(**SMALL, num_workers=2), train=True)
    assert clips[0]["video"].shape == (3, 4, 64, 64)  # and has used them in this process too
    loader = ClipLoader(clips, batch_size=2)
    for epoch in range(2):  # fresh workers each epoch
        loader.set_epoch(epoch)
        indices = sorted(int(i) for batch in loader for i in batch["index"])
        assert indices == list(range(len(clips)))
    assert not loader.tracker.bad


def test_config_flip_pairs_add_to_the_datasets(jester):
    up = jester.classes.index("Swiping Up")
    down = jester.classes.index("Swiping Down")
    clips = _train_set(jester, flip_prob=1.0, flip_pairs=[("Swiping Up", "Swiping Down")])
    for index, sample in enumerate(clips.samples):
        if sample.label in (up, down):
            assert clips[index]["label"] == (down if sample.label == up else up)


def test_flip_pair_with_unknown_class_is_a_config_error(jester):
    from actiontrain.errors import ConfigError

    with pytest.raises(ConfigError, match="Jumping"):
        _train_set(jester, flip_pairs=[("Jumping", "Swiping Up")])


@pytest.mark.e2e
def test_parent_batches_do_not_break_forked_workers(jester):
    clips = _train_set(jester, num_workers=2)
    clips.__getitems__([0, 1])  # the parent's prefetch pool now exists: workers must not reuse it
    loader = ClipLoader(clips, batch_size=1)
    loader.set_epoch(0)
    assert sorted(int(i) for batch in loader for i in batch["index"]) == list(range(len(clips)))


def test_storage_outage_stops_loading_with_the_storage_message(tmp_path):
    from actiontrain.errors import StorageError

    samples = [Sample(url="s3://unreachable-bucket/a.avi", label=0, item_id="a")]
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        loader = ClipLoader(ClipDataset(samples, config=DataConfig(**SMALL), train=True), batch_size=1, num_workers=0)
        loader.set_epoch(0)
        with pytest.raises(StorageError, match="cannot reach endpoint http://127.0.0.1:9"):
            next(iter(loader))
