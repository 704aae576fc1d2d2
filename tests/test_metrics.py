"""Metrics: top-k counts, the metrics.jsonl writer across restarts and stores, the training plot."""

from __future__ import annotations

import io
import json
import logging
import math
import uuid
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from actiontrain import metrics, storage
from actiontrain.errors import StorageError
from actiontrain.metrics import METRICS_FILENAME, MetricsWriter, plot_training, to_jsonable

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_records(output: str) -> list[dict]:
    return [json.loads(line) for line in storage.read_text(storage.join(output, METRICS_FILENAME)).splitlines()]


@pytest.fixture(params=["local", "memory"])
def output_url(request, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "run")
    return f"memory://metrics-test-{uuid.uuid4().hex}/run"


# -- to_jsonable ---------------------------------------------------------------------------------


def test_to_jsonable_converts_tensors_numpy_paths_and_non_finite_floats():
    value = {
        "loss": torch.tensor(0.5),
        "counts": torch.tensor([1, 2]),
        "acc": np.float32(0.25),
        "steps": np.int64(3),
        "flag": np.bool_(True),
        "path": Path("/x/y"),
        "nan": float("nan"),
        "nested": [(1, torch.tensor(2.0))],
        7: "int key",
    }
    assert to_jsonable(value) == {
        "loss": 0.5,
        "counts": [1, 2],
        "acc": 0.25,
        "steps": 3,
        "flag": True,
        "path": "/x/y",
        "nan": None,
        "nested": [[1, 2.0]],
        "7": "int key",
    }


def test_to_jsonable_refuses_objects_without_a_json_form():
    with pytest.raises(TypeError, match="object"):
        to_jsonable({"model": object()})


# -- MetricsWriter -------------------------------------------------------------------------------


def test_writer_flushes_on_close_not_on_every_log(output_url: str):
    writer = MetricsWriter(output_url, flush_every_s=3600)
    record = {"kind": "train", "step": 1, "loss": torch.tensor(2.5), "throughput(clips/s)": np.float64(12.5)}
    writer.log(record)
    assert not storage.exists(storage.join(output_url, METRICS_FILENAME))
    writer.close()
    [written] = read_records(output_url)
    assert written["loss"] == 2.5 and written["throughput(clips/s)"] == 12.5 and written["step"] == 1
    assert isinstance(written["time"], float)
    assert "time" not in record and isinstance(record["loss"], torch.Tensor)  # the caller's dict is untouched
    with pytest.raises(RuntimeError, match="closed"):
        writer.log({"step": 2})
    writer.close()  # closing twice is fine


class FakeClock:
    """Stands in for the time module in actiontrain.metrics: time moves only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1.7e9 + self.now


def test_writer_rewrites_the_file_once_the_interval_has_passed(output_url: str, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(metrics, "time", clock)
    writer = MetricsWriter(output_url, flush_every_s=10)
    writer.log({"step": 1, "loss": 1.0, "time": 123.0})
    assert not storage.exists(storage.join(output_url, METRICS_FILENAME))  # 0 s after opening
    clock.now += 10
    writer.log({"step": 2, "loss": float("inf")})
    assert read_records(output_url) == [
        {"step": 1, "loss": 1.0, "time": 123.0},
        {"step": 2, "loss": None, "time": 1.7e9 + 1010},  # inf written as null, the time added
    ]
    clock.now += 9.5
    writer.log({"step": 3, "loss": 0.5})
    assert [record["step"] for record in read_records(output_url)] == [1, 2]  # 9.5 s after the last write
    writer.close()
    assert [record["step"] for record in read_records(output_url)] == [1, 2, 3]


def test_writer_keeps_earlier_records_after_a_restart(output_url: str):
    with MetricsWriter(output_url) as first:
        for step in (10, 20, 30):
            first.log({"kind": "train", "step": step, "loss": 1.0 / step})
    # The restarted run resumes from the checkpoint of step 20: step 30 will be logged again.
    with MetricsWriter(output_url, drop_after_step=20) as second:
        assert [record["step"] for record in second.records] == [10, 20]
        second.log({"kind": "train", "step": 30, "loss": 0.02})
        second.log({"kind": "eval", "epoch": 1, "top1": 0.5, "top5": 0.9})
    records = read_records(output_url)
    assert [(record.get("step"), record["kind"]) for record in records] == [
        (10, "train"),
        (20, "train"),
        (30, "train"),
        (None, "eval"),
    ]
    assert records[2]["loss"] == 0.02
    # A third start without dropping keeps everything.
    assert len(MetricsWriter(output_url).records) == 4


def test_writer_skips_unreadable_lines_of_an_earlier_file(tmp_path: Path, caplog):
    (tmp_path / METRICS_FILENAME).write_text('{"step": 1}\n{"step": 2, "lo\n\n[1, 2]\n{"step": 3}\n')
    with caplog.at_level(logging.WARNING, logger="actiontrain.metrics"):
        writer = MetricsWriter(str(tmp_path))
    assert [record["step"] for record in writer.records] == [1, 3]
    assert "line 2" in caplog.text and "line 4" in caplog.text


def test_disabled_writer_writes_nothing(tmp_path: Path):
    (tmp_path / METRICS_FILENAME).write_text('{"step": 1}\n')
    writer = MetricsWriter(str(tmp_path), enabled=False, flush_every_s=0)
    writer.log({"step": 2})
    writer.close()
    assert writer.records == []
    assert (tmp_path / METRICS_FILENAME).read_text() == '{"step": 1}\n'


def test_periodic_write_failure_is_logged_and_retried(tmp_path: Path, monkeypatch, caplog):
    writer = MetricsWriter(str(tmp_path), flush_every_s=0)
    real_write = storage.write_bytes

    def failing(url: str, data: bytes) -> None:
        raise StorageError(f"cannot reach the S3 endpoint for {url}")

    monkeypatch.setattr(metrics.storage, "write_bytes", failing)
    with caplog.at_level(logging.WARNING, logger="actiontrain.metrics"):
        writer.log({"step": 1})  # does not raise: training goes on
    assert "retrying" in caplog.text
    with pytest.raises(StorageError):
        writer.close()
    monkeypatch.setattr(metrics.storage, "write_bytes", real_write)
    writer.close()
    assert [record["step"] for record in read_records(str(tmp_path))] == [1]


# -- plot_training -------------------------------------------------------------------------------


def training_records(num_steps: int = 200, num_epochs: int = 5) -> list[dict]:
    records = []
    for step in range(1, num_steps + 1):
        records.append(
            {
                "kind": "train",
                "step": step,
                "loss": 2.5 * math.exp(-step / 80) + 0.1 * math.sin(step),
                "lr": 0.1 * min(1.0, step / 20) * 0.5 * (1 + math.cos(math.pi * step / num_steps)),
            }
        )
    for epoch in range(1, num_epochs + 1):
        records.append(
            {
                "kind": "eval",
                "epoch": epoch,
                "step": epoch * num_steps // num_epochs,
                "top1": 0.2 + 0.1 * epoch,
                "top5": min(1.0, 0.5 + 0.09 * epoch),
                "loss": 2.0 - 0.3 * epoch,
            }
        )
    records.append({"kind": "train", "step": 200, "loss": None, "lr": 0.0})  # NaN written as null
    return records


def confusion_matrix(num_classes: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    confusion = torch.randint(0, 3, (num_classes, num_classes), generator=generator)
    confusion += torch.diag(torch.randint(5, 20, (num_classes,), generator=generator))
    confusion[-1] = 0  # a class without validation videos
    return confusion


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The matplotlib Figures that plot_training saves, in order: what the PNG shows, as objects."""
    from matplotlib.figure import Figure

    figures = []
    savefig = Figure.savefig

    def recording(self, *args, **kwargs):
        figures.append(self)
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    return figures


def panels(figure) -> dict[str, object]:
    """The figure's plots by the first word of their title (the colorbar has none)."""
    return {axes.get_title().split(" ")[0]: axes for axes in figure.axes if axes.get_title()}


def check_png(data: bytes, figure) -> None:
    """``data`` is a PNG of ``figure`` at the 100 dpi plot_training saves with."""
    assert data.startswith(PNG_SIGNATURE)
    image = matplotlib.image.imread(io.BytesIO(data), format="png")
    width, height = figure.get_size_inches() * 100
    assert image.shape[:2] == (round(height), round(width))


def test_plot_training_draws_the_confusion_matrix_with_class_labels_and_cell_values(tmp_path: Path, drawn):
    classes = ["walking", "running", "jumping", "a very long class name that gets truncated", "sitting"]
    confusion = confusion_matrix(5)
    url = str(tmp_path / "plots" / "training.png")
    plot_training(training_records(), confusion, classes, url)
    (figure,) = drawn
    check_png(Path(url).read_bytes(), figure)
    assert [path.name for path in tmp_path.joinpath("plots").iterdir()] == ["training.png"]  # no temporary left
    plots = panels(figure)
    assert set(plots) == {"loss", "learning", "validation", "confusion"}
    matrix = plots["confusion"]
    assert matrix.get_position().x0 > plots["loss"].get_position().x1  # curves on the left, the matrix on the right
    names = ["walking", "running", "jumping", "a very long class name …", "sitting"]
    assert [label.get_text() for label in matrix.get_xticklabels()] == names
    assert [label.get_text() for label in matrix.get_yticklabels()] == names
    assert (matrix.get_xlabel(), matrix.get_ylabel()) == ("predicted", "true")
    # Each cell the fraction of its true class (row); the last class has no videos: a row of zeros.
    counts = confusion.to(torch.float64)
    fractions = (counts / counts.sum(dim=1, keepdim=True).clamp(min=1)).numpy()
    (image,) = matrix.images
    np.testing.assert_allclose(image.get_array(), fractions)
    cells = {tuple(round(x) for x in text.get_position()): text.get_text() for text in matrix.texts}
    expected = {(column, row): f"{value:.2f}" for (row, column), value in np.ndenumerate(fractions) if value > 0}
    assert cells == expected
    mean_class_accuracy = fractions.diagonal()[:4].mean()
    assert matrix.get_title().endswith(f"mean class accuracy {100 * mean_class_accuracy:.1f}%")


@pytest.mark.parametrize(("num_classes", "labelled"), [(50, True), (101, False)])
def test_plot_training_labels_up_to_50_classes_and_no_cells_beyond_12(tmp_path: Path, drawn, num_classes, labelled):
    url = str(tmp_path / "training.png")
    classes = [f"class_{i}" for i in range(num_classes)]
    plot_training(training_records(), confusion_matrix(num_classes), classes, url)
    (figure,) = drawn
    check_png(Path(url).read_bytes(), figure)
    matrix = panels(figure)["confusion"]
    assert matrix.images[0].get_array().shape == (num_classes, num_classes)
    assert [label.get_text() for label in matrix.get_xticklabels()] == (classes if labelled else [])
    assert [label.get_text() for label in matrix.get_yticklabels()] == (classes if labelled else [])
    assert list(matrix.texts) == []  # too many cells to write a number in each


def test_plot_training_without_records_draws_three_empty_panels_into_a_memory_store(drawn):
    url = f"memory://plots-{uuid.uuid4().hex}/training.png"
    plot_training([], None, [], url)
    (figure,) = drawn
    check_png(storage.read_bytes(url), figure)
    plots = panels(figure)
    assert set(plots) == {"loss", "learning", "validation"}  # no confusion matrix
    for axes in plots.values():
        assert [text.get_text() for text in axes.texts] == ["no data yet"] and not axes.lines


def test_plot_training_refuses_class_names_that_do_not_match():
    with pytest.raises(ValueError, match="3 class names"):
        plot_training([], torch.zeros(4, 4, dtype=torch.long), ["a", "b", "c"], "memory://never/written.png")
