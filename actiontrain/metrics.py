"""Training metrics: top-k counts, the ``metrics.jsonl`` record file and the summary plot."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Any, Self

import torch

from actiontrain import storage
from actiontrain.errors import NotFoundError, StorageError

__all__ = ["METRICS_FILENAME", "MetricsWriter", "StartupClock", "plot_training", "process_start_time", "to_jsonable"]

logger = logging.getLogger(__name__)

METRICS_FILENAME = "metrics.jsonl"

# Beyond this many classes tick labels overlap whatever the font size: the matrix goes unlabelled.
_MAX_LABELLED_CLASSES = 50
# Cells get their value written in them while the text still fits.
_MAX_ANNOTATED_CLASSES = 12


def to_jsonable(value: Any) -> Any:
    """``value`` with tensors, NumPy values and paths turned into plain JSON types.

    Non-finite floats become ``None`` so that the file stays strict JSON (``jq``, browsers and
    pandas all reject ``NaN``).

    Raises:
        TypeError: a value has no JSON form.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, PurePath):
        return str(value)
    # NumPy scalars and arrays, without importing NumPy: both have tolist().
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return to_jsonable(value.tolist())
    raise TypeError(f"{type(value).__name__} value {value!r} cannot be written as JSON")


def process_start_time() -> float:
    """When this process was started (``time.time()`` scale): from ``/proc`` on Linux.

    Its age is the system's uptime now minus its start in ticks since boot (both on the boot-time
    clock, to 10 ms); where ``/proc`` is not there, the first call's time stands in (it then misses
    the interpreter's own start-up).
    """
    global _PROCESS_STARTED
    if _PROCESS_STARTED is None:
        try:
            with open("/proc/self/stat", encoding="ascii") as file:
                # Field 22, counted after the command name's closing parenthesis (names may hold spaces).
                ticks = int(file.read().rsplit(")", 1)[1].split()[19])
            with open("/proc/uptime", encoding="ascii") as file:
                uptime = float(file.read().split()[0])
            _PROCESS_STARTED = time.time() - max(uptime - ticks / os.sysconf("SC_CLK_TCK"), 0.0)
        except (OSError, ValueError, IndexError):
            _PROCESS_STARTED = time.time()
    return _PROCESS_STARTED


_PROCESS_STARTED: float | None = None


class StartupClock:
    """Seconds a (re)started process spends in each phase before its first training step.

    Each :meth:`lap` closes the phase that began at the previous lap (or at the process start):
    the phases add up to the time from the process start to the last lap. A restart's recovery
    time is made of these, so the trainer logs them once, after its first step.
    """

    def __init__(self) -> None:
        self.started = process_start_time()
        self._last = self.started
        self.phases: dict[str, float] = {}
        """Phase name -> seconds, in order."""

    def lap(self, phase: str) -> None:
        """Ends ``phase`` now (adding to it when it was lapped before)."""
        now = time.time()
        self.phases[phase] = self.phases.get(phase, 0.0) + max(now - self._last, 0.0)
        self._last = now

    @property
    def total(self) -> float:
        """Seconds from the process start to the last lap."""
        return self._last - self.started

    def describe(self) -> str:
        """``23.1 s: imports 8.2 s, dataset 2.1 s, ...``"""
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.phases.items())
        return f"{self.total:.1f} s: {parts}"


class MetricsWriter:
    """Appends one JSON record per :meth:`log` call to ``OUTPUT/metrics.jsonl``.

    Object stores cannot append, so the records stay in memory and the whole file is rewritten
    atomically, at most every ``flush_every_s`` seconds and on :meth:`close`. A new writer first
    reads the records an earlier run left, so the file accumulates across restarts. Only one
    process may write: pass ``enabled=False`` on every rank but 0, which makes :meth:`log` a no-op.

    A failed periodic write is logged and retried at the next flush, so a storage hiccup does not
    stop training; :meth:`close` raises it.
    """

    def __init__(
        self,
        output_url: str,
        *,
        enabled: bool = True,
        flush_every_s: float = 10.0,
        drop_after_step: int | None = None,
    ) -> None:
        """Opens the metrics file of ``output_url``, keeping the records already in it.

        Args:
            output_url: The run's output folder (any URL :mod:`actiontrain.storage` accepts).
            enabled: False on every rank but 0: nothing is read or written.
            flush_every_s: Least seconds between two rewrites of the file by :meth:`log`.
            drop_after_step: When resuming from the checkpoint of this step, the earlier run's
                records with a larger ``step``, which the resumed run will log again, are dropped.

        Raises:
            StorageError: the existing file cannot be read.
        """
        if flush_every_s < 0:
            raise ValueError(f"flush_every_s must be >= 0, got {flush_every_s}")
        self.url = storage.join(output_url, METRICS_FILENAME)
        self.enabled = enabled
        self.flush_every_s = flush_every_s
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        self._lines: list[str] = []
        self._dirty = False
        self._closed = False
        self._last_flush = time.monotonic()
        if enabled:
            self._load(drop_after_step)

    def _load(self, drop_after_step: int | None) -> None:
        try:
            text = storage.read_text(self.url)
        except NotFoundError:
            return
        dropped = 0
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("ignoring unreadable line %d of %s", number, self.url)
                continue
            if not isinstance(record, dict):
                logger.warning("ignoring line %d of %s: not a JSON object", number, self.url)
                continue
            step = record.get("step")
            if drop_after_step is not None and isinstance(step, (int, float)) and step > drop_after_step:
                dropped += 1
                continue
            self._records.append(record)
            self._lines.append(line)
        # Dropping records changes the file even if nothing new is logged.
        self._dirty = dropped > 0
        if self._records:
            logger.info("continuing %s: %d earlier records kept, %d dropped", self.url, len(self._records), dropped)

    @property
    def records(self) -> list[dict[str, Any]]:
        """A copy of every record, earlier runs' first (empty when disabled)."""
        with self._lock:
            return [dict(record) for record in self._records]

    def log(self, record: Mapping[str, Any]) -> None:
        """Adds one record; rewrites the file if the last write is ``flush_every_s`` old.

        The record is copied (the caller's dict is not changed), made JSON-serialisable with
        :func:`to_jsonable` and given a ``time`` field (Unix seconds) when it has none.

        Raises:
            TypeError: a value has no JSON form.
            RuntimeError: the writer is closed.
        """
        if not self.enabled:
            return
        if self._closed:
            raise RuntimeError(f"MetricsWriter for {self.url} is closed")
        entry = to_jsonable(dict(record))
        entry.setdefault("time", time.time())
        line = json.dumps(entry, allow_nan=False, separators=(",", ":"))
        with self._lock:
            self._records.append(entry)
            self._lines.append(line)
            self._dirty = True
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            try:
                self.flush()
            except StorageError as error:
                logger.warning("could not write %s (retrying at the next flush): %s", self.url, error)

    def flush(self) -> None:
        """Rewrites the file now if there is anything new.

        Raises:
            StorageError: the file cannot be written.
        """
        if not self.enabled:
            return
        with self._lock:
            self._last_flush = time.monotonic()
            if not self._dirty:
                return
            data = "".join(line + "\n" for line in self._lines).encode()
            self._dirty = False
        try:
            storage.write_bytes(self.url, data)
        except BaseException:
            with self._lock:
                self._dirty = True
            raise

    def close(self) -> None:
        """Writes what is left; later :meth:`log` calls raise. Closing twice is fine.

        Raises:
            StorageError: the file cannot be written.
        """
        if self._closed:
            return
        self.flush()
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _by_x(records: Iterable[Mapping[str, Any]], x_key: str, y_key: str) -> tuple[list[float], list[float]]:
    # A restarted run logs some steps again: the last value of each x wins, in x order.
    points: dict[float, float] = {}
    for record in records:
        x, y = record.get(x_key), record.get(y_key)
        numbers = isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(y, bool)
        if numbers and math.isfinite(y):
            points[x] = float(y)
    xs = sorted(points)
    return xs, [points[x] for x in xs]


def _moving_average(values: list[float], window: int) -> list[float]:
    result, total = [], 0.0
    for position, value in enumerate(values):
        total += value
        if position >= window:
            total -= values[position - window]
        result.append(total / min(position + 1, window))
    return result


def _no_data(axes: Any, title: str) -> None:
    axes.set_title(title)
    axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes, color="gray")
    axes.set_xticks([])
    axes.set_yticks([])


def _plot_loss(axes: Any, train: list[Mapping[str, Any]], evals: list[Mapping[str, Any]]) -> None:
    steps, losses = _by_x(train, "step", "loss")
    if not steps:
        _no_data(axes, "loss")
        return
    if len(losses) >= 20:
        axes.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="train")
        window = max(5, len(losses) // 20)
        axes.plot(steps, _moving_average(losses, window), color="tab:blue", label=f"train (mean of {window})")
    else:
        axes.plot(steps, losses, color="tab:blue", marker="o", markersize=3, label="train")
    val_steps, val_losses = _by_x(evals, "step", "loss")
    if val_steps:
        axes.plot(val_steps, val_losses, color="tab:orange", marker="o", markersize=4, label="validation")
    axes.set_title("loss")
    axes.set_xlabel("step")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")


def _plot_lr(axes: Any, train: list[Mapping[str, Any]]) -> None:
    steps, rates = _by_x(train, "step", "lr")
    if not steps:
        _no_data(axes, "learning rate")
        return
    axes.plot(steps, rates, color="tab:green")
    axes.set_title("learning rate")
    axes.set_xlabel("step")
    axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    axes.grid(alpha=0.3)


def _plot_accuracy(axes: Any, evals: list[Mapping[str, Any]], epoch_locator: Any) -> None:
    epochs, top1 = _by_x(evals, "epoch", "top1")
    top5_epochs, top5 = _by_x(evals, "epoch", "top5")
    if not epochs and not top5_epochs:
        _no_data(axes, "validation accuracy")
        return
    axes.plot(epochs, [100 * value for value in top1], marker="o", label="top-1")
    axes.plot(top5_epochs, [100 * value for value in top5], marker="s", label="top-5")
    if top1:
        axes.annotate(
            f"{100 * top1[-1]:.1f}%",
            (epochs[-1], 100 * top1[-1]),
            textcoords="offset points",
            xytext=(0, -12),
            ha="center",
            fontsize="small",
        )
    axes.set_title("validation accuracy")
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(epoch_locator)
    axes.set_ylabel("%")
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="lower right")


def _plot_confusion(figure: Any, axes: Any, confusion: torch.Tensor, classes: Sequence[str]) -> None:
    counts = confusion.detach().cpu().to(torch.float64)
    totals = counts.sum(dim=1, keepdim=True)
    normalised = torch.where(totals > 0, counts / totals.clamp(min=1), torch.zeros_like(counts))
    num_classes = counts.shape[0]
    image = axes.imshow(normalised.numpy(), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of true class")
    seen = totals.squeeze(1) > 0
    diagonal = normalised.diagonal()
    mean_accuracy = float(diagonal[seen].mean()) if bool(seen.any()) else float("nan")
    axes.set_title(f"confusion (rows normalised), mean class accuracy {100 * mean_accuracy:.1f}%")
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if num_classes <= _MAX_LABELLED_CLASSES:
        names = [name if len(name) <= 24 else name[:23] + "…" for name in classes]
        # About 40% of a cell's height, in points, between 5 and 9 points.
        cell_points = 72 * axes.figure.get_figheight() * 0.8 / num_classes
        size = min(9.0, max(5.0, 0.4 * cell_points))
        axes.set_xticks(range(num_classes), names, rotation=90, fontsize=size)
        axes.set_yticks(range(num_classes), names, fontsize=size)
    else:
        axes.set_xticks([])
        axes.set_yticks([])
    if num_classes <= _MAX_ANNOTATED_CLASSES:
        for row in range(num_classes):
            for column in range(num_classes):
                value = float(normalised[row, column])
                if value > 0:
                    axes.text(
                        column,
                        row,
                        f"{value:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if value > 0.5 else "black",
                    )


def plot_training(
    records: Sequence[Mapping[str, Any]],
    confusion: torch.Tensor | None,
    classes: Sequence[str],
    url: str,
) -> None:
    """Draws the run's loss, learning rate, validation accuracy and confusion matrix in one PNG.

    Training records are those with a ``step`` and a ``loss`` (``lr`` too for the learning-rate
    curve); evaluation records have ``kind: "eval"``, an ``epoch``, ``top1`` and ``top5`` as
    fractions (and, with a ``step``, their ``loss`` joins the loss curve). Steps or epochs logged
    twice (a restarted run) keep their last value.

    Args:
        records: The records of :class:`MetricsWriter`, in any order.
        confusion: ``(K, K)`` counts, rows the true class, columns the prediction; None leaves
            the panel out.
        classes: The ``K`` class names; tick labels are drawn up to 50 classes.
        url: Where the PNG goes, written atomically.

    Raises:
        ValueError: ``confusion`` is not square or does not match ``classes``.
        StorageError: the file cannot be written.
    """
    # Start-up: importing matplotlib builds its font cache on a fresh machine (seconds), and only
    # rank 0 plots, once. Figure without pyplot: no global state, no GUI backend.
    from matplotlib import figure as mpl_figure, ticker  # noqa: PLC0415

    if confusion is not None:
        if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
            raise ValueError(f"confusion must be a square (K, K) matrix, got shape {tuple(confusion.shape)}")
        if len(classes) != confusion.shape[0]:
            raise ValueError(f"{len(classes)} class names given for a {confusion.shape[0]}-class confusion matrix")
    evals = [record for record in records if record.get("kind") == "eval"]
    train = [record for record in records if record.get("kind") != "eval"]

    if confusion is None:
        figure = mpl_figure.Figure(figsize=(7, 10), layout="constrained")
        grid = figure.add_gridspec(3, 1)
    else:
        side = min(max(7.0, 0.2 * confusion.shape[0] + 3.0), 16.0)
        figure = mpl_figure.Figure(figsize=(6 + side + 1.5, max(10.0, side)), layout="constrained")
        grid = figure.add_gridspec(3, 2, width_ratios=(6, side + 1.5))
    _plot_loss(figure.add_subplot(grid[0, 0]), train, evals)
    _plot_lr(figure.add_subplot(grid[1, 0]), train)
    _plot_accuracy(figure.add_subplot(grid[2, 0]), evals, ticker.MaxNLocator(integer=True))
    if confusion is not None:
        _plot_confusion(figure, figure.add_subplot(grid[:, 1]), confusion, classes)
    with storage.atomic_write(url) as temporary:
        # The temporary name ends in .partial: say the format, matplotlib cannot guess it.
        figure.savefig(temporary, format="png", dpi=100)
