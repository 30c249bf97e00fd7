"""GEMM speed: pyneuro's own GEMM against numpy.matmul (its BLAS) and the machine's peak.

    python bench/gemm.py                 # threads 1 and 2, median of 9
    python bench/gemm.py --threads 1,2,4 --repeats 9
    python bench/gemm.py --per-op --cases MLP,1024   # each MLP-step GEMM on its own row

Prints one table: case, dtype, threads, GFLOP/s of pyneuro and of NumPy (medians),
the median of their side-by-side ratios, and each as % of the peak measured here
by `_core.fma_probe` (the micro-kernel's FMA mix with no memory traffic). Samples
of the two libraries alternate, so both see the same machine state; a sample
repeats a call until it lasts ≥ 20 ms (after as many untimed calls).
Before each sample the script waits 0.3 s: a BLAS's idle worker threads spin
for a while after a call, and on a machine with few cores they would otherwise
steal time from the other library.

Cases: square products (1024³ float32 and float64, 256³ and 257³ for the edge
tiles) and one training step of a 784-256-128-10 MLP per batch size, i.e. its
eight GEMMs summed: forward X·W (3), backward Xᵀ·δ (3) and δ·Wᵀ (2); with --per-op each
of the eight also gets its own row (named like "MLP b=512 X1ᵀ·D1": layer 1's Xᵀ·δ).
--cases keeps only the cases whose name contains one of the given strings.
Needs threadpoolctl (pip install ".[bench]") to hold NumPy's BLAS to the same
thread count.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

from pyneuro import _core

MLP = (784, 256, 128, 10)
SAMPLE_SECONDS = 0.02
SETTLE_SECONDS = 0.3   # pause before each sample: the other library's idle workers stop spinning


def square(n, dtype, rng):
    """One product op(A)·op(B) as (trans_a, trans_b, A, B, C)."""
    A, B = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    return [(False, False, A, B, np.empty((n, n), dtype))]


def mlp_step(batch, dtype, rng, widths=MLP):
    """The GEMMs of one forward + backward pass of a Dense MLP (no input gradient for layer 1)."""
    acts = [rng.standard_normal((batch, w)).astype(dtype) for w in widths]
    weights = [rng.standard_normal((a, b)).astype(dtype) for a, b in zip(widths, widths[1:])]
    deltas = [rng.standard_normal((batch, w)).astype(dtype) for w in widths[1:]]
    ops = [(False, False, X, W, np.empty((batch, W.shape[1]), dtype)) for X, W in zip(acts, weights)]
    ops += [(True, False, X, D, np.empty(W.shape, dtype)) for X, D, W in zip(acts, deltas, weights)]
    ops += [(False, True, D, W, np.empty((batch, W.shape[0]), dtype))
            for D, W in list(zip(deltas, weights))[1:]]
    return ops


OP_NAMES = ["X1·W1", "X2·W2", "X3·W3", "X1ᵀ·D1", "X2ᵀ·D2", "X3ᵀ·D3", "D2·W2ᵀ", "D3·W3ᵀ"]   # mlp_step's order


def per_op_cases(batches=(32, 128, 512)):
    """One case per GEMM of mlp_step, for each batch size."""
    return [(f"MLP b={b} {name}", np.float32, lambda dt, rng, b=b, i=i: mlp_step(b, dt, rng)[i:i + 1])
            for b in batches for i, name in enumerate(OP_NAMES)]


def flops(ops):
    return sum(2.0 * C.shape[0] * C.shape[1] * (A.shape[0] if ta else A.shape[1])
               for ta, _, A, _, C in ops)


def run_pyneuro(ops):
    for ta, tb, A, B, C in ops:
        _core.gemm_into(A, B, C, trans_a=ta, trans_b=tb)


def run_numpy(ops):
    for ta, tb, A, B, C in ops:
        np.matmul(A.T if ta else A, B.T if tb else B, out=C)


def calibrate(fn, arg):
    """Calls per sample so that one sample lasts at least SAMPLE_SECONDS."""
    fn(arg)
    t = time.perf_counter()
    fn(arg)
    once = max(time.perf_counter() - t, 1e-7)
    return max(1, int(np.ceil(SAMPLE_SECONDS / once)))


def sample(fn, arg, calls):
    """Seconds per call over `calls` calls, after as many untimed ones to warm up."""
    for _ in range(calls):
        fn(arg)
    t = time.perf_counter()
    for _ in range(calls):
        fn(arg)
    return (time.perf_counter() - t) / calls


def paired_medians(ops, repeats):
    """Median seconds per call of pyneuro and of NumPy, and the median of the ratios
    NumPy/pyneuro of samples taken side by side (in alternating order): a slow phase
    of the machine that spans a pair cancels out of its ratio."""
    calls = {f: calibrate(f, ops) for f in (run_pyneuro, run_numpy)}
    times = {f: [] for f in calls}
    for r in range(repeats):
        for f in (list(calls) if r % 2 == 0 else list(calls)[::-1]):
            time.sleep(SETTLE_SECONDS)
            times[f].append(sample(f, ops, calls[f]))
    ours, theirs = times[run_pyneuro], times[run_numpy]
    return (statistics.median(ours), statistics.median(theirs),
            statistics.median(t / o for o, t in zip(ours, theirs)))


def peak_probe(dtype):
    """A function returning GFLOP/s of one ~50 ms run of the FMA probe on the kernels' threads."""
    n = 1 << 16
    while True:
        t = time.perf_counter()
        _core.fma_probe(n, dtype)
        if time.perf_counter() - t > 0.05:
            break
        n *= 2

    def rate():
        t = time.perf_counter()
        done = _core.fma_probe(n, dtype)
        return done / (time.perf_counter() - t) / 1e9
    return rate


def peak_gflops(dtype, repeats):
    """GFLOP/s of the FMA probe, median of `repeats` runs of ~50 ms."""
    rate = peak_probe(dtype)
    return statistics.median(rate() for _ in range(repeats))


CASES = [
    ("1024³", np.float32, lambda dt, rng: square(1024, dt, rng)),
    ("1024³", np.float64, lambda dt, rng: square(1024, dt, rng)),
    ("256³", np.float32, lambda dt, rng: square(256, dt, rng)),
    ("257³", np.float32, lambda dt, rng: square(257, dt, rng)),
    ("MLP step b=32", np.float32, lambda dt, rng: mlp_step(32, dt, rng)),
    ("MLP step b=128", np.float32, lambda dt, rng: mlp_step(128, dt, rng)),
    ("MLP step b=512", np.float32, lambda dt, rng: mlp_step(512, dt, rng)),
]


def wake_blas(threadpool_limits):
    """One 256³ product on all of NumPy's BLAS threads, before anything is timed. OpenBLAS
    0.3.31 (NumPy 2.4's wheel) runs a product like 512×784 · 784×256 at a third of its speed
    on one thread in a fresh process until one call has used its other threads (measured
    here: 18.3 → 6.2 ms; a 64³ product, which it keeps on one thread, does not wake it), so
    one-thread figures taken first would flatter pyneuro."""
    with threadpool_limits(limits=os.cpu_count()):
        a = np.ones((256, 256), np.float32)
        np.matmul(a, a)


def bench_args(doc, script, argv=None, extra=()):
    """--threads and --repeats of a benchmark, and threadpoolctl's threadpool_limits (which
    holds NumPy's BLAS to the same thread count): (thread counts, repeats, threadpool_limits,
    all the parsed arguments)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--repeats", type=int, default=9, help="samples per case, median quoted (>= 5)")
    for flag, options in extra:    # the script's own flags
        parser.add_argument(flag, **options)
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5, got {args.repeats}")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        sys.exit(f"bench/{script} needs threadpoolctl: pip install '.[bench]'")
    wake_blas(threadpool_limits)
    return [int(t) for t in args.threads.split(",")], args.repeats, threadpool_limits, args


def main(argv=None):
    threads, repeats, threadpool_limits, args = bench_args(__doc__, "gemm.py", argv, [
        ("--per-op", {"action": "store_true", "help": "also time each MLP-step GEMM on its own"}),
        ("--cases", {"default": "", "help": "comma-separated substrings: keep only matching cases"})])
    cases = CASES + (per_op_cases() if args.per_op else [])
    if args.cases:
        keep = args.cases.split(",")
        cases = [c for c in cases if any(k in c[0] for k in keep)]

    print(f"pyneuro micro-kernel: {_core.gemm_kernel()}; NumPy {np.__version__}")
    rows, speed = [], {}
    for nt in threads:
        _core.set_num_threads(nt)
        with threadpool_limits(limits=nt):
            peak = {dt: peak_gflops(dt, repeats) for dt in (np.float32, np.float64)}
            print(f"peak ({nt} thread{'s' * (nt > 1)}): float32 {peak[np.float32]:.1f} GFLOP/s, "
                  f"float64 {peak[np.float64]:.1f} GFLOP/s")
            for name, dtype, make in cases:
                ops = make(dtype, np.random.default_rng(0))
                t_ours, t_numpy, ratio = paired_medians(ops, repeats)
                ours, theirs = flops(ops) / t_ours / 1e9, flops(ops) / t_numpy / 1e9
                speed[name, dtype, nt] = ours
                rows.append((name, np.dtype(dtype).name, nt, ours, theirs, ratio,
                             100 * ours / peak[dtype], 100 * theirs / peak[dtype]))
    _core.set_num_threads(None)

    head = ("case", "dtype", "threads", "pyneuro GFLOP/s", "NumPy GFLOP/s", "ratio",
            "pyneuro % peak", "NumPy % peak")
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.2f} | {r[6]:.0f}% | {r[7]:.0f}% |")
    for nt in threads:
        if ("257³", np.float32, nt) in speed and ("256³", np.float32, nt) in speed:
            edge = speed["257³", np.float32, nt] / speed["256³", np.float32, nt]
            print(f"\nedge tiles, {nt} thread(s): 257³ runs at {edge:.2f}× the GFLOP/s of 256³")


if __name__ == "__main__":
    main()
