"""``python -m actiontrain`` (and ``torchrun -m actiontrain``): the command line, with per-rank error files."""

import gc
import sys

from torch.distributed.elastic.multiprocessing.errors import record

from actiontrain.cli import main

if __name__ == "__main__":
    try:
        # record: under torchrun, an unexpected error leaves a per-rank error file that the agent
        # reports, instead of a bare exit code.
        code = record(main)()
    finally:
        # The interpreter's last garbage collections walk every object torch, torchvision and
        # sympy made at import: seconds of exit (4 of 5 s here) that a restart, or a SIGTERM's
        # grace period, waits for. The process is ending; nothing needs collecting. (Objects are
        # still released, and their finalizers run, as the modules are torn down.)
        gc.freeze()
    sys.exit(code)
