"""A busy core: the compiled training step of the 784-256-128-10 network (relu, float32, SGD
with momentum) on 1 thread, on every core, and on every core while another process keeps the
last core busy; the step's eight GEMMs through OpenBLAS the same three ways, for comparison.

A training team meets at a barrier after each phase of a step (csrc/train_loop.pxi), so it
goes at the pace of its slowest thread. When the scheduler shares one of its cores with other
work (a busy thread of the application, another tenant of a virtual machine), that thread
runs only part of the time and the whole team waits for it: the step can then be slower on
every core than on one. The last column of each half is that ratio (above 1: the busy core
costs more than it brings).

    flock /work/timing.lock python bench/busy_core.py [--repeats 5]
"""
import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pyneuro import _core                # noqa: E402
from gemm import SETTLE_SECONDS, calibrate, mlp_step, run_numpy, sample   # noqa: E402
from step import BATCHES, blas_limits, trainer   # noqa: E402

SPIN = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


class BusyCore:
    """While open, a process spinning on core `cpu` (pinned there)."""

    def __init__(self, cpu):
        self.cpu = cpu

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", SPIN, str(self.cpu)])
        time.sleep(0.2)                  # started and pinned
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=5, help="epochs a sample (their median)")
    args = ap.parse_args()
    if args.repeats < 1 or args.epochs < 1:
        ap.error(f"--repeats and --epochs must be >= 1, got {args.repeats} and {args.epochs}")
    if not hasattr(os, "sched_getaffinity"):
        sys.exit("bench/busy_core.py pins a process to a core: it needs os.sched_setaffinity (Linux)")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit(f"bench/busy_core.py needs at least 2 cores, this process may use {len(cpus)}")
    threadpool_limits = blas_limits("busy_core.py")
    n = len(cpus)
    configs = [(1, False), (n, False), (n, True)]
    rng = np.random.default_rng(0)
    print(f"medians of {args.repeats} rounds; µs per step; the busy process spins on core {cpus[-1]}")
    print(f"{'batch':>5} | {'pyneuro: 1 thread':>17} {f'{n} threads':>10} {f'{n}, one busy':>12} "
          f"{'busy/1':>6} | {'OpenBLAS GEMMs: 1':>17} {f'{n} threads':>10} {f'{n}, one busy':>12} {'busy/1':>6}")
    for batch, steps in BATCHES.items():
        X = rng.random((batch * steps, 784), dtype=np.float32)
        y = rng.integers(0, 10, batch * steps)
        t, gemms = trainer(batch), mlp_step(batch, np.float32, rng)
        ours, blas = {c: [] for c in configs}, {c: [] for c in configs}
        for _ in range(args.repeats + 1):
            for nt, busy in configs:
                _core.set_num_threads(nt)
                with threadpool_limits(limits=nt), (BusyCore(cpus[-1]) if busy else contextlib.nullcontext()):
                    t.fit(X, y, epochs=args.epochs)
                    ours[nt, busy].append(statistics.median(t.history["time"][-args.epochs:]) / steps)
                    time.sleep(SETTLE_SECONDS)       # the team's idle threads stop spinning
                    blas[nt, busy].append(sample(run_numpy, gemms, calibrate(run_numpy, gemms)))
                    time.sleep(SETTLE_SECONDS)       # OpenBLAS's idle workers stop spinning
        _core.set_num_threads(None)
        cells = []
        for times in (ours, blas):
            med = [1e6 * statistics.median(times[c][1:]) for c in configs]   # the first round warms up
            cells.append(f"{med[0]:>17.1f} {med[1]:>10.1f} {med[2]:>12.1f} {med[2] / med[0]:>5.2f}x")
        print(f"{batch:>5} | {cells[0]} | {cells[1]}", flush=True)


if __name__ == "__main__":
    main()
