"""The ``actiontrain`` command: parses arguments, calls the library, turns known errors into exit codes."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from actiontrain import __version__
from actiontrain.cli import data as data_commands
from actiontrain.cli import demo as demo_command
from actiontrain.cli import export as export_commands
from actiontrain.cli import train as train_commands
from actiontrain.cli.exit_codes import EXIT_PROBLEMS, EXIT_USER_ERROR
from actiontrain.errors import ActionTrainError
from actiontrain.log import init_logger
from actiontrain.storage import redact

__all__ = ["EXIT_PROBLEMS", "EXIT_USER_ERROR", "build_parser", "main"]



class _OneLineParser(argparse.ArgumentParser):
    """Usage mistakes end in one line naming the bad argument (``--help`` shows the rest)."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="actiontrain",
        description="Elastic X3D action-classification training from object storage.",
    )
    parser.add_argument("--version", action="version", version=f"actiontrain {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, and the causes of an error (tracebacks)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data_commands.add_parser(commands)
    train_commands.add_parsers(commands)
    demo_command.add_parser(commands)
    export_commands.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    init_logger(10 if args.verbose else None)
    try:
        return int(args.handler(args) or 0)
    except ActionTrainError as error:
        if args.verbose:
            # What the library underneath said (botocore, Datumaro, OpenVINO...), cause first.
            print(redact("".join(traceback.format_exception(error))).rstrip(), file=sys.stderr)
        print(f"actiontrain: error: {redact(str(error))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("actiontrain: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
