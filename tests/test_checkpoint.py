"""Checkpoints: commit marker last, pointer after it, hashes checked, credentials and code refused."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import subprocess
import sys
import textwrap

import pytest
import torch
from s3_gate import Request, S3Gate

from actiontrain import storage
from actiontrain.checkpoint import MARKER_FILE, POINTER_FILE, STATE_FILE, CheckpointManager
from actiontrain.errors import ConfigError, DataError, NotFoundError

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def training_state(seed: int = 0) -> dict:
    """What a trainer saves: model, optimizer (after a step), scheduler, RNG as tensors, nesting."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    random.seed(seed)
    version, internal, gauss = random.getstate()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "sampler": {"epoch": 2, "offset": 17, "order": torch.randperm(10)},
        "train_state": {
            "step": 7 + seed,
            "rng": {
                "torch": torch.get_rng_state(),
                "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
            },
            "nested": {"a": [1, 2.5, "x", None, (3, 4)], "b": {"c": {"d": torch.ones(2, 2, dtype=torch.bfloat16)}}},
        },
    }


def assert_same(actual, expected) -> None:
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and actual.dtype == expected.dtype
        assert torch.equal(actual, expected)
    elif isinstance(expected, dict):
        assert type(actual) is type(expected) and actual.keys() == expected.keys()
        for key in expected:
            assert_same(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert type(actual) is type(expected) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_same(a, e)
    else:
        assert actual == expected


def write_committed_raw(manager: CheckpointManager, step: int, obj) -> None:
    """A checkpoint as someone with write access to the bucket could forge it: valid marker, any pickle."""
    local = os.path.join(str(storage.cache_dir("forge")), "state.pt")
    torch.save(obj, local)
    with open(local, "rb") as file:
        data = file.read()
    storage.write_bytes(storage.join(manager.step_url(step), STATE_FILE), data)
    marker = {
        "format": 1,
        "step": step,
        "files": {STATE_FILE: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}},
    }
    storage.write_bytes(storage.join(manager.step_url(step), MARKER_FILE), json.dumps(marker).encode())


def pointer(manager: CheckpointManager) -> dict:
    return json.loads(storage.read_bytes(storage.join(manager.root, POINTER_FILE)))


@pytest.mark.parametrize("scheme", ["local", "file", "memory"])
def test_save_then_load_latest_gives_back_the_same_state(tmp_path, scheme):
    output = {
        "local": str(tmp_path / "run"),
        "file": f"file://{tmp_path}/run",
        "memory": f"memory://{tmp_path.name}/run",
    }[scheme]
    manager = CheckpointManager(output)
    state = training_state()
    url = manager.save(7, state, epoch=2)
    assert url == storage.join(output, "checkpoints", "step-00000007")
    assert storage.find(url) == [MARKER_FILE, STATE_FILE]
    step, loaded = manager.load_latest()
    assert step == 7
    assert_same(loaded, state)
    # The restored RNG states reproduce the same random numbers.
    torch.set_rng_state(loaded["train_state"]["rng"]["torch"])
    python = loaded["train_state"]["rng"]["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    first = (torch.rand(3), random.random())
    torch.set_rng_state(state["train_state"]["rng"]["torch"])
    random.seed(0)
    assert torch.equal(first[0], torch.rand(3)) and first[1] == random.random()
    marker = json.loads(storage.read_bytes(storage.join(url, MARKER_FILE)))
    assert marker["step"] == 7 and marker["epoch"] == 2 and marker["actiontrain_version"]
    assert (
        marker["files"][STATE_FILE]["sha256"]
        == hashlib.sha256(storage.read_bytes(storage.join(url, STATE_FILE))).hexdigest()
    )
    assert marker["time"].endswith("+00:00")
    assert pointer(manager) == {"step": 7, "path": "step-00000007"}
    assert manager.latest_step() == 7 and manager.list_committed() == [7]
    assert_same(manager.load(7), state)


def test_empty_output_has_no_checkpoint(tmp_path):
    manager = CheckpointManager(str(tmp_path / "nothing"))
    assert manager.load_latest() is None
    assert manager.latest_step() is None and manager.list_committed() == []
    with pytest.raises(NotFoundError, match="step 3 is not committed"):
        manager.load(3)


def test_keeps_only_the_last_k_committed_checkpoints(tmp_path):
    manager = CheckpointManager(str(tmp_path), keep_last=2)
    for step in (10, 20, 30, 40, 50):
        manager.save(step, {"step": torch.tensor(step)})
    assert manager.list_committed() == [40, 50]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [POINTER_FILE, "step-00000040", "step-00000050"]
    assert manager.load_latest()[1]["step"].item() == 50


def test_prune_deletes_uncommitted_leftovers_older_than_the_newest_commit(tmp_path):
    manager = CheckpointManager(str(tmp_path), keep_last=3)
    manager.save(1, {"x": torch.zeros(1)})
    for leftover in (2, 9):  # crashed saves: state written, never committed
        storage.write_bytes(storage.join(manager.step_url(leftover), STATE_FILE), b"partial")
    manager.save(5, {"x": torch.ones(1)})
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [
        POINTER_FILE,
        "step-00000001",
        "step-00000005",
        "step-00000009",
    ]
    manager.save(10, {"x": torch.ones(1)})
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [
        POINTER_FILE,
        "step-00000001",
        "step-00000005",
        "step-00000010",
    ]


def test_pruning_removes_the_marker_before_the_state(tmp_path, monkeypatch):
    manager = CheckpointManager(str(tmp_path), keep_last=1)
    manager.save(1, {"x": torch.zeros(1)})
    removed = []
    monkeypatch.setattr(storage, "remove", lambda url: removed.append(storage.relative_to(url, manager.root)))
    manager.save(2, {"x": torch.zeros(1)})
    old = [name for name in removed if name.startswith("step-00000001/")]
    assert old == ["step-00000001/COMMITTED", "step-00000001/state.pt"]


def test_writes_state_then_marker_then_pointer(tmp_path, monkeypatch):
    manager = CheckpointManager(str(tmp_path))
    written = []
    original = storage.atomic_write

    def recording_atomic_write(url):
        with original(url) as temporary:
            yield temporary
        written.append(storage.relative_to(url, manager.root))

    monkeypatch.setattr(storage, "atomic_write", contextlib.contextmanager(recording_atomic_write))
    manager.save(3, {"x": torch.zeros(1)})
    assert written == ["step-00000003/state.pt", "step-00000003/COMMITTED", "latest"]


def test_crash_before_the_marker_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    manager = CheckpointManager(str(tmp_path))
    manager.save(1, {"x": torch.zeros(1)})
    original = storage.write_bytes

    def crash_on_marker(url, data):
        if url.endswith(MARKER_FILE):
            raise KeyboardInterrupt("killed between the state and the marker")
        original(url, data)

    monkeypatch.setattr(storage, "write_bytes", crash_on_marker)
    with pytest.raises(KeyboardInterrupt):
        manager.save(2, {"x": torch.ones(1)})
    monkeypatch.undo()
    assert (tmp_path / "checkpoints" / "step-00000002" / STATE_FILE).exists()  # uploaded, not committed
    assert pointer(manager)["step"] == 1
    assert manager.list_committed() == [1]
    step, state = manager.load_latest()
    assert step == 1 and torch.equal(state["x"], torch.zeros(1))


def test_truncated_state_is_ignored_and_the_previous_step_loads(tmp_path, caplog):
    manager = CheckpointManager(str(tmp_path))
    manager.save(1, {"x": torch.zeros(1000)})
    manager.save(2, {"x": torch.ones(1000)})
    path = tmp_path / "checkpoints" / "step-00000002" / STATE_FILE
    path.write_bytes(path.read_bytes()[:1500])
    with caplog.at_level(logging.WARNING, logger="actiontrain.checkpoint"):
        step, state = manager.load_latest()
    assert step == 1 and torch.equal(state["x"], torch.zeros(1000))
    assert "skipping checkpoint step 2" in caplog.text and "corrupt" in caplog.text
    with pytest.raises(DataError, match=r"step-00000002/state\.pt is corrupt: 1500 bytes"):
        manager.load(2)


def test_all_checkpoints_corrupt_is_an_error_not_a_fresh_start(tmp_path):
    manager = CheckpointManager(str(tmp_path))
    manager.save(1, {"x": torch.zeros(10)})
    (tmp_path / "checkpoints" / "step-00000001" / STATE_FILE).write_bytes(b"garbage")
    with pytest.raises(DataError, match="no usable checkpoint under .*step 1: .*corrupt"):
        manager.load_latest()


@pytest.mark.parametrize("pointer_text", [None, '{"step": 1, "path": "step-00000001"}', '{"step": 7}', "not json"])
def test_missing_stale_or_dangling_pointer_falls_back_to_the_listing(tmp_path, pointer_text):
    manager = CheckpointManager(str(tmp_path))
    manager.save(1, {"x": torch.zeros(1)})
    manager.save(2, {"x": torch.ones(1)})
    storage.write_bytes(storage.join(manager.step_url(7), STATE_FILE), b"uncommitted")
    pointer_path = tmp_path / "checkpoints" / POINTER_FILE
    if pointer_text is None:
        pointer_path.unlink()
    else:
        pointer_path.write_text(pointer_text)
    step, state = CheckpointManager(str(tmp_path)).load_latest()
    assert step == 2 and torch.equal(state["x"], torch.ones(1))


def test_pickled_code_is_refused_at_load(tmp_path):
    manager = CheckpointManager(str(tmp_path))
    manager.save(1, {"x": torch.zeros(1)})
    sentinel = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    write_committed_raw(manager, 2, {"model": {}, "evil": Payload()})
    with pytest.raises(
        DataError,
        match=r"refusing to load .*step-00000002/state\.pt.*weights_only=True \(Unsupported global: GLOBAL io\.open\)",
    ):
        manager.load(2)
    step, _ = manager.load_latest()
    assert step == 1
    assert not sentinel.exists()


def test_save_refuses_what_weights_only_cannot_load(tmp_path):
    import numpy as np

    manager = CheckpointManager(str(tmp_path))
    with pytest.raises(ConfigError, match=r"state\['train_state'\]\['rng'\] is a numpy\.ndarray.*torch\.from_numpy"):
        manager.save(1, {"train_state": {"rng": np.zeros(3)}})
    with pytest.raises(ConfigError, match=r"state\['fn'\] is a builtins\.function"):
        manager.save(1, {"fn": lambda: None})
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    ("state", "message"),
    [
        pytest.param(
            {"config": {"storage": {"note": f"key={SECRET}"}}},
            r"state\['config'\]\['storage'\]\['note'\] contains the value of AWS_SECRET_ACCESS_KEY",
            id="string value",
        ),
        pytest.param(  # not visible to the walk over the state: found in the serialized bytes
            {"blob": torch.tensor(list(SECRET.encode()), dtype=torch.uint8)},
            "the serialized state contains the value of AWS_SECRET_ACCESS_KEY",
            id="inside a tensor",
        ),
        pytest.param(
            {"train_state": {"aws_secret_access_key": "x"}},
            "key 'aws_secret_access_key' that names a credential",
            id="credential key name",
        ),
        pytest.param({"train_state": {"id": "AKIAIOSFODNN7EXAMPLE"}}, "an AWS access key id", id="aws key id"),
        pytest.param({"env": dict(os.environ)}, r"state\['env'\] is os.environ", id="copy of os.environ"),
        pytest.param({"env": os.environ}, r"state\['env'\] is os.environ", id="os.environ"),
    ],
)
def test_credentials_are_refused_and_nothing_is_written(tmp_path, monkeypatch, state, message):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    if "env" in state and state["env"] is not os.environ:
        state = {"env": dict(os.environ)}  # after setenv, as a careless caller would copy it
    manager = CheckpointManager(str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=message) as raised:
        manager.save(1, state)
    assert SECRET not in str(raised.value)
    assert not (tmp_path / "run").exists()
    assert os.listdir(storage.cache_dir("tmp")) == []  # the serialized temp file is gone too
    assert manager.load_latest() is None


def test_environment_itself_is_refused_as_the_whole_state(tmp_path):
    with pytest.raises(ConfigError, match="os.environ"):
        CheckpointManager(str(tmp_path)).save(1, dict(os.environ))


def test_resaving_a_step_replaces_it(tmp_path):
    manager = CheckpointManager(str(tmp_path))
    manager.save(4, {"x": torch.zeros(1)})
    manager.save(4, {"x": torch.ones(1)})
    assert manager.list_committed() == [4]
    assert torch.equal(manager.load_latest()[1]["x"], torch.ones(1))


def test_bad_arguments_name_the_value(tmp_path):
    with pytest.raises(ConfigError, match="train.keep_last must be an integer >= 1, got 0"):
        CheckpointManager(str(tmp_path), keep_last=0)
    with pytest.raises(ConfigError, match="step must be an integer >= 0, got -1"):
        CheckpointManager(str(tmp_path)).save(-1, {})
    with pytest.raises(ConfigError, match="must be a dict, got list"):
        CheckpointManager(str(tmp_path)).save(1, [])


@pytest.mark.e2e
class TestS3:
    def test_roundtrip_and_pruning(self, s3_bucket):
        output = storage.join(s3_bucket, "runs", "x3d")
        manager = CheckpointManager(output, keep_last=2)
        state = training_state()
        for step in (100, 200, 300):
            manager.save(step, {**state, "train_state": {**state["train_state"], "step": step}}, epoch=step // 100)
        assert manager.list_committed() == [200, 300]
        assert storage.listdir(manager.root) == [POINTER_FILE, "step-00000200", "step-00000300"]
        step, loaded = CheckpointManager(output).load_latest()
        assert step == 300 and loaded["train_state"]["step"] == 300
        assert_same(loaded["optimizer"], state["optimizer"])
        assert_same(loaded["model"], state["model"])
        assert pointer(manager) == {"step": 300, "path": "step-00000300"}

    def test_killed_upload_never_moves_the_pointer(self, s3_bucket, s3_server, s3_env, tmp_path):
        import boto3

        output = storage.join(s3_bucket, "run")
        manager = CheckpointManager(output)
        manager.save(1, {"x": torch.arange(10)})
        bucket = s3_bucket.removeprefix("s3://")

        def completes_an_upload(request: Request) -> bool:  # CompleteMultipartUpload
            return request.method == "POST" and "uploadId" in request.query

        # 112 MiB: above s3fs's 100 MiB threshold, so the state goes up in parts. The gate holds
        # the request that would complete the upload: every part is stored, the object is not,
        # and the saving process is killed there, as a preempted pod dies mid-upload.
        child = textwrap.dedent(
            f"""
            import torch
            from actiontrain.checkpoint import CheckpointManager
            state = {{"model": {{f"w{{i}}": torch.full((1 << 20,), float(i)) for i in range(28)}}}}
            CheckpointManager({output!r}).save(2, state)
            """
        )
        log = tmp_path / "child.log"
        with S3Gate(s3_server.endpoint, hold=completes_an_upload) as gate, open(log, "wb") as stderr:
            env = {
                **os.environ,
                **s3_env,
                "AWS_ENDPOINT_URL": gate.endpoint,
                "ACTIONTRAIN_CACHE_DIR": str(tmp_path / "child-cache"),
            }
            process = subprocess.Popen([sys.executable, "-c", child], env=env, stderr=stderr)
            try:
                while not gate.held.wait(timeout=0.5):
                    assert process.poll() is None, f"the save ended without completing an upload: {log.read_text()}"
            finally:
                process.kill()
                process.wait()
        assert gate.errors == []
        key = gate.held_request.path.removeprefix(f"/{bucket}/")
        assert key.endswith("step-00000002/state.pt"), gate.held_request
        client = boto3.client(
            "s3",
            endpoint_url=s3_server.endpoint,
            aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
        # Killed before completing: every part is up, the upload is left open, no object is visible.
        (upload_id,) = gate.held_request.query["uploadId"]
        parts = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
        assert [part["PartNumber"] for part in parts] == [1, 2, 3]
        assert sum(part["Size"] for part in parts) > 100 << 20
        assert upload_id in {upload["UploadId"] for upload in client.list_multipart_uploads(Bucket=bucket)["Uploads"]}
        visible = client.list_objects_v2(Bucket=bucket, Prefix=key.removesuffix(STATE_FILE)).get("Contents", [])
        assert [item["Key"] for item in visible] == []  # neither the state nor a marker

        storage.url_to_fs(output)[0].invalidate_cache()  # what the killed process wrote, this one did not list
        restarted = CheckpointManager(output)
        assert restarted.list_committed() == [1]
        assert pointer(restarted) == {"step": 1, "path": "step-00000001"}
        step, state = restarted.load_latest()
        assert step == 1 and torch.equal(state["x"], torch.arange(10))
        # The restarted run saves step 2 again, and that one counts.
        restarted.save(2, {"x": torch.ones(3)})
        assert restarted.load_latest()[0] == 2


def test_load_checkpoint_takes_a_step_folder_or_a_run(tmp_path):
    from actiontrain.checkpoint import load_checkpoint

    manager = CheckpointManager(str(tmp_path / "run"), keep_last=2)
    manager.save(3, {"x": torch.zeros(1)})
    manager.save(5, {"x": torch.ones(1)})
    step, state = load_checkpoint(str(tmp_path / "run"))
    assert step == 5 and torch.equal(state["x"], torch.ones(1))
    step, state = load_checkpoint(manager.step_url(3) + "/")
    assert step == 3 and torch.equal(state["x"], torch.zeros(1))


def test_load_checkpoint_of_an_empty_run_says_where_it_looked(tmp_path):
    from actiontrain.checkpoint import load_checkpoint

    with pytest.raises(NotFoundError, match=r"no committed checkpoint under .*run/checkpoints"):
        load_checkpoint(str(tmp_path / "run"))
    with pytest.raises(NotFoundError, match="checkpoint step 9 is not committed"):
        load_checkpoint(str(tmp_path / "run" / "checkpoints" / "step-00000009"))
