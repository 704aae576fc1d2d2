"""``actiontrain launch``: torchrun's options pass through, the elastic defaults fill in what is not given."""

from __future__ import annotations

import pytest

from actiontrain.distributed import SHARED_STORE_SWITCH
from actiontrain.errors import ConfigError
from actiontrain.tasks.launch import torchrun_command

TRAIN = ["train", "--config", "cpu_smoke", "--data", "s3://b/d", "--output", "s3://b/o", "train.epochs=2"]


def test_a_one_node_launch_gets_c10d_a_free_port_restarts_and_a_fresh_store_per_round():
    argv, env = torchrun_command(["--nproc-per-node", "2", *TRAIN], {"PATH": "/bin"})
    assert argv == [
        "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0", "--max-restarts=3",
        "--nproc-per-node", "2", "-m", "actiontrain", *TRAIN,
    ]  # fmt: skip
    assert env == {SHARED_STORE_SWITCH: "1"}


def test_given_options_win_in_either_spelling_and_the_command_keeps_its_own_dashes():
    given = ["--nnodes=1:3", "--rdzv_endpoint", "node0:29400", "--rdzv-backend", "c10d", "--max_restarts=9"]
    command = ["train", "--data", "d", "--output", "o", "--nnodes", "ignored-by-torchrun"]
    argv, env = torchrun_command([*given, *command], {SHARED_STORE_SWITCH: "0"})
    assert argv == [*given, "-m", "actiontrain", *command]
    assert env == {}  # an explicit choice (here 0) is respected


def test_torchruns_environment_spellings_count_as_given():
    argv, _ = torchrun_command(TRAIN, {"PET_RDZV_ENDPOINT": "node0:29400", "PET_NNODES": "2"})
    assert argv == ["--rdzv-backend=c10d", "--max-restarts=3", "-m", "actiontrain", *TRAIN]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--nnodes", "2", *TRAIN], "--nnodes 2 needs --rdzv-endpoint HOST:PORT"),
        (["-m", "actiontrain", *TRAIN], "drop -m"),
        (["--no-python", "actiontrain", *TRAIN], "drop --no-python"),
        (["--nproc-per-node", "2"], "torchrun does not take these arguments"),
    ],
)
def test_launch_refuses_what_it_cannot_run_in_one_line(arguments, message, capsys):
    with pytest.raises(ConfigError, match=message):
        torchrun_command(arguments, {})
