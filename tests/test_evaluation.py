"""Video-level evaluation: exact metrics, softmax averaging over views, unlabelled videos, ranks."""

from __future__ import annotations

import datetime
import json
import math
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from actiontrain.data.loader import ClipLoader
from actiontrain.errors import ConfigError
from actiontrain.evaluation import EvalResult, evaluate

NUM_CLASSES = 6


class ChannelLogits(nn.Module):
    """Logits = each channel's mean over (T, H, W): a clip filled with a vector predicts that vector.

    Carries a frozen BatchNorm (kept in eval mode on purpose) and records, for each forward, whether
    the model was training and whether inference mode was on.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.identity = nn.Linear(num_classes, num_classes, bias=False)
        with torch.no_grad():
            self.identity.weight.copy_(torch.eye(num_classes))
        self.frozen = nn.BatchNorm1d(num_classes)
        self.calls: list[tuple[bool, bool, int]] = []

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_inference_mode_enabled(), clips.shape[0]))
        return self.identity(clips.mean(dim=(2, 3, 4)))


def views(*logits: list[float]) -> torch.Tensor:
    """A video whose view ``v`` makes the model output ``logits[v]``: ``(V, K, T, H, W)``."""
    return torch.tensor(logits, dtype=torch.float32)[:, :, None, None, None].expand(-1, -1, 2, 3, 3).contiguous()


def one_hot_logits(target: int, *, second: int | None = None, num_classes: int = NUM_CLASSES) -> list[float]:
    logits = [0.0] * num_classes
    logits[target] = 5.0
    if second is not None:
        logits[second] = 4.0
    return logits


def batches(videos: list[torch.Tensor], labels: list[int], *, batch_size: int, first_index: int = 0) -> list[dict]:
    """ClipLoader-style eval batches."""
    result = []
    for start in range(0, len(videos), batch_size):
        stop = min(start + batch_size, len(videos))
        result.append(
            {
                "video": torch.stack(videos[start:stop]),
                "label": torch.tensor(labels[start:stop]),
                "index": torch.arange(first_index + start, first_index + stop),
                "errors": [],
            }
        )
    return result


def ranked_logits(order: list[int]) -> list[float]:
    """Logits whose classes rank in ``order`` (first = most probable)."""
    logits = [0.0] * NUM_CLASSES
    for position, cls in enumerate(order):
        logits[cls] = float(len(order) - position)
    return logits


def test_exact_top1_top5_loss_and_confusion_on_a_hand_made_case():
    # Video i's label sits at rank ranks[i] (0 = top-1) of its single view.
    cases = [  # (label, class order)
        (0, [0, 1, 2, 3, 4, 5]),  # top-1 hit
        (1, [1, 0, 2, 3, 4, 5]),  # top-1 hit
        (2, [0, 2, 1, 3, 4, 5]),  # rank 2: top-5 hit, predicted 0
        (3, [1, 2, 0, 4, 3, 5]),  # rank 5: top-5 hit, predicted 1
        (4, [0, 1, 2, 3, 5, 4]),  # rank 6: miss, predicted 0
    ]
    videos = [views(ranked_logits(order)) for _, order in cases]
    labels = [label for label, _ in cases]
    result = evaluate(ChannelLogits(), batches(videos, labels, batch_size=2), num_classes=NUM_CLASSES, device="cpu")

    assert result.top1 == pytest.approx(2 / 5)
    assert result.top5 == pytest.approx(4 / 5)
    assert result.num_videos == 5 and result.num_unlabeled == 0 and result.num_skipped == 0
    assert result.predictions == {0: 0, 1: 1, 2: 0, 3: 1, 4: 0}
    expected = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    for (label, _), predicted in zip(cases, [0, 1, 0, 1, 0]):
        expected[label, predicted] += 1
    assert torch.equal(result.confusion, expected)
    # Classes 0 and 1 are always right, 2, 3 and 4 never: 2 of the 5 classes with videos.
    assert result.mean_class_accuracy == pytest.approx(2 / 5)
    probabilities = [torch.tensor(ranked_logits(order)).softmax(0)[label] for label, order in cases]
    assert result.loss == pytest.approx(float(-torch.stack(probabilities).log().mean()), rel=1e-6)


def test_top5_is_clipped_to_the_number_of_classes():
    videos = [views([0.0, 1.0, 2.0]), views([2.0, 1.0, 0.0])]
    result = evaluate(ChannelLogits(3), batches(videos, [0, 1], batch_size=2), num_classes=3, device="cpu")
    assert result.top1 == 0.0
    assert result.top5 == 1.0


def test_views_are_combined_by_mean_softmax_probability():
    # Video 0: one confident view for class 1 against two that mildly prefer class 0. Averaged
    # logits would pick class 1 (100 vs 10/3); averaged probabilities pick class 0 (0.66 vs 0.34).
    video0 = views([0.0, 100.0, 0.0], [5.0, 0.0, 0.0], [5.0, 0.0, 0.0])
    # Video 1: two views weakly prefer class 1, one is sure of class 0. A majority vote would pick
    # class 1; averaged probabilities pick class 0 (0.55 vs 0.24).
    video1 = views([10.0, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.1, 0.0])
    model = ChannelLogits(3)
    result = evaluate(model, batches([video0, video1], [0, 0], batch_size=2), num_classes=3, device="cpu")

    assert result.predictions == {0: 0, 1: 0}
    assert result.top1 == 1.0
    mean_probs = [v.mean(dim=(2, 3, 4)).softmax(1).mean(0) for v in (video0, video1)]
    assert result.loss == pytest.approx(float(-torch.stack([p[0] for p in mean_probs]).log().mean()), rel=1e-6)
    # All 2 x 3 views of the batch went through the model in one forward pass.
    assert [clips for _, _, clips in model.calls] == [6]


def test_max_clips_per_forward_splits_views_without_changing_the_result():
    videos = [
        views(one_hot_logits(i % NUM_CLASSES), one_hot_logits((i + 1) % NUM_CLASSES, second=i % NUM_CLASSES))
        for i in range(5)
    ]
    labels = [i % NUM_CLASSES for i in range(5)]
    whole = evaluate(ChannelLogits(), batches(videos, labels, batch_size=5), num_classes=NUM_CLASSES, device="cpu")
    model = ChannelLogits()
    split = evaluate(
        model, batches(videos, labels, batch_size=5), num_classes=NUM_CLASSES, device="cpu", max_clips_per_forward=3
    )
    assert [clips for _, _, clips in model.calls] == [3, 3, 3, 1]
    assert split.to_dict() == whole.to_dict()


def test_unlabelled_videos_are_predicted_but_not_scored():
    videos = [views(one_hot_logits(0)), views(one_hot_logits(2)), views(one_hot_logits(1)), views(one_hot_logits(3))]
    labels = [0, -1, 3, -1]
    result = evaluate(ChannelLogits(), batches(videos, labels, batch_size=3), num_classes=NUM_CLASSES, device="cpu")

    assert result.num_videos == 2
    assert result.num_unlabeled == 2
    assert result.top1 == pytest.approx(0.5)
    assert int(result.confusion.sum()) == 2
    assert result.predictions == {0: 0, 1: 2, 2: 1, 3: 3}
    assert math.isfinite(result.loss)


def test_only_unlabelled_videos_give_nan_metrics_written_as_null():
    videos = [views(one_hot_logits(0)), views(one_hot_logits(2))]
    result = evaluate(ChannelLogits(), batches(videos, [-1, -1], batch_size=2), num_classes=NUM_CLASSES, device="cpu")
    assert result.num_videos == 0 and result.num_unlabeled == 2
    assert math.isnan(result.top1) and math.isnan(result.loss) and math.isnan(result.mean_class_accuracy)
    assert result.predictions == {0: 0, 1: 2}


def test_model_modes_are_restored_and_inference_mode_is_used():
    model = ChannelLogits()
    model.train()
    model.frozen.eval()  # a frozen part of a training model stays in eval mode
    evaluate(model, batches([views(one_hot_logits(1))], [1], batch_size=1), num_classes=NUM_CLASSES, device="cpu")
    assert model.calls == [(False, True, 1)]
    assert model.training and model.identity.training
    assert not model.frozen.training

    model.eval()
    evaluate(model, batches([views(one_hot_logits(1))], [1], batch_size=1), num_classes=NUM_CLASSES, device="cpu")
    assert not model.training


def test_model_mode_is_restored_when_the_model_fails():
    model = ChannelLogits(3)  # 3 outputs, but evaluated as if it had NUM_CLASSES
    model.train()
    with pytest.raises(ConfigError, match="outputs shape"):
        evaluate(model, batches([views([1.0, 0.0, 0.0])], [0], batch_size=1), num_classes=NUM_CLASSES, device="cpu")
    assert model.training


def test_label_outside_the_classes_is_refused():
    with pytest.raises(ConfigError, match="label 7 is outside"):
        evaluate(
            ChannelLogits(),
            batches([views(one_hot_logits(1))], [7], batch_size=1),
            num_classes=NUM_CLASSES,
            device="cpu",
        )


def test_duplicate_indices_count_once_and_unreadable_batches_are_skipped():
    video = views(one_hot_logits(2))
    loader = batches([video, views(one_hot_logits(4))], [2, 3], batch_size=2)
    loader.append(
        {"video": None, "label": None, "index": torch.empty(0, dtype=torch.long), "errors": [(9, "bad file")]}
    )
    loader += batches([video], [2], batch_size=1)  # index 0 again, as a padding sampler would send it
    result = evaluate(ChannelLogits(), loader, num_classes=NUM_CLASSES, device="cpu")
    assert result.num_videos == 2
    assert result.num_skipped == 1
    assert result.top1 == pytest.approx(0.5)


def test_to_dict_is_json_serialisable():
    result = evaluate(
        ChannelLogits(), batches([views(one_hot_logits(1))], [1], batch_size=1), num_classes=NUM_CLASSES, device="cpu"
    )
    assert isinstance(result, EvalResult)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["top1"] == 1.0 and data["num_videos"] == 1
    assert data["confusion"][1][1] == 1 and len(data["confusion"]) == NUM_CLASSES
    assert data["predictions"] == {"0": 1}
    assert set(result.summary()) == {
        "top1",
        "top5",
        "loss",
        "mean_class_accuracy",
        "num_videos",
        "num_unlabeled",
        "num_skipped",
    }


def test_world_size_above_one_needs_a_process_group():
    with pytest.raises(ValueError, match="process group"):
        evaluate(ChannelLogits(), [], num_classes=NUM_CLASSES, device="cpu", rank=0, world_size=2)


# -- two ranks over a real ClipLoader -----------------------------------------------------------


class TinyEvalDataset(torch.utils.data.Dataset):
    """Stands in for ClipDataset: items as ClipDataset yields them, ``(V, C, T, H, W)`` views."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.logits = torch.randn(11, 3, NUM_CLASSES, generator=generator) * 3  # 11 videos, 3 views
        self.labels = [i % NUM_CLASSES for i in range(11)]
        self.labels[4] = -1
        self.unreadable = {7}
        self.config = SimpleNamespace(seed=0, max_bad_fraction=0.5, num_workers=0)
        self.samples = [SimpleNamespace(url=f"memory://videos/{i}.mp4") for i in range(11)]

    def set_epoch(self, epoch: int, *, schedule: Any = None) -> None:
        pass

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index in self.unreadable:
            return {"index": index, "error": "cannot decode"}
        return {"video": views(*self.logits[index].tolist()), "label": self.labels[index], "index": index}


def _evaluate_rank(rank: int, world_size: int, port: int, output: str) -> None:
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        loader = ClipLoader(
            TinyEvalDataset(), batch_size=2, rank=rank, world_size=world_size, shuffle=False, num_workers=0
        )
        loader.set_epoch(0)
        seen = sorted(int(i) for batch in loader for i in batch["index"])
        result = evaluate(
            ChannelLogits(), loader, num_classes=NUM_CLASSES, device="cpu", rank=rank, world_size=world_size
        )
        Path(output, f"rank{rank}.json").write_text(json.dumps({"seen": seen, "result": result.to_dict()}))
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.e2e
def test_two_ranks_gather_the_single_process_result(tmp_path: Path):
    single = evaluate(
        ChannelLogits(),
        ClipLoader(TinyEvalDataset(), batch_size=2, shuffle=False, num_workers=0),
        num_classes=NUM_CLASSES,
        device="cpu",
    ).to_dict()
    assert single["num_videos"] == 9 and single["num_unlabeled"] == 1 and single["num_skipped"] == 1

    mp.spawn(_evaluate_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)

    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    # Each rank read a disjoint, uneven share (6 and 5 of the 11 videos, one unreadable)...
    assert set(ranks[0]["seen"]).isdisjoint(ranks[1]["seen"])
    assert len(ranks[0]["seen"]) != len(ranks[1]["seen"])
    # ...and both return the whole result, equal to one process evaluating everything.
    expected = json.loads(json.dumps(single))
    for rank in ranks:
        assert rank["result"].keys() == expected.keys()
        for key, value in expected.items():
            if isinstance(value, float):
                assert rank["result"][key] == pytest.approx(value, rel=1e-9), key
            else:
                assert rank["result"][key] == value, key
