"""``python -m actiontrain`` (and ``torchrun -m actiontrain``): the command line, with per-rank error files."""

import sys

from torch.distributed.elastic.multiprocessing.errors import record

from actiontrain.cli import main

if __name__ == "__main__":
    # record: under torchrun, an unexpected error leaves a per-rank error file that the agent
    # reports, instead of a bare exit code.
    sys.exit(record(main)())
