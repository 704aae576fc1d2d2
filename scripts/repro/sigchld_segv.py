"""OpenVINO's CPU plugin leaves the main thread's sigaltstack on freed memory; the next signal kills Python.

Run from the repository root with the project's venv (a few seconds a run on 2 cores):

    .venv/bin/python scripts/repro/sigchld_segv.py              # one run: exit status 139 (SIGSEGV)
    .venv/bin/python scripts/repro/sigchld_segv.py --repeat 10  # 10 runs in subprocesses, tallied
    strace -f -e trace=sigaltstack,munmap -e signal=SIGCHLD,SIGSEGV .venv/bin/python scripts/repro/sigchld_segv.py

What it does, as the crashing pytest run did (a DataLoader test, then a test holding a Model API
wrapper and a ``Predictor`` at once, then a test that starts a subprocess):

1. iterates a torch DataLoader with two workers, which installs torch's SIGCHLD handler
   (``torch.utils.data._utils.signal_handling``) and leaves it; CPython installs every
   Python-level handler with ``SA_ONSTACK``;
2. compiles two models for CPU, each through its own ``ov.Core`` (as
   ``actiontrain.export.convert.compile_model`` does on every call): each Core makes its own CPU
   plugin, whose constructor (``ov::intel_cpu::SigAltStackSetup``, for AMX) mmaps an
   ``AT_MINSIGSTKSZ + SIGSTKSZ`` byte stack and makes it the calling thread's sigaltstack,
   saving the previous one;
3. releases them in creation order. The first plugin's destructor sees that its stack is no
   longer current, so it does not restore, but it still munmaps it; the second restores the stack
   it saved, which is the first one's, now unmapped;
4. starts and reaps children one by one. When a child's SIGCHLD is delivered to the main thread
   (usually the first; sometimes another thread takes it), the handler runs on the alternate
   stack; the kernel cannot write the signal frame there and kills the process with SIGSEGV,
   ``si_code=SI_KERNEL``. Had another mapping reused those pages, the frame would be written over
   it instead (no crash, silent corruption): each run prints whether the stack is mapped.

Measured (OpenVINO 2026.4, torch 2.14, Linux 6.18, AVX2 CPU without AVX-512): 23/23 runs killed;
with --faulthandler 10/10; --loader-context forkserver or spawn 10/10; --lifo, --shared-core,
--fresh-altstack, --no-loader 0/10 each; --no-loader --signal int 10/10.

Options remove one ingredient each: ``--lifo`` (release in reverse order), ``--shared-core``
(one Core, one plugin), ``--fresh-altstack`` (install a valid alternate stack after step 3),
``--no-loader`` (SIGCHLD keeps its default, ignored disposition), ``--signal int`` (Ctrl-C
instead of a child's exit); ``--faulthandler`` (as pytest runs) and ``--loader-context
forkserver`` (or ``spawn``) change nothing: the crash needs neither faulthandler nor forked
workers, only a Python-level handler (always ``SA_ONSTACK``) and the dangling alternate stack.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import os
import signal
import subprocess
import sys


class _StackT(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
_FRESH_STACK = ctypes.create_string_buffer(64 * 1024)  # kept alive for the whole run


def alt_stack() -> tuple[int, int]:
    """The calling thread's sigaltstack: (address, size); (0, 0) when disabled."""
    current = _StackT()
    if _libc.sigaltstack(None, ctypes.byref(current)) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack")
    return (current.ss_sp or 0, current.ss_size) if not current.ss_flags & 2 else (0, 0)


def mapping_of(address: int) -> str | None:
    """The /proc/self/maps line that contains ``address``, or None when it is unmapped."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            start, end = (int(part, 16) for part in line.split()[0].split("-"))
            if start <= address < end:
                return line.strip()
    return None


def describe_alt_stack(when: str) -> None:
    address, size = alt_stack()
    if not address:
        state = "disabled"
    else:
        line = mapping_of(address)
        state = f"{address:#x} ({size} bytes): " + (f"mapped [{line}]" if line else "UNMAPPED")
    print(f"{when:<28} main thread's sigaltstack {state}", flush=True)


def use_a_multi_worker_loader(context: str | None) -> None:
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(torch.arange(8), batch_size=2, num_workers=2, multiprocessing_context=context)
    batches = list(loader)  # the workers have exited when this returns; the handler stays
    assert len(batches) == 4
    print(f"DataLoader done: SIGCHLD handler {signal.getsignal(signal.SIGCHLD)}", flush=True)


def tiny_model():
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 8], np.float32, name="x")
    return ov.Model([ops.relu(x)], [x], "tiny")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lifo", action="store_true", help="release the compiled models newest first")
    parser.add_argument("--shared-core", action="store_true", help="compile both with one ov.Core")
    parser.add_argument("--fresh-altstack", action="store_true", help="install a valid alt stack before the signal")
    parser.add_argument("--no-loader", action="store_true", help="skip the DataLoader (SIGCHLD stays SIG_DFL)")
    parser.add_argument("--signal", choices=["chld", "int"], default="chld", help="child exit, or SIGINT to self")
    parser.add_argument("--loader-context", choices=["fork", "forkserver", "spawn"], help="the workers' start method")
    parser.add_argument("--children", type=int, default=20, help="children to start and reap one by one")
    parser.add_argument("--faulthandler", action="store_true", help="enable faulthandler first, as pytest does")
    parser.add_argument("--repeat", type=int, default=0, help="run N times in subprocesses and tally")
    args = parser.parse_args()

    if args.repeat:
        flags = ("lifo", "shared_core", "fresh_altstack", "no_loader", "faulthandler")
        argv = [f"--{flag.replace('_', '-')}" for flag in flags if getattr(args, flag)]
        argv += ["--signal", args.signal, "--children", str(args.children)]
        argv += ["--loader-context", args.loader_context] if args.loader_context else []
        codes = []
        for _ in range(args.repeat):
            run = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, check=False)
            codes.append(run.returncode)
            states = [line[28:] for line in run.stdout.splitlines() if line.startswith(("released", "children reaped"))]
            reaped = sum(line.startswith("starting") for line in run.stdout.splitlines())
            print(f"exit {run.returncode:>4} at child {reaped}:" + ";".join(states), flush=True)
        crashes = sum(code == -signal.SIGSEGV for code in codes)
        print(f"{crashes}/{len(codes)} runs killed by SIGSEGV")
        return 0

    import openvino as ov

    if args.faulthandler:
        faulthandler.enable()
    if not args.no_loader:
        use_a_multi_worker_loader(args.loader_context)
    describe_alt_stack("before OpenVINO:")
    core = ov.Core() if args.shared_core else None
    first = (core or ov.Core()).compile_model(tiny_model(), "CPU")
    describe_alt_stack("first model compiled:")
    second = (core or ov.Core()).compile_model(tiny_model(), "CPU")
    describe_alt_stack("second model compiled:")
    del core
    if args.lifo:
        del second, first
    else:
        del first, second
    describe_alt_stack("released both:")
    if args.fresh_altstack:
        fresh = _StackT(ctypes.cast(_FRESH_STACK, ctypes.c_void_p).value, 0, len(_FRESH_STACK))
        _libc.sigaltstack(ctypes.byref(fresh), None)
        describe_alt_stack("fresh alt stack installed:")

    if args.signal == "chld":
        # The kernel sends a child's SIGCHLD to its parent's thread group: most times the main thread
        # takes it, sometimes one of OpenVINO's or torch's threads (no alternate stack there).
        for child in range(1, args.children + 1):
            print(f"starting and reaping child {child}...", flush=True)
            subprocess.run(["true"], check=True)
        describe_alt_stack("children reaped:")
    else:
        print("sending SIGINT to self...", flush=True)
        try:
            os.kill(os.getpid(), signal.SIGINT)
            signal.sigtimedwait([], 0.1)  # let the handler run
        except KeyboardInterrupt:
            print("KeyboardInterrupt raised normally")
    print("survived")
    return 0


if __name__ == "__main__":
    sys.exit(main())
