"""Missing capabilities: skipped with the reason locally, a failure in CI."""

from __future__ import annotations

import pytest
from capabilities import require


def test_a_missing_capability_fails_in_ci_with_its_reason(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="the pod test needs iproute2's ip"):
        require("iproute2's ip", what="the pod test")


def test_a_missing_capability_skips_locally_with_its_reason(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="the pod test needs iproute2's ip"):
        require("iproute2's ip", what="the pod test")


def test_a_present_capability_lets_the_test_run(monkeypatch):
    monkeypatch.setenv("CI", "true")
    require(None, what="the pod test")
