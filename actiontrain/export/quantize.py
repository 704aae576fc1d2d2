"""INT8 post-training quantization of an OpenVINO model with NNCF."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import sys
from collections.abc import Iterable, Iterator

import numpy as np
import openvino as ov

from actiontrain.export.convert import set_model_info

__all__ = ["nncf_version", "quantize_model"]

logger = logging.getLogger(__name__)


def quantize_model(
    model: ov.Model, calibration: Iterable[np.ndarray], *, count: int, info: dict[str, str]
) -> ov.Model:
    """NNCF post-training INT8 quantization (default preset) of an OpenVINO model.

    Args:
        model: The FP32 model.
        calibration: Model inputs (``(1, 1, 3, T, H, W)`` arrays); NNCF iterates it once per
            statistics pass, so it must be iterable more than once.
        count: How many of them to use.
        info: The ``rt_info/model_info`` the INT8 model must carry (Model API metadata, see
            :func:`~actiontrain.export.convert.model_info`); NNCF does not keep the source's.

    Returns:
        The INT8 model.
    """
    # Start-up: NNCF takes seconds to import, and only `optimize` quantizes.
    import nncf  # noqa: PLC0415

    with _quiet_nncf():
        quantized = nncf.quantize(model, nncf.Dataset(calibration), subset_size=count)
    # Model API reads its parameters from rt_info: make sure they survive quantization.
    set_model_info(quantized, info)
    return quantized


def nncf_version() -> str:
    """The NNCF version quantizing models here (recorded in an INT8 export's manifest)."""
    return importlib.metadata.version("nncf")


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF's INFO lines at WARNING; its progress bars (rich, on stdout) on stderr for a person at a
    terminal, else nowhere: stdout belongs to the command's result."""
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(max(level, logging.WARNING))
    target = sys.stderr if sys.stderr.isatty() else io.StringIO()
    try:
        with contextlib.redirect_stdout(target):
            yield
    finally:
        nncf_logger.setLevel(level)
