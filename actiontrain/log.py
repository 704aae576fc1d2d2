"""One logging set-up for every entry point: a stable prefix, INFO on rank 0, WARNING elsewhere."""

from __future__ import annotations

import logging
import os
import sys

from actiontrain.storage import redact

__all__ = ["init_logger"]


class _DropMessage(logging.Filter):
    """Drops the records of one logger whose message starts with ``prefix``; lets the rest through."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


class _RedactingFormatter(logging.Formatter):
    # Defence in depth: whatever a library puts in a message, credentials never reach the log.
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def init_logger(level: int | None = None) -> None:
    """Configures the root logger once; rank comes from torchrun's ``RANK`` variable."""
    rank = int(os.environ.get("RANK", "0") or 0)
    if level is None:
        level = logging.INFO if rank == 0 else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter(f"[actiontrain r{rank}] %(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter that would drown the progress lines.
    for noisy in ("botocore", "s3fs", "aiobotocore", "fsspec", "urllib3", "werkzeug", "datumaro"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A fresh environment's first plot builds matplotlib's font cache; after 5 s matplotlib warns
    # that it is doing so. It is not a problem anyone must act on: drop that one message.
    font_manager = logging.getLogger("matplotlib.font_manager")
    if not any(isinstance(f, _DropMessage) for f in font_manager.filters):
        font_manager.addFilter(_DropMessage("Matplotlib is building the font cache"))
