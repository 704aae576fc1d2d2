"""Process-group set-up from torchrun's environment: single process, a real 2-rank gloo job, errors."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from actiontrain import distributed
from actiontrain.distributed import (
    agree_autocast_dtype,
    agree_flags,
    autocast_dtype,
    barrier,
    destroy_distributed,
    init_distributed,
    is_torchrun,
    needs_grad_scaler,
)
from actiontrain.errors import ConfigError

TORCHRUN_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in TORCHRUN_KEYS:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_single_process_without_torchrun_has_no_process_group(no_torchrun_env, no_gpu):
    info = init_distributed()
    assert (info.rank, info.local_rank, info.world_size, info.backend) == (0, 0, 1, None)
    assert info.device == torch.device("cpu")
    assert info.is_main
    assert not is_torchrun()
    assert not torch.distributed.is_initialized()


def test_collectives_are_identities_in_single_process_mode(no_torchrun_env):
    assert agree_autocast_dtype(torch.bfloat16) is torch.bfloat16
    assert agree_flags(True, False) == (True, False)
    barrier()
    destroy_distributed()  # safe without a group


def test_one_torchrun_process_gets_a_gloo_group_and_init_is_idempotent(monkeypatch, no_gpu):
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for key, value in {**env, "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(key, value)
    try:
        info = init_distributed(timeout_s=30)
        assert (info.rank, info.world_size, info.backend) == (0, 1, "gloo")
        assert init_distributed(timeout_s=30) == info
        assert agree_autocast_dtype(torch.float16) is torch.float16
    finally:
        destroy_distributed()
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize(
    ("agent_store", "max_restarts", "warned"), [("True", "3", True), ("True", "0", False), ("False", "3", False)]
)
def test_restartable_job_on_torchruns_shared_store_gets_a_warning_naming_the_switch(
    monkeypatch, caplog, no_gpu, agent_store, max_restarts, warned
):
    # torchrun itself reads the switch: with it set, workers see TORCHELASTIC_USE_AGENT_STORE=False.
    port = _free_port()
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    env |= {"TORCHELASTIC_USE_AGENT_STORE": agent_store, "TORCHELASTIC_MAX_RESTARTS": max_restarts}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # The store torchrun's agent would host (workers then connect as clients only).
    shared = agent_store == "True"
    agent = torch.distributed.TCPStore("127.0.0.1", port, 1, is_master=True, wait_for_workers=False) if shared else None
    try:
        with caplog.at_level("WARNING", logger="actiontrain"):
            init_distributed(timeout_s=30)
    finally:
        destroy_distributed()
        del agent
    assert (distributed.SHARED_STORE_SWITCH in caplog.text) is warned


def test_required_cuda_without_a_gpu_fails_fast_with_torchs_reason_in_one_line(no_torchrun_env, no_gpu):
    with pytest.raises(ConfigError) as error:
        init_distributed(device="cuda")
    message = str(error.value)
    assert message.startswith("train.device=cuda but CUDA is not usable here")
    # torch's own reason (here: no driver on this machine, or a CPU-only build) and the way out.
    assert ("NVIDIA driver" in message) or ("CPU-only build" in message), message
    assert "train.device=cpu" in message
    assert "\n" not in message


def test_auto_falls_back_to_cpu_without_a_gpu(no_torchrun_env, no_gpu):
    assert init_distributed(device="auto").device == torch.device("cpu")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR and MASTER_PORT is not"),
        ({"WORLD_SIZE": "2"}, "RANK is not set"),
        ({"RANK": "x"}, "RANK must be an integer, got 'x'"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK must be in [0, WORLD_SIZE)"),
    ],
)
def test_incomplete_torchrun_env_is_a_config_error(monkeypatch, no_torchrun_env, no_gpu, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        init_distributed()


def test_unknown_device_is_a_config_error(no_torchrun_env):
    with pytest.raises(ConfigError, match="device must be one of auto, cpu, cuda, got 'tpu'"):
        init_distributed(device="tpu")


def _rank_main(local_rank: int, world_size: int, port: int, out_dir: str) -> None:
    # What torchrun would set for this process.
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    info = init_distributed(device="cpu", timeout_s=60)
    try:
        result = {
            "rank": info.rank,
            "world_size": info.world_size,
            "backend": info.backend,
            "is_main": info.is_main,
            "torchrun": is_torchrun(),
            # A mixed GPU pool: rank 0 could run bf16, rank 1 only fp16; then rank 0 has none.
            "agreed_mixed": str(agree_autocast_dtype(torch.bfloat16 if info.rank == 0 else torch.float16)),
            "agreed_none": str(agree_autocast_dtype(None if info.rank == 0 else torch.bfloat16)),
            # One rank asks to stop, the other finds a checkpoint due: both learn of both.
            "flags": agree_flags(info.rank == 1, info.rank == 0, False),
        }
        barrier()
    finally:
        destroy_distributed()
    Path(out_dir, f"rank{info.rank}.json").write_text(json.dumps(result))


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_two_gloo_ranks_form_a_group_and_agree_on_one_autocast_dtype(tmp_path):
    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    for rank, result in enumerate(results):
        assert result["rank"] == rank
        assert (result["world_size"], result["backend"], result["torchrun"]) == (2, "gloo", True)
        assert result["is_main"] == (rank == 0)
        # Every rank takes the weakest rank's autocast dtype, so DDP never averages scaled fp16
        # gradients with unscaled bf16 ones.
        assert (result["agreed_mixed"], result["agreed_none"]) == ("torch.float16", "None")
        assert result["flags"] == [True, True, False]


def test_autocast_is_bf16_where_supported_else_fp16_and_none_on_cpu(monkeypatch):
    assert autocast_dtype("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert autocast_dtype(torch.device("cuda", 0)) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)  # emulated only
    assert autocast_dtype("cuda") is torch.float16


def test_only_fp16_needs_a_grad_scaler():
    assert needs_grad_scaler(torch.float16)
    assert not needs_grad_scaler(torch.bfloat16)
    assert not needs_grad_scaler(None)


def test_module_exports_its_public_names():
    assert set(distributed.__all__) <= set(dir(distributed))
