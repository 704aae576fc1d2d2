"""Project errors: user mistakes raise these; the CLI prints them as one line."""

__all__ = ["ActionTrainError", "ConfigError", "DataError", "ExportError", "NotFoundError", "StorageError"]


class ActionTrainError(Exception):
    """A mistake the user can fix; the message says what was wrong and how to fix it."""


class ConfigError(ActionTrainError):
    """A bad option or configuration value."""


class StorageError(ActionTrainError):
    """A URL that cannot be read or written (missing, unreachable, forbidden)."""


class NotFoundError(StorageError):
    """The file or folder does not exist (unlike an outage or bad credentials, a fact about the data)."""


class DataError(ActionTrainError):
    """A dataset or media file that cannot be parsed or decoded."""


class ExportError(ActionTrainError):
    """An export that fails its own checks (OpenVINO's outputs differ from PyTorch's beyond tolerance)."""
