"""The command's exit codes, shared by every subcommand."""

from actiontrain.preemption import EXIT_PREEMPTED

__all__ = ["EXIT_PREEMPTED", "EXIT_PROBLEMS", "EXIT_USER_ERROR"]

EXIT_USER_ERROR = 2
"""A known mistake (bad URL, missing file, bad value): printed as one line, no traceback."""
EXIT_PROBLEMS = 1
"""The command ran but found the input unusable (e.g. ``data check`` found errors)."""
