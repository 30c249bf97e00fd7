"""Whole training step of the 784-256-128-10 network (relu, float32, SGD with momentum):
the step-by-step path (Trainer._compiled = False: one Python call per kernel per step)
against the compiled path (csrc/train_loop.pxi: runs of whole steps in one call), side by
side, interleaved epochs, medians; as GFLOP/s and as % of the FMA peak (bench/gemm.py's
probe) measured in the same round, right before and after its epochs. The last column is
the ceiling the GEMMs alone set: the step's eight GEMMs through NumPy's BLAS (OpenBLAS),
preallocated, in the same round, as % of the same peak: the whole step does those GEMMs
plus everything else.

FLOP per sample: forward 2·(784·256 + 256·128 + 128·10) = 469,504; weight gradients the same;
input gradients of layers 2 and 3, 2·(256·128 + 128·10) = 68,096: 1,007,104 ≈ 1.007 MFLOP
(the loss, activations, bias gradients and the update are not counted).

    flock /work/timing.lock python bench/step.py [--repeats 7] [--threads 1 2]
    flock /work/timing.lock python bench/step.py --loop 5 --threads 2   # best/median of 5 s of epochs
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pyneuro as pn                     # noqa: E402
from pyneuro import _core                # noqa: E402
from gemm import SETTLE_SECONDS, calibrate, flops, mlp_step, peak_probe, run_numpy, sample, wake_blas   # noqa: E402

WIDTHS = (784, 256, 128, 10)
FLOP_PER_SAMPLE = 2 * sum(a * b for a, b in zip(WIDTHS, WIDTHS[1:])) * 2 + 2 * sum(
    a * b for a, b in zip(WIDTHS[1:], WIDTHS[2:]))
BATCHES = {32: 300, 128: 100, 512: 30}   # batch → steps per timed epoch (~0.1–0.4 s each)


def trainer(batch, compiled=True, optimizer=None):
    """A Trainer of the 784-256-128-10 network (SGD with momentum unless `optimizer`)."""
    model = pn.Sequential([pn.Dense(784, 256, "relu"), pn.Dense(256, 128, "relu"), pn.Dense(128, 10)], seed=0)
    t = pn.Trainer(model, "cross_entropy", optimizer or pn.SGD(0.01, momentum=0.9), batch_size=batch,
                   seed=0, verbose=0)
    t._compiled = compiled
    return t


def step_args(doc, script):
    """--repeats and --threads of a training-step benchmark, and threadpoolctl's
    threadpool_limits (to hold NumPy's BLAS to the same threads)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--loop", type=float, default=0, metavar="SECONDS",
                    help="instead: the compiled path alone, epochs for SECONDS per configuration, "
                         "each after a peak probe; best and median (a calm minute shows in the best)")
    return ap.parse_args(), blas_limits(script)


def blas_limits(script):
    """threadpoolctl's threadpool_limits, NumPy's BLAS woken through it (or exit: `script`
    needs it)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        sys.exit(f"bench/{script} needs threadpoolctl: pip install '.[bench]'")
    wake_blas(threadpool_limits)
    return threadpool_limits


def configurations(threads, rng):
    """(threads, peak probe, batch, steps, X, y) for every thread count and batch size, the
    kernels set to that thread count; random data for `steps` batches."""
    for nt in threads:
        _core.set_num_threads(nt)
        probe = peak_probe(np.float32)
        for batch, steps in BATCHES.items():
            yield (nt, probe, batch, steps, rng.random((batch * steps, 784), dtype=np.float32),
                   rng.integers(0, 10, batch * steps))
    _core.set_num_threads(None)


def loop(args):
    """--loop: epochs of the compiled path for args.loop seconds per (threads, batch), the peak
    probed before each: the fewest µs/step and the highest % of the epoch's own probe, and
    the medians of both."""
    rng = np.random.default_rng(0)
    print(f"{'threads':>7} {'batch':>5} {'epochs':>6} {'best µs/step':>12} {'best % peak':>11} "
          f"{'median µs/step':>14} {'median % peak':>13}")
    for nt, probe, batch, steps, X, y in configurations(args.threads, rng):
        t, runs, start = trainer(batch), [], time.perf_counter()
        t.fit(X, y, epochs=1)                                   # warm-up
        while time.perf_counter() - start < args.loop:
            peak = probe()
            t.fit(X, y, epochs=1)
            step = t.history["time"][-1] / steps
            runs.append((step, 100 * FLOP_PER_SAMPLE * batch / step / 1e9 / peak))
        us, pct = [1e6 * r[0] for r in runs], [r[1] for r in runs]
        print(f"{nt:>7} {batch:>5} {len(runs):>6} {min(us):>12.1f} {max(pct):>10.1f}% "
              f"{statistics.median(us):>14.1f} {statistics.median(pct):>12.1f}%", flush=True)


def main():
    args, threadpool_limits = step_args(__doc__, "step.py")
    if args.loop > 0:
        return loop(args)
    rng = np.random.default_rng(0)
    print(f"FLOP per sample: {FLOP_PER_SAMPLE:,} ({FLOP_PER_SAMPLE / 1e6:.3f} MFLOP); medians of "
          f"{args.repeats} rounds, each: peak probe, OpenBLAS GEMMs, both paths' epochs, peak probe")
    print(f"{'threads':>7} {'batch':>5} {'peak GF/s':>9} {'old µs/step':>11} {'new µs/step':>11} {'new/old':>7} "
          f"{'old % peak':>10} {'new % peak':>10} {'OpenBLAS GEMMs % peak':>21}")
    compiled_time = {}
    for nt, probe, batch, steps, X, y in configurations(args.threads, rng):
        gemms = mlp_step(batch, np.float32, rng)
        assert flops(gemms) == FLOP_PER_SAMPLE * batch
        runs = {False: trainer(batch, False), True: trainer(batch, True)}
        times, peaks, blas = {False: [], True: []}, [], []
        with threadpool_limits(limits=nt):
            calls = calibrate(run_numpy, gemms)
            for r in range(args.repeats + 1):
                before = probe()
                blas.append(sample(run_numpy, gemms, calls))
                time.sleep(SETTLE_SECONDS)       # OpenBLAS's idle workers stop spinning
                for compiled, t in runs.items():
                    t.fit(X, y, epochs=1)
                    times[compiled].append(t.history["time"][-1] / steps)
                peaks.append(max(before, probe()))   # a slow phase only lowers the probe
        # % of the round's peak, medians over rounds (the first round warms up)
        pct = {k: statistics.median(100 * FLOP_PER_SAMPLE * batch / s / 1e9 / p
                                    for s, p in zip(v[1:], peaks[1:]))
               for k, v in (("old", times[False]), ("new", times[True]), ("blas", blas))}
        old, new = statistics.median(times[False][1:]), statistics.median(times[True][1:])
        compiled_time[nt, batch] = new
        print(f"{nt:>7} {batch:>5} {statistics.median(peaks[1:]):>9.1f} {old * 1e6:>11.1f} "
              f"{new * 1e6:>11.1f} {old / new:>6.2f}x {pct['old']:>9.1f}% {pct['new']:>9.1f}% "
              f"{pct['blas']:>20.1f}%", flush=True)
    one = min(args.threads)
    for nt in args.threads:
        if nt != one:
            print(f"compiled path, {nt} threads against {one}: " + ", ".join(
                f"batch {batch} {compiled_time[one, batch] / compiled_time[nt, batch]:.2f}x" for batch in BATCHES))


if __name__ == "__main__":
    main()
