"""Recovery time of an elastic job: SIGKILL of a worker to the next optimizer step, SIGTERM to a committed checkpoint.

Runs ``actiontrain launch --nproc-per-node 2 train --config cpu_smoke`` on a synthetic UCF101-layout
dataset in S3 on loopback (moto's server in its own process), waits for a committed checkpoint and
steady training, then:

- **kill**: SIGKILLs rank 1 (as a crash or the OOM killer would) ``--kills`` times in a row and
  measures the seconds to the first optimizer step after each restart, broken down into
  detection (kill to torchrun's "will restart worker group"), restart (stopping the survivors,
  the next rendezvous round and the new processes' exec), then the new rank 0's own start-up
  phases as the trainer logs them ("start-up took ..."): imports, process group, dataset load,
  model, checkpoint load, other, first batch, first step;
- **term**: sends SIGTERM to the launch (what the kubelet sends a pod) and measures the seconds
  to the committed checkpoint, broken down into finishing the step under way (SIGTERM to "stop
  agreed"), writing the checkpoint, and the exit.

Times are when each line of the job's log reached this process (a reader thread stamps them), so
they include nothing of this script's own work. Medians over the kills. The last line is JSON.
Run it on an otherwise idle machine: the load average is printed, and the figures scale with it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from actiontrain.data.synth import synthesize
from actiontrain.embedded_s3 import EmbeddedS3

TARGET_KILL_TO_STEP_S = 20.0
"""The issue's target on this machine (2 cores), kill to the first step after the restart."""

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The job runs ``python -m actiontrain`` from here: this checkout's package, not an installed one."""
_STARTUP = re.compile(r"start-up took ([\d.]+) s: (.*)$")
_PHASE = re.compile(r"([a-z ]+) ([\d.]+) s")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs in a row, one per restart (default 3)")
    parser.add_argument("--videos-per-class", type=int, default=6, help="synthetic videos per class, 3 classes (default 6)")
    parser.add_argument("--nproc", type=int, default=2, help="training processes (default 2)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for any one event (default 300)")
    parser.add_argument("--log", default="", help="also write the job's whole log here")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.nproc < 2 or args.videos_per_class < 3:
        parser.error("--kills must be >= 1, --nproc >= 2 and --videos-per-class >= 3")
    return args


@dataclass
class JobLog:
    """The job's output lines, each with the time it arrived."""

    process: subprocess.Popen
    lines: list[tuple[float, str]] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)
    """Set once the job's output ended (it exited)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self._lock:
                self.lines.append((time.time(), line.rstrip("\n")))
        self.ended.set()

    def wait_for(self, pattern: str, *, after: float, timeout: float) -> tuple[float, str]:
        """The first line matching ``pattern`` that arrived after ``after``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = next(((t, line) for t, line in self.lines if t >= after and regex.search(line)), None)
            if found:
                return found
            if self.ended.is_set():
                break
            time.sleep(0.05)
        with self._lock:
            tail = "\n".join(line for _, line in self.lines[-40:])
        why = f"the job exited ({self.process.poll()})" if self.ended.is_set() else f"within {timeout:.0f} s"
        raise RuntimeError(f"no line matching {pattern!r}: {why}; the job's log ends:\n{tail}")

    def text(self) -> str:
        with self._lock:
            return "\n".join(f"{t:.3f} {line}" for t, line in self.lines)


def _worker_pid(ledger: str, *, restart: int, rank: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = glob.glob(os.path.join(ledger, f"bench.{restart}.*.rank{rank}.pid*.log"))
        if found:
            return int(found[0].rsplit(".pid", 1)[1][:-4])
        time.sleep(0.05)
    raise RuntimeError(f"no ledger of rank {rank} in incarnation {restart}")


def _startup_phases(line: str) -> tuple[float, dict[str, float]]:
    match = _STARTUP.search(line)
    assert match, line
    return float(match.group(1)), {name.strip(): float(value) for name, value in _PHASE.findall(match.group(2))}


def measure_kill(job: JobLog, ledger: str, *, restart: int, since: float, timeout: float) -> dict[str, float]:
    """SIGKILLs rank 1 of incarnation ``restart`` once a step was logged after ``since``; the recovery's breakdown."""
    victim = _worker_pid(ledger, restart=restart, rank=1, timeout=timeout)
    job.wait_for(r"INFO step \d+ ", after=since, timeout=timeout)
    killed = time.time()
    os.kill(victim, signal.SIGKILL)
    detected, _ = job.wait_for(r"will restart worker group", after=killed, timeout=timeout)
    arrived, line = job.wait_for(r"start-up took ", after=killed, timeout=timeout)
    total, phases = _startup_phases(line)
    started = arrived - total  # the new rank 0's exec
    breakdown = {"detection": detected - killed, "restart": started - detected, **phases}
    return {"kill_to_step": arrived - killed, **breakdown, "_arrived": arrived}


def measure_term(job: JobLog, *, timeout: float) -> dict[str, float]:
    """SIGTERM to the launch in steady training; the breakdown up to its exit."""
    since = job.lines[-1][0]
    job.wait_for(r"INFO step \d+ ", after=since, timeout=timeout)
    signalled = time.time()
    job.process.send_signal(signal.SIGTERM)
    agreed, _ = job.wait_for(r"stop agreed after step", after=signalled, timeout=timeout)
    committed, _ = job.wait_for(r"INFO checkpoint .*step-\d+ \(", after=agreed, timeout=timeout)
    job.process.wait(timeout=timeout)
    exited = time.time()
    return {
        "term_to_checkpoint": committed - signalled,
        "term_to_exit": exited - signalled,
        "finish step": agreed - signalled,
        "write checkpoint": committed - agreed,
        "exit": exited - committed,
        "exit_code": job.process.returncode,
    }


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = list(dict.fromkeys(key for run in runs for key in run))
    return {key: round(statistics.median(run.get(key, 0.0) for run in runs), 2) for key in keys}


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} cores" + ("  (busy: figures will be slower)" if load > 1 else ""))
    with tempfile.TemporaryDirectory(prefix="actiontrain-recovery-") as scratch, EmbeddedS3(separate_process=True) as s3:
        with s3.environment():
            bucket = s3.create_bucket("recovery")
            data, output, ledger = f"{bucket}/ucf", f"{bucket}/run", os.path.join(scratch, "ledger")
            synthesize(data, format="ucf101", num_classes=3, videos_per_class=args.videos_per_class, num_frames=(12, 16))
            env = {**os.environ, "LOGLEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
            env.pop("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", None)  # launch sets it
        env |= s3.env
        command = [
            sys.executable, "-m", "actiontrain", "launch", "--nproc-per-node", str(args.nproc), "--max-restarts", str(args.kills),
            "--rdzv-id", "bench", "train", "--config", "cpu_smoke", "--data", data, "--output", output,
            "train.epochs=1000", "train.eval_every=0", "train.log_every=1", f"train.sample_log={ledger}",
        ]  # fmt: skip
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        job = JobLog(process)
        kills = []
        try:
            # A committed checkpoint first (each epoch's end), so that every restart loads one.
            since, _ = job.wait_for(r"INFO checkpoint ", after=0, timeout=args.timeout)
            for restart in range(args.kills):
                kill = measure_kill(job, ledger, restart=restart, since=since, timeout=args.timeout)
                since = kill.pop("_arrived")
                kills.append(kill)
                print(f"kill {restart + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in kill.items()))
            term = measure_term(job, timeout=args.timeout)
            print("SIGTERM: " + ", ".join(f"{k} {v:.1f}" for k, v in term.items()))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if args.log:
                with open(args.log, "w", encoding="utf-8") as file:
                    file.write(job.text())
    kill = _median(kills)
    parts = {k: v for k, v in kill.items() if k != "kill_to_step"}
    largest = sorted(parts, key=parts.get, reverse=True)[:3]
    print(f"kill to first step: {kill['kill_to_step']:.1f} s (target <= {TARGET_KILL_TO_STEP_S:.0f} s); "
          f"largest parts: {', '.join(f'{k} {parts[k]:.1f} s' for k in largest)}")  # fmt: skip
    print(f"SIGTERM to committed checkpoint: {term['term_to_checkpoint']:.1f} s, to exit {term['term_to_exit']:.1f} s")
    result = {
        "kill_to_step_s": kill["kill_to_step"],
        "kill_breakdown_s": parts,
        "kills": len(kills),
        "term_to_checkpoint_s": round(term["term_to_checkpoint"], 2),
        "term_to_exit_s": round(term["term_to_exit"], 2),
        "term_breakdown_s": {k: round(v, 2) for k, v in term.items() if k not in ("term_to_checkpoint", "term_to_exit", "exit_code")},
        "term_exit_code": term["exit_code"],
        "target_kill_to_step_s": TARGET_KILL_TO_STEP_S,
        "meets_target": kill["kill_to_step"] <= TARGET_KILL_TO_STEP_S,
        "load_average": round(load, 2),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
