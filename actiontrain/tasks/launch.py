"""``actiontrain launch``: torchrun with the defaults an elastic actiontrain job needs (as ``accelerate launch``).

``actiontrain launch [TORCHRUN OPTIONS] COMMAND [ARGS]`` runs ``torchrun [OPTIONS] -m actiontrain
COMMAND [ARGS]``, adding what a restartable job must not do without:

- ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``: a fresh rendezvous store for every restart round. With
  torchrun's default shared store, keys of the killed incarnation survive the restart and the
  new ranks may connect to a dead peer: gloo fails every retry or hangs (pytorch/pytorch#135712).
  The workers cannot fix that from inside, so the launcher does.
- ``--rdzv-backend c10d`` (elastic rendezvous, torchrun's default is ``static``), on one node
  ``--rdzv-endpoint 127.0.0.1:0`` (a free port, as ``--standalone``), and ``--max-restarts 3``
  (the chart's and the TorchX component's default), each only when not given.

torchrun's agent runs in this very process, as if ``exec``'d: it receives the signals sent to the
command and forwards them to the workers. Unlike bare torchrun, a stop by SIGTERM or SIGINT (after
which the workers have committed their checkpoint) ends in one line and exit code 128 + the signal
(143 for SIGTERM) instead of a traceback and 1.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Mapping, Sequence

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.run import get_args_parser, run

from actiontrain.distributed import SHARED_STORE_SWITCH
from actiontrain.errors import ConfigError

__all__ = ["DEFAULT_MAX_RESTARTS", "USAGE", "launch", "torchrun_command"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_RESTARTS = 3
"""Restarts of the worker group when ``--max-restarts`` is not given."""
USAGE = "actiontrain launch [TORCHRUN OPTIONS] COMMAND [ARGS]   e.g. actiontrain launch --nproc-per-node 2 train --data D --output O"


def torchrun_command(arguments: Sequence[str], environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """torchrun's arguments and the environment variables that ``actiontrain launch ARGUMENTS`` adds.

    Args:
        arguments: torchrun's options, then an actiontrain command and its arguments.
        environ: The environment launch starts from (not modified).

    Returns:
        torchrun's whole argument list (``... -m actiontrain COMMAND ARGS``), and the variables
        to set in the environment.

    Raises:
        ConfigError: no command, torchrun options that choose the program (``-m``,
            ``--no-python``, ``--run-path``: launch runs ``-m actiontrain`` itself), a multi-node
            job without ``--rdzv-endpoint``, or arguments torchrun rejects.
    """
    arguments = list(arguments)
    parser = get_args_parser()
    parser.prog = "actiontrain launch"
    try:
        parsed = parser.parse_args(arguments)
    except SystemExit as error:  # argparse printed what was wrong
        raise ConfigError(f"torchrun does not take these arguments; usage: {USAGE}") from error
    command = [parsed.training_script, *parsed.training_script_args]
    options = arguments[: len(arguments) - len(command)]
    if arguments[len(options) :] != command:
        raise ConfigError(f"cannot tell torchrun's options from the command in {shlex.join(arguments)}; usage: {USAGE}")
    given = {_option_name(argument) for argument in options if argument.startswith("-")}
    # torchrun also reads each option from PET_<NAME> (PET_RDZV_ENDPOINT...).
    given |= {name for name in _CHECKED if f"PET_{name[2:].replace('-', '_').upper()}" in environ}
    chosen = sorted(given & {"--module", "-m", "--no-python", "--run-path"})
    if chosen:
        raise ConfigError(
            f"actiontrain launch runs `-m actiontrain COMMAND` itself; drop {', '.join(chosen)} and give the "
            f"command, e.g. {USAGE.split('e.g. ')[1]}"
        )
    defaults = []
    standalone = "--standalone" in given
    if "--rdzv-backend" not in given and not standalone:
        defaults.append("--rdzv-backend=c10d")
    if "--rdzv-endpoint" not in given and not standalone:
        if str(parsed.nnodes) not in ("1", "1:1"):
            raise ConfigError(
                f"--nnodes {parsed.nnodes} needs --rdzv-endpoint HOST:PORT, the same on every node "
                "(node 0's address, e.g. --rdzv-endpoint node0.example:29400)"
            )
        defaults.append("--rdzv-endpoint=127.0.0.1:0")
    if "--max-restarts" not in given:
        defaults.append(f"--max-restarts={DEFAULT_MAX_RESTARTS}")
    env = {} if SHARED_STORE_SWITCH in environ else {SHARED_STORE_SWITCH: "1"}
    return [*defaults, *options, "-m", "actiontrain", *command], env


def launch(arguments: Sequence[str]) -> int:
    """Runs torchrun's agent in this process with ``actiontrain COMMAND`` as its workers.

    Returns:
        0 when every worker succeeded, 128 + the signal's number when a signal stopped the job
        (the workers got it too, and committed a checkpoint when they were training).

    Raises:
        ConfigError: see :func:`torchrun_command`.
        ChildFailedError: a worker failed beyond ``--max-restarts`` (torchrun's own error, with
            its table of failures).
    """
    torchrun_args, env = torchrun_command(arguments, os.environ)
    os.environ.update(env)  # read by torchrun's rendezvous in this process
    logger.info("actiontrain launch: torchrun %s", shlex.join(torchrun_args))
    try:
        run(get_args_parser().parse_args(torchrun_args))
    except SignalException as stop:
        name = stop.sigval.name
        logger.warning("actiontrain launch: stopped on %s (workers stop after their step with a checkpoint)", name)
        return 128 + int(stop.sigval)
    return 0


# The options whose presence launch checks.
_CHECKED = ("--rdzv-backend", "--rdzv-endpoint", "--max-restarts", "--standalone", "--module", "--no-python", "--run-path")


def _option_name(argument: str) -> str:
    name = argument.split("=", 1)[0]
    return name.replace("_", "-") if name.startswith("--") else name
