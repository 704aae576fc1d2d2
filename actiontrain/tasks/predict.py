"""``actiontrain predict``: classify videos or frame folders with an OpenVINO export."""

from __future__ import annotations

from collections.abc import Sequence

from actiontrain.config import check_positive
from actiontrain.inference import Prediction, Predictor

__all__ = ["predict"]


def predict(model_url: str, inputs: Sequence[str], *, top_k: int = 5, device: str = "CPU") -> list[Prediction]:
    """Classifies each video file or frame folder with the export at ``model_url``.

    Args:
        model_url: An export folder: local, or any URL (pulled to the cache, checksums verified).
        inputs: Video files or frame folders, local or remote.
        top_k: Classes to report per input.
        device: OpenVINO device.

    Returns:
        One prediction per input, in order.

    Raises:
        NotFoundError: no export at ``model_url``, or an input does not exist.
        DataError: the export is corrupt, or an input cannot be decoded.
        ConfigError: a bad ``top_k`` or device.
    """
    check_positive("top_k", top_k)
    predictor = Predictor.from_url(model_url, device=device)
    return [predictor.predict(url, top_k=top_k) for url in inputs]
