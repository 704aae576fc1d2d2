"""Reading the per-sample ledger (``train.sample_log``, see actiontrain/ledger.py) back: which samples
went into the final model, and how often."""

from __future__ import annotations

import glob
import os
from collections import Counter, defaultdict


def used_samples(ledger: str) -> dict[int, Counter]:
    """Per epoch, how often each sample index went into a step that the final model contains.

    Each process logs ``resume S T INCARNATION`` then ``sample EPOCH STEP INDEX`` per sample.
    Steps after S that earlier incarnations logged were redone from checkpoint S: drop them.
    """
    incarnations: dict[str, dict] = {}
    for path in glob.glob(os.path.join(ledger, "*.log")):
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
        _, step, started, name = lines[0].split()
        entry = incarnations.setdefault(name, {"resume": int(step), "started": float(started), "samples": []})
        entry["started"] = min(entry["started"], float(started))
        for line in lines[1:]:
            parts = line.split()
            if len(parts) == 4 and parts[0] == "sample":  # a line cut by SIGKILL is ignored
                entry["samples"].append(tuple(int(value) for value in parts[1:]))
    history: dict[tuple[int, int], list[int]] = defaultdict(list)
    for entry in sorted(incarnations.values(), key=lambda entry: entry["started"]):
        for key in [key for key in history if key[1] > entry["resume"]]:
            del history[key]
        for epoch, step, index in entry["samples"]:
            history[(epoch, step)].append(index)
    used: dict[int, Counter] = defaultdict(Counter)
    for (epoch, _), indices in history.items():
        used[epoch].update(indices)
    return used


def assert_exactly_once(ledger: str, *, num_samples: int, epochs: int) -> None:
    """Every sample of every epoch went into the final model exactly once."""
    used = used_samples(ledger)
    assert sorted(used) == list(range(epochs))
    for epoch, counts in used.items():
        assert counts == Counter(range(num_samples)), f"epoch {epoch}: {counts}"
