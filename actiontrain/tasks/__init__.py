"""Run-level tasks: what a command does from start to end, composed of the components below.

``data``, ``train``, ``launch`` (torchrun), ``evaluate``, ``export`` (and ``pull``), ``optimize``,
``predict`` and ``demo``. The command line calls these and nothing else; no component imports a task. Submodules load on first use
(``tasks.train``), so ``actiontrain --help`` does not import torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["data", "demo", "evaluate", "export", "launch", "optimize", "predict", "train"]


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
