"""What a test needs from the machine: locally a missing capability skips (listed in the summary,
``-ra``); in CI (``CI`` set) it fails with the reason, so a green CI run has really run everything."""

from __future__ import annotations

import os

import pytest

__all__ = ["in_ci", "require"]


def in_ci() -> bool:
    """Whether this is a CI run (the ``CI`` variable set to anything but empty, ``0`` or ``false``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(missing: str | None, *, what: str) -> None:
    """Skips (locally) or fails (in CI) the calling test when ``missing`` says why ``what`` cannot run.

    Args:
        missing: Why the capability is unavailable, or None when it is there.
        what: What the test does that needs it, for the message.
    """
    if missing is None:
        return
    message = f"{what} needs {missing}"
    if in_ci():
        pytest.fail(f"{message} (CI must run every test: install it, e.g. with scripts/setup-env.sh test)", pytrace=False)
    pytest.skip(message)
