"""Learnability: the small recipe learns classes that differ only in motion, and a flip that does not
swap mirror-image labels makes "left" and "right" impossible to tell apart.

Both runs train the same budget on the same synthetic Jester-layout data (Swiping Left, Right, Up,
Down: one frame cannot tell them apart, and each is the time reversal of another, so the model must
learn the direction of motion). A few CPU minutes each; marked e2e, they run in CI.
"""

from __future__ import annotations

import pytest
import torch

from actiontrain.data.synth import synthesize
from actiontrain.distributed import destroy_distributed
from actiontrain.recipe import load_config
from actiontrain.tasks.train import Trainer

# cpu_smoke with 8 frames at interval 2 (the motion spans the clip) and no dropout; evaluation once
# at the end. The schedule is the recipe's: warm-up, then x0.1 for the last epochs.
BUDGET = [
    "data.clip_len=8",
    "data.frame_interval=2",
    "model.dropout=0",
    "optim.lr=0.001",
    "optim.lr_step_every=32",
    "train.batch_size=8",
    "train.epochs=40",
    "train.eval_every=40",
    "train.checkpoint_every=0",
    "train.log_every=100",
]
LEFT, RIGHT, UP, DOWN = range(4)


@pytest.fixture(scope="module")
def swipes(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("learnability") / "jester")
    summary = synthesize(root, format="jester", num_classes=4, videos_per_class=40, num_frames=(16, 24))
    assert summary.classes == ["Swiping Left", "Swiping Right", "Swiping Up", "Swiping Down"]
    return root


def _train(data: str, output: str, *overrides: str) -> torch.Tensor:
    """Trains the budget; returns the validation confusion matrix (rows true, columns predicted)."""
    config = load_config("cpu_smoke", [*BUDGET, *overrides])
    # One compute thread: the same arithmetic on every run of this machine type, so the outcome
    # does not depend on how busy the machine is (the data loader works in its own process).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = Trainer(config, data_url=data, output_url=output).train()
    finally:
        torch.set_num_threads(threads)
        destroy_distributed()
    assert result.final_eval is not None
    return torch.tensor(result.final_eval["confusion"])


def _accuracy(confusion: torch.Tensor, classes: list[int]) -> float:
    rows = confusion[classes]
    return float(rows[:, classes].diagonal().sum() / rows.sum())


@pytest.mark.e2e
@pytest.mark.timeout(2400)
def test_small_recipe_learns_the_direction_of_motion(swipes, tmp_path):
    confusion = _train(swipes, str(tmp_path / "run"))
    top1 = float(confusion.diagonal().sum() / confusion.sum())
    assert top1 >= 0.9, f"validation top-1 {top1:.1%}; confusion {confusion.tolist()}"


@pytest.mark.e2e
@pytest.mark.timeout(2400)
def test_flip_without_label_swap_leaves_left_and_right_at_chance(swipes, tmp_path):
    confusion = _train(swipes, str(tmp_path / "run"), "data.label_aware_flip=false")
    # A flipped "left" clip is trained as "left": half of each class's examples show the other
    # direction, so nothing tells the two apart. Up and down (which a flip keeps) are still learned.
    left_right = _accuracy(confusion, [LEFT, RIGHT])
    up_down = _accuracy(confusion, [UP, DOWN])
    assert left_right <= 0.7, f"left/right {left_right:.1%}; confusion {confusion.tolist()}"
    assert up_down >= 0.85, f"up/down {up_down:.1%}; confusion {confusion.tolist()}"
