"""Stopping on the scheduler's terms: the first SIGTERM or SIGINT is a request, the second is not softened."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from actiontrain import preemption
from actiontrain.preemption import EXIT_PREEMPTED, StopRequest


def test_the_first_sigterm_only_sets_the_flag_and_the_second_gets_the_previous_handler(caplog):
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: seen.append(signum))
    try:
        with caplog.at_level("WARNING", logger="actiontrain"), StopRequest() as stop:
            assert not stop.requested and stop.name is None
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested and stop.name == "SIGTERM" and stop.received_at is not None
            assert seen == []  # the first one is ours: no default handling
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == [signal.SIGTERM]  # the second one is not ours to soften
        assert "SIGTERM received: stopping after this step with a checkpoint" in caplog.text
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_handlers_come_back_on_exit_and_sigint_counts_too():
    before = {signum: signal.getsignal(signum) for signum in StopRequest.SIGNALS}
    with StopRequest() as stop:
        assert all(signal.getsignal(signum) != before[signum] for signum in StopRequest.SIGNALS)
        os.kill(os.getpid(), signal.SIGINT)  # a first Ctrl-C: no KeyboardInterrupt
        assert stop.name == "SIGINT"
    assert {signum: signal.getsignal(signum) for signum in StopRequest.SIGNALS} == before


def test_a_request_without_a_signal_keeps_the_first_reason():
    stop = StopRequest()
    stop.request()
    stop.request(signal.SIGINT)
    assert stop.name == "SIGTERM"


def test_outside_the_main_thread_it_only_carries_the_flag():
    before = signal.getsignal(signal.SIGTERM)
    errors = []

    def enter():
        try:
            with StopRequest() as stop:
                stop.request()
                assert signal.getsignal(signal.SIGTERM) == before
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert errors == []


def test_the_exit_code_is_what_a_shell_reports_for_sigterm():
    assert EXIT_PREEMPTED == 128 + signal.SIGTERM
    assert set(preemption.__all__) <= set(dir(preemption))


@pytest.mark.parametrize("signum", StopRequest.SIGNALS)
def test_both_signals_are_handled(signum):
    with StopRequest() as stop:
        os.kill(os.getpid(), signum)
    assert stop.signal == signum
