"""Waiting for the rendezvous host: what a pod does before its torchrun joins a multi-node job.

In the Kubernetes deployments (``charts/actiontrain``, ``k8s/``) node 0 hosts torchrun's c10d
store and every other node first runs::

    python -m actiontrain.launch.rendezvous --wait HOST:PORT --timeout SECONDS

Pods of one job start in any order and a headless Service publishes a pod's DNS name only once
the pod has an address. torchrun's own store client gives up after its 60 s read timeout, and a
torchrun that gives up fails its pod, which costs one of the Job's per-index retries. Waiting
here, with a bound of its own and a progress line, turns "node 0 is still being scheduled" into
a wait instead of a failure, and "node 0 never came" into one clear line.

Exit codes: 0 the endpoint accepts connections; 1 it did not within the timeout (retryable: the
pod fails and the Job retries it); 2 bad arguments (the Job's failure policy fails the whole job
on 2, since a retry cannot fix them). This module imports neither torch nor the rest of the
package, so it starts in well under a second.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import time
from collections.abc import Callable, Sequence

__all__ = ["EXIT_TIMEOUT", "EXIT_USAGE", "main", "parse_endpoint", "wait_for_endpoint"]

logger = logging.getLogger(__name__)

EXIT_TIMEOUT = 1
"""The endpoint did not accept a connection in time: the pod fails and the Job may retry it."""
EXIT_USAGE = 2
"""Bad arguments: retrying cannot help (the project's exit code for a user mistake)."""


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """Splits ``HOST:PORT`` (``[V6ADDR]:PORT`` for IPv6 literals) into host and port.

    Raises:
        ValueError: no port, an empty host, or a port outside 1-65535.
    """
    host, separator, port_text = endpoint.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not separator or not host:
        raise ValueError(f"rendezvous endpoint {endpoint!r} is not HOST:PORT; example: trainer-0.trainer:29400")
    try:
        port = int(port_text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ValueError(
            f"rendezvous endpoint {endpoint!r} has no valid port (1-65535); example: trainer-0.trainer:29400"
        )
    return host, port


def _probe(host: str, port: int, timeout_s: float) -> str | None:
    """None when ``host:port`` accepts a TCP connection, else why not (for the progress line)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        return f"name does not resolve yet ({error.strerror})"
    reason = "no address"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(timeout_s)
            try:
                sock.connect(address)
            except OSError as error:
                reason = f"{address[0]} does not accept connections yet ({error.strerror or error})"
                continue
        # Connected and closed without a word: a c10d store treats that as a client that left.
        return None
    return reason


def wait_for_endpoint(
    host: str,
    port: int,
    *,
    timeout_s: float,
    interval_s: float = 2.0,
    report_every_s: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """Blocks until ``host`` resolves and ``host:port`` accepts a TCP connection.

    Args:
        host: DNS name or address of the rendezvous host (node 0's pod).
        port: Its c10d store port.
        timeout_s: Give up after this many seconds (0: try once).
        interval_s: Pause between attempts.
        report_every_s: Log a progress line (what is still missing) this often.
        clock: Monotonic clock; tests pass a fake one.
        sleep: Sleep function; tests pass a fake one.

    Returns:
        The seconds it took.

    Raises:
        TimeoutError: the endpoint did not accept a connection within ``timeout_s``; the message
            names the endpoint, the last reason and the timeout.
    """
    if timeout_s < 0 or interval_s <= 0:
        raise ValueError(f"timeout_s must be >= 0 and interval_s > 0, got {timeout_s} and {interval_s}")
    start = clock()
    next_report = start + report_every_s
    while True:
        reason = _probe(host, port, timeout_s=max(0.5, min(interval_s, 5.0)))
        if reason is None:
            waited = clock() - start
            logger.info("rendezvous host %s:%d is up after %.0f s", host, port, waited)
            return waited
        now = clock()
        if now - start >= timeout_s:
            raise TimeoutError(
                f"rendezvous host {host}:{port} not reachable after {timeout_s:.0f} s: {reason}; "
                "is node 0's pod running? (kubectl get pods -o wide: the job's pod with index 0)"
            )
        if now >= next_report:
            logger.info(
                "waiting for rendezvous host %s:%d: %s (%.0f/%.0f s)", host, port, reason, now - start, timeout_s
            )
            next_report = now + report_every_s
        sleep(min(interval_s, max(0.0, start + timeout_s - now)))


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m actiontrain.launch.rendezvous",
        description="Wait until the rendezvous host of a multi-node job accepts connections (run before torchrun).",
    )
    parser.add_argument("--wait", required=True, metavar="HOST:PORT", help="node 0's c10d store endpoint")
    parser.add_argument(
        "--timeout", type=float, default=900.0, metavar="SECONDS", help="give up after this long (default 900)"
    )
    parser.add_argument(
        "--interval", type=float, default=2.0, metavar="SECONDS", help="pause between attempts (default 2)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: returns 0 when the endpoint is up, 1 on timeout, 2 on bad arguments."""
    parser = _build_parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error
    try:
        host, port = parse_endpoint(args.wait)
        if args.timeout < 0 or args.interval <= 0:
            raise ValueError(f"--timeout must be >= 0 and --interval > 0, got {args.timeout} and {args.interval}")
    except ValueError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("[actiontrain rendezvous] %(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    )
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        wait_for_endpoint(host, port, timeout_s=args.timeout, interval_s=args.interval)
    except TimeoutError as error:
        logger.error("%s", error)
        return EXIT_TIMEOUT
    finally:
        logger.removeHandler(handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
