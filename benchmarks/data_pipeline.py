"""Training-pipeline throughput (decode + temporal sample + augment): local, S3 and a Datumaro baseline."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch
import torchcodec
from datumaro.components.media import Video

from actiontrain import storage
from actiontrain.config import DataConfig
from actiontrain.data.catalog import Sample
from actiontrain.data.dataset import ClipDataset, sample_seed
from actiontrain.data.motion import MOTIONS, decode_frame_index, render_clip
from actiontrain.data.media_writer import write_video
from actiontrain.data.sampling import train_clip_indices
from actiontrain.data.transforms import TrainTransform, build_train_transform
from actiontrain.data.video import open_media, resolve_decoder
from actiontrain.embedded_s3 import EmbeddedS3

TARGETS = {"s3_vs_local": 0.8, "local_vs_baseline": 3.0}
"""Minimum ratios: S3 within 20% of local disk, local at least 3x the Datumaro/OpenCV baseline."""

_NUM_SANITY_CLIPS = 3
# A clip whose frames match differs only by decoder colour conversion (swscale vs OpenCV):
# a few uint8 levels, i.e. ~0.02-0.1 after normalisation by std 0.225. A wrong frame differs by far more.
_MAX_MEAN_ABS_DIFF = 0.1

Clip = tuple[int, int]  # (epoch, index)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--videos", type=int, default=24, help="synthetic videos to generate (default 24)")
    parser.add_argument("--clips", type=int, default=192, help="clips per measurement, cycling over the videos (default 192)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats; medians are reported (default 5)")
    parser.add_argument("--gop", type=int, default=12, help="keyframe interval of the videos (FFmpeg's MPEG-4 default 12)")
    parser.add_argument(
        "--bitrate", type=int, default=600, help="average video bitrate in kbit/s, UCF101-like (default 600; 0 = constant quality)"
    )
    parser.add_argument("--noise", type=float, default=6.0, help="sensor noise std in grey levels (default 6)")
    parser.add_argument("--decoder", choices=("auto", "torchcodec", "pyav"), default="auto", help="actiontrain decoder")
    parser.add_argument("--seed", type=int, default=0, help="data.seed and the seed of the synthetic videos")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch and OpenCV threads: 1 = one DataLoader worker, which is how the pipeline runs (default 1)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="clips per batch, as the X3D recipe's batch per device (default 8)")
    args = parser.parse_args(argv)
    for name in ("videos", "clips", "repeats", "gop", "batch_size", "threads"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be > 0, got {getattr(args, name)}")
    return args


def build_videos(
    root: str, *, num_videos: int, gop: int, seed: int, bitrate_kbps: int = 0, noise_std: float = 0.0
) -> list[Sample]:
    """Writes ``num_videos`` 320x240 XviD AVI files of 150-200 frames (UCF101-like) under ``root``.

    With sensor noise and an average bitrate the files have UCF101's size (about 0.5 MB for 7 s);
    without, a flat synthetic scene compresses to a tenth of that.
    """
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(num_videos):
        label = i % len(MOTIONS)
        frames = render_clip(
            MOTIONS[label].key, num_frames=int(rng.integers(150, 201)), seed=seed * 100_003 + i, noise_std=noise_std
        )
        path = os.path.join(root, f"video_{i:03d}.avi")
        write_video(path, frames, fps=25, gop=gop, bit_rate=bitrate_kbps * 1000 or None)
        samples.append(Sample(url=path, label=label, item_id=f"video_{i:03d}"))
    return samples


def upload(samples: list[Sample], bucket: str) -> list[Sample]:
    """Copies each sample's file under ``bucket``; returns the samples with s3:// URLs."""
    uploaded = []
    for sample in samples:
        url = storage.join(bucket, os.path.basename(sample.url))
        storage.copy(sample.url, url)
        uploaded.append(Sample(url=url, label=sample.label, item_id=sample.item_id))
    return uploaded


class DatumaroBaseline:
    """One training clip the way a Datumaro-based loader gets it: ``Video`` media, frames read in order.

    Datumaro's ``Video`` has no seek: it decodes with OpenCV from frame 0 up to the last needed
    index. Randomness is seeded exactly as in :class:`ClipDataset`, and the same
    :class:`TrainTransform` runs afterwards, so only media access differs.
    """

    def __init__(self, samples: list[Sample], *, config: DataConfig):
        self.samples = samples
        self.config = config
        self.transform: TrainTransform = build_train_transform(
            crop_size=config.crop_size,
            short_side_range=config.train_short_side,
            flip_prob=config.flip_prob,
            flip_pairs=None,
            mean=config.mean,
            std=config.std,
        )

    def clip_frames(self, index: int, *, epoch: int) -> tuple[torch.Tensor, list[int], int]:
        """Decodes the clip's frames; returns ``(T, 3, H, W)`` uint8 RGB, their indices and the frame count.

        Must run with the torch RNG seeded by the caller (the transform shares it).
        """
        seed = sample_seed(self.config.seed, epoch, index)
        generator = torch.Generator().manual_seed(seed)
        video = Video(self.samples[index].url)
        try:
            # Video.length stays None until the whole file has been decoded once; the header
            # count from Datumaro's own OpenCV reader is what such a loader uses instead.
            num_frames = int(video._get_reader().get(cv2.CAP_PROP_FRAME_COUNT))
            indices = train_clip_indices(
                num_frames, clip_len=self.config.clip_len, frame_interval=self.config.frame_interval, generator=generator
            )
            wanted, last = set(indices), max(indices)
            found: dict[int, np.ndarray] = {}
            for frame in video:
                if frame.index in wanted:
                    found[frame.index] = frame.data  # BGR uint8 HWC
                if frame.index >= last:
                    break
        finally:
            video.close()
        missing = wanted - found.keys()
        if missing:
            raise RuntimeError(f"{self.samples[index].url}: OpenCV returned no frame {min(missing)} of {num_frames}")
        rgb = np.stack([found[i][..., ::-1] for i in indices])
        return torch.from_numpy(rgb).permute(0, 3, 1, 2), indices, num_frames

    def get(self, index: int, *, epoch: int) -> dict[str, Any]:
        """The training item of ``index`` in ``epoch``, as ``ClipDataset.__getitem__`` returns it."""
        sample = self.samples[index]
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(sample_seed(self.config.seed, epoch, index))
            frames, _, _ = self.clip_frames(index, epoch=epoch)
            video, label = self.transform(frames, sample.label)
        return {"video": video, "label": label, "index": index}


def _dataset_get(dataset: ClipDataset) -> Callable[[int, int], dict[str, Any]]:
    def get(index: int, epoch: int) -> dict[str, Any]:
        dataset.set_epoch(epoch)
        item = dataset[index]
        if "error" in item:
            raise RuntimeError(f"sample {index} failed: {item['error']}")
        return item

    return get


def _dataset_batches(
    dataset: ClipDataset, batches: list[tuple[int, list[int]]]
) -> Callable[[list[int], int], list[dict[str, Any]]]:
    # The training path: the DataLoader hands each batch's indices to ClipDataset.__getitems__.
    started = [False]
    def get(indices: list[int], epoch: int) -> list[dict[str, Any]]:
        if dataset.epoch != epoch or not started[0]:
            # As ClipLoader does: the epoch's order is known up front, so the next batch is fetched early.
            dataset.set_epoch(epoch, schedule=[index for e, batch in batches for index in batch if e == epoch])
            started[0] = True
        items = dataset.__getitems__(indices)
        for item in items:
            if "error" in item:
                raise RuntimeError(f"sample {item['index']} failed: {item['error']}")
        return items

    return get


def _baseline_batches(baseline: DatumaroBaseline) -> Callable[[list[int], int], list[dict[str, Any]]]:
    # A Datumaro-based loader has no batched access: one clip after another.
    return lambda indices, epoch: [baseline.get(index, epoch=epoch) for index in indices]


def _batches(clips: list[Clip], batch_size: int) -> list[tuple[int, list[int]]]:
    """Groups ``(epoch, index)`` pairs into batches that never span two epochs."""
    batches: list[tuple[int, list[int]]] = []
    for epoch, index in clips:
        if not batches or batches[-1][0] != epoch or len(batches[-1][1]) == batch_size:
            batches.append((epoch, []))
        batches[-1][1].append(index)
    return batches


def _time_clips(get: Callable[[list[int], int], list[dict[str, Any]]], batches: list[tuple[int, list[int]]]) -> float:
    """Seconds to produce every batch, one after another in this process."""
    start = time.perf_counter()
    for epoch, indices in batches:
        get(indices, epoch)
    return time.perf_counter() - start


def _dataset_clip_indices(dataset: ClipDataset, index: int, *, epoch: int) -> tuple[list[int], int]:
    # The indices ClipDataset draws for (epoch, index): its generator is seeded the same way.
    generator = torch.Generator().manual_seed(sample_seed(dataset.config.seed, epoch, index))
    with open_media(dataset.samples[index].url, decoder=dataset.config.decoder) as reader:
        num_frames = reader.num_frames
    indices = train_clip_indices(
        num_frames, clip_len=dataset.config.clip_len, frame_interval=dataset.config.frame_interval, generator=generator
    )
    return indices, num_frames


def check_same_clips(dataset: ClipDataset, baseline: DatumaroBaseline, clips: list[Clip]) -> float:
    """Checks that the baseline yields (a)'s clips: same frames (by their index code), same output.

    Returns:
        The largest mean absolute difference between the two normalised clips.

    Raises:
        AssertionError: a frame count, a frame or a clip differs.
    """
    worst = 0.0
    for epoch, index in clips:
        expected, num_frames = _dataset_clip_indices(dataset, index, epoch=epoch)
        with open_media(dataset.samples[index].url, decoder=dataset.config.decoder) as reader:
            ours = reader.get_frames(expected)
        with torch.random.fork_rng(devices=[]):
            theirs, indices, their_num_frames = baseline.clip_frames(index, epoch=epoch)
        if their_num_frames != num_frames or indices != expected:
            raise AssertionError(
                f"sample {index}: OpenCV counts {their_num_frames} frames, actiontrain {num_frames}; "
                f"indices {indices} vs {expected}"
            )
        for name, frames in (("actiontrain", ours), ("baseline", theirs)):
            codes = [decode_frame_index(frame.numpy()) for frame in frames]
            if codes != [i % 256 for i in expected]:
                raise AssertionError(f"sample {index}: {name} decoded frames {codes}, expected {expected}")
        a = _dataset_get(dataset)(index, epoch)
        c = baseline.get(index, epoch=epoch)
        if a["video"].shape != c["video"].shape or a["label"] != c["label"]:
            raise AssertionError(f"sample {index}: clips differ in shape or label")
        diff = float((a["video"] - c["video"]).abs().mean())
        if diff > _MAX_MEAN_ABS_DIFF:
            raise AssertionError(f"sample {index}: clips differ by {diff:.3f} on average (> {_MAX_MEAN_ABS_DIFF})")
        worst = max(worst, diff)
    return worst


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Builds the videos, measures the three configurations interleaved, returns the results."""
    # PyTorch runs each DataLoader worker with one thread; measure the pipeline the same way,
    # and hold the baseline's OpenCV to the same budget.
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    config = DataConfig(decoder=args.decoder, seed=args.seed)
    # (epoch, index): --clips 96 over 24 videos is 4 epochs, each with other segments and crops.
    clips = [(k // args.videos, k % args.videos) for k in range(args.clips)]
    with tempfile.TemporaryDirectory(prefix="actiontrain-bench-") as root, EmbeddedS3(separate_process=True) as s3, s3.environment():
        started = time.perf_counter()
        local_samples = build_videos(
            root, num_videos=args.videos, gop=args.gop, seed=args.seed, bitrate_kbps=args.bitrate, noise_std=args.noise
        )
        mean_kib = statistics.mean(os.path.getsize(sample.url) for sample in local_samples) / 1024
        s3_samples = upload(local_samples, s3.create_bucket("bench"))
        setup_s = time.perf_counter() - started
        local = ClipDataset(local_samples, config=config, train=True)
        remote = ClipDataset(s3_samples, config=config, train=True)
        baseline = DatumaroBaseline(local_samples, config=config)
        batches = _batches(clips, args.batch_size)
        configurations = {
            "local": _dataset_batches(local, batches),
            "s3": _dataset_batches(remote, batches),
            "baseline": _baseline_batches(baseline),
        }
        max_diff = check_same_clips(local, baseline, clips[:_NUM_SANITY_CLIPS])
        for get in configurations.values():  # warm-up: imports, first open, S3 connection pool
            get(*reversed(batches[0]))
        seconds: dict[str, list[float]] = {name: [] for name in configurations}
        for _ in range(args.repeats):
            for name, get in configurations.items():
                seconds[name].append(_time_clips(get, batches))
    rates = {name: args.clips / statistics.median(values) for name, values in seconds.items()}
    ratios = {
        "s3_vs_local": rates["s3"] / rates["local"],
        "local_vs_baseline": rates["local"] / rates["baseline"],
    }
    return {
        "local_clips_per_s": round(rates["local"], 2),
        "s3_clips_per_s": round(rates["s3"], 2),
        "baseline_clips_per_s": round(rates["baseline"], 2),
        **{name: round(value, 3) for name, value in ratios.items()},
        "decoder": resolve_decoder(args.decoder),
        "batch_size": args.batch_size,
        "gop": args.gop,
        "bitrate_kbps": args.bitrate,
        "mean_file_kib": round(mean_kib, 1),
        "num_videos": args.videos,
        "num_clips": args.clips,
        "repeats": args.repeats,
        "seconds": {name: [round(s, 3) for s in values] for name, values in seconds.items()},
        "sanity_max_mean_abs_diff": round(max_diff, 4),
        "setup_s": round(setup_s, 1),
        "num_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "torchcodec": torchcodec.__version__, "opencv": cv2.__version__},
        "targets": TARGETS,
        "targets_met": all(ratios[name] >= target for name, target in TARGETS.items()),
    }


def _table(result: dict[str, Any]) -> str:
    rows = [
        ("(a) local disk, ClipDataset", result["local_clips_per_s"]),
        ("(b) S3 on loopback, ClipDataset", result["s3_clips_per_s"]),
        ("(c) baseline, Datumaro Video (OpenCV)", result["baseline_clips_per_s"]),
    ]
    versions = result["versions"]
    lines = [
        f"decoder {result['decoder']}  gop {result['gop']}  {result['num_videos']} videos x 150-200 frames 320x240 XviD AVI "
        f"(mean {result['mean_file_kib']:.0f} KiB, {result['bitrate_kbps'] or 'constant-quality'} kbit/s)  "
        f"{result['num_clips']} clips in batches of {result['batch_size']} x {result['repeats']} repeats (median)",
        f"cpus {result['num_cpus']}  torch threads {result['torch_threads']}  torch {versions['torch']}  "
        f"torchcodec {versions['torchcodec']}  opencv {versions['opencv']}",
        f"sanity: baseline clips equal (a)'s (frame codes match; max mean |diff| {result['sanity_max_mean_abs_diff']})",
        "",
        f"{'configuration':<40}{'clips/s':>10}{'ms/clip':>10}",
    ]
    lines += [f"{name:<40}{rate:>10.1f}{1000 / rate:>10.1f}" for name, rate in rows]
    lines += [
        "",
        f"s3_vs_local       {result['s3_vs_local']:.3f}  (target >= {TARGETS['s3_vs_local']})",
        f"local_vs_baseline {result['local_vs_baseline']:.3f}  (target >= {TARGETS['local_vs_baseline']})",
        f"targets met: {'yes' if result['targets_met'] else 'no'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    result = run(_parse_args(argv))
    print(_table(result))
    print(json.dumps(result, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
