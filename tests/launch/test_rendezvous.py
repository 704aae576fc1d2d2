"""actiontrain.launch.rendezvous: a pod waits, bounded, for node 0's c10d store before torchrun starts."""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import sys

import pytest
import torch.distributed

from actiontrain.launch.rendezvous import (
    EXIT_TIMEOUT,
    EXIT_USAGE,
    main,
    parse_endpoint,
    wait_for_endpoint,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("trainer-0.trainer.ml.svc:29400", ("trainer-0.trainer.ml.svc", 29400)),
        ("10.0.0.7:1", ("10.0.0.7", 1)),
        ("[fd00::7]:29400", ("fd00::7", 29400)),
    ],
)
def test_parse_endpoint_splits_host_and_port(endpoint, expected):
    assert parse_endpoint(endpoint) == expected


@pytest.mark.parametrize("endpoint", ["trainer-0", ":29400", "host:", "host:http", "host:0", "host:70000"])
def test_parse_endpoint_refuses_what_is_not_host_port_with_an_example(endpoint):
    with pytest.raises(ValueError, match="example: trainer-0.trainer:29400"):
        parse_endpoint(endpoint)


def test_returns_at_once_when_the_endpoint_accepts_connections():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        clock = _FakeClock()
        assert wait_for_endpoint("127.0.0.1", port, timeout_s=10, clock=clock, sleep=clock.sleep) == 0
        assert clock.sleeps == []


def test_waits_until_the_endpoint_comes_up():
    port = _free_port()
    server: list[socket.socket] = []

    def start_listening_on_third_attempt(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 2:
            server.append(socket.create_server(("127.0.0.1", port)))

    clock = _FakeClock()
    try:
        waited = wait_for_endpoint(
            "127.0.0.1", port, timeout_s=60, interval_s=2, clock=clock, sleep=start_listening_on_third_attempt
        )
    finally:
        for sock in server:
            sock.close()
    assert waited == 4
    assert clock.sleeps == [2, 2]


def test_times_out_naming_the_endpoint_and_the_last_reason():
    port = _free_port()
    clock = _FakeClock()
    with pytest.raises(TimeoutError) as caught:
        wait_for_endpoint("127.0.0.1", port, timeout_s=5, interval_s=2, clock=clock, sleep=clock.sleep)
    message = str(caught.value)
    assert f"127.0.0.1:{port} not reachable after 5 s" in message
    assert "does not accept connections yet" in message
    assert sum(clock.sleeps) == 5  # the last pause is cut to the deadline


def test_times_out_on_a_name_that_never_resolves():
    clock = _FakeClock()
    with pytest.raises(TimeoutError, match="name does not resolve yet"):
        wait_for_endpoint("node-0.never.invalid", 29400, timeout_s=1, interval_s=1, clock=clock, sleep=clock.sleep)


def test_a_c10d_store_still_serves_clients_after_the_probe():
    port = _free_port()
    store = torch.distributed.TCPStore(
        "127.0.0.1", port, is_master=True, multi_tenant=True, timeout=datetime.timedelta(seconds=10)
    )
    wait_for_endpoint("127.0.0.1", port, timeout_s=5)
    client = torch.distributed.TCPStore("127.0.0.1", port, is_master=False, timeout=datetime.timedelta(seconds=10))
    client.set("joined", "1")
    assert store.get("joined") == b"1"


def test_main_exits_0_when_up_1_on_timeout_and_2_on_bad_arguments(capsys):
    with socket.create_server(("127.0.0.1", 0)) as server:
        assert main(["--wait", f"127.0.0.1:{server.getsockname()[1]}", "--timeout", "5"]) == 0
    assert main(["--wait", f"127.0.0.1:{_free_port()}", "--timeout", "0"]) == EXIT_TIMEOUT
    assert "not reachable after 0 s" in capsys.readouterr().err
    assert main(["--wait", "node-0", "--timeout", "5"]) == EXIT_USAGE
    assert "is not HOST:PORT" in capsys.readouterr().err
    assert main(["--wait", "node-0:29400", "--timeout", "-1"]) == EXIT_USAGE
    with pytest.raises(SystemExit) as caught:
        main(["--timeout", "5"])
    assert caught.value.code == EXIT_USAGE


# What the module's own docstring promises: it starts in well under a second because it
# imports neither torch nor the rest of the package. Checked by what it imports, not by a clock.
@pytest.mark.e2e
def test_module_imports_only_the_standard_library_not_torch_or_the_rest_of_the_package():
    code = (
        "import json, sys; before = set(sys.modules); import actiontrain.launch.rendezvous; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported = json.loads(result.stdout)
    ours = {name for name in imported if name.split(".")[0] == "actiontrain"}
    assert ours == {"actiontrain", "actiontrain.launch", "actiontrain.launch.rendezvous"}
    others = {name.split(".")[0] for name in imported} - {"actiontrain"}
    assert others <= sys.stdlib_module_names, sorted(others - sys.stdlib_module_names)


# The module run as `python -m`, with socket.getaddrinfo wrapped to announce each attempt on stdout.
ANNOUNCING_PROBES = """
import runpy, socket
resolve = socket.getaddrinfo
def announcing(*args, **kwargs):
    print("attempt", flush=True)
    return resolve(*args, **kwargs)
socket.getaddrinfo = announcing
runpy.run_module("actiontrain.launch.rendezvous", run_name="__main__", alter_sys=True)
"""


@pytest.mark.e2e
def test_command_line_waits_for_a_server_that_starts_later():
    port = _free_port()
    command = [
        sys.executable, "-c", ANNOUNCING_PROBES, "--wait", f"127.0.0.1:{port}", "--timeout", "600", "--interval", "0.2",
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            # A second attempt starts only after the first failed: nothing listened then.
            for _ in range(2):
                assert process.stdout.readline() == "attempt\n", process.stderr.read()
            with socket.create_server(("127.0.0.1", port)):
                _, err = process.communicate(timeout=120)
        finally:
            process.kill()
    assert process.returncode == 0, err
    assert f"rendezvous host 127.0.0.1:{port} is up after" in err
