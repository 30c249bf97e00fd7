"""pyneuro's compiled training step against a tight NumPy step of the same network.

    flock /work/timing.lock python bench/numpy_step.py [--repeats 7] [--threads 1 2]

Network 784-256-128-10 ReLU, softmax cross-entropy, float32, SGD with momentum 0.9 and
Adam, batches 32, 128 and 512. The NumPy step is what a careful NumPy user writes: every
array preallocated, every operation with out=, the GEMMs through NumPy's BLAS (held to the
same thread count by threadpoolctl), the gather by np.take, the ReLU masks as preallocated
booleans:

    forward   Z_l = A_{l−1}·W_l + b_l,  A_l = max(Z_l, 0),  P = softmax(Z_3)
    backward  D_3 = (P − onehot(y)) / B,  ∂W_l = A_{l−1}ᵀ·D_l,  ∂b_l = Σ_rows D_l,
              D_{l−1} = (D_l·W_lᵀ) ⊙ [Z_{l−1} > 0]
    SGD       v = μv + g,  w −= η·v
    Adam      m = β₁m + (1−β₁)g,  v = β₂v + (1−β₂)g²,  w −= η·(m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε)

Both run whole shuffled epochs (pyneuro: Trainer.fit, its compiled loop), taking turns;
the ratio is the median over rounds of NumPy's time per step / pyneuro's. Each round also
times the step's eight GEMMs alone through OpenBLAS (the floor under NumPy's step: its
"GEMMs" column) and probes the FMA peak, for two more columns: pyneuro's step in % of the
peak (step.FLOP_PER_SAMPLE a sample), and the % of the peak a step 1.3× faster than
NumPy's would have to run at: FLOPs / (peak · NumPy's time / 1.3).
"""
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pyneuro as pn                     # noqa: E402
from pyneuro import _core                # noqa: E402
import step                              # noqa: E402
from gemm import SETTLE_SECONDS, calibrate, mlp_step, peak_probe, run_numpy, sample   # noqa: E402

WIDTHS = (784, 256, 128, 10)
STEPS = {32: 300, 128: 100, 512: 30}     # steps per timed epoch


class NumpyNet:
    """The step above with every buffer allocated once (batch B)."""

    def __init__(self, B, opt, rng):
        f = np.float32
        self.W = [(rng.standard_normal((a, b)) * np.sqrt(2 / a)).astype(f) for a, b in zip(WIDTHS, WIDTHS[1:])]
        self.b = [np.zeros(b, f) for b in WIDTHS[1:]]
        params = self.W + self.b
        self.g = [np.empty_like(p) for p in params]
        self.s1 = [np.zeros_like(p) for p in params]
        self.s2 = [np.zeros_like(p) for p in params]
        self.tmp = [np.empty_like(p) for p in params]
        self.tmp2 = [np.empty_like(p) for p in params]
        self.x = np.empty((B, WIDTHS[0]), f)
        self.Z = [np.empty((B, w), f) for w in WIDTHS[1:]]
        self.A = [np.empty((B, w), f) for w in WIDTHS[1:-1]]
        self.mask = [np.empty((B, w), bool) for w in WIDTHS[1:-1]]
        self.D = [np.empty((B, w), f) for w in WIDTHS[1:]]
        self.dA = [np.empty((B, w), f) for w in WIDTHS[1:-1]]
        self.m = np.empty((B, 1), f)
        self.rows = np.arange(B)
        self.opt, self.t, self.B = opt, 0, B

    def step(self, X, y, idx):
        W, b, Z, A, D = self.W, self.b, self.Z, self.A, self.D
        np.take(X, idx, axis=0, out=self.x)
        src = self.x
        for l in range(3):
            np.matmul(src, W[l], out=Z[l])
            Z[l] += b[l]
            if l < 2:
                np.maximum(Z[l], 0, out=A[l])
                src = A[l]
        P = D[2]                                            # softmax in place, then (P − Y)/B
        np.max(Z[2], axis=1, keepdims=True, out=self.m)
        np.subtract(Z[2], self.m, out=P)
        np.exp(P, out=P)
        np.sum(P, axis=1, keepdims=True, out=self.m)
        P /= self.m
        P[self.rows, y[idx]] -= 1
        P *= np.float32(1 / self.B)
        gW, gb = self.g[:3], self.g[3:]
        for l in (2, 1, 0):
            np.matmul((A[l - 1] if l else self.x).T, D[l], out=gW[l])
            np.sum(D[l], axis=0, out=gb[l])
            if l:
                np.matmul(D[l], W[l].T, out=self.dA[l - 1])
                np.greater(Z[l - 1], 0, out=self.mask[l - 1])
                np.multiply(self.dA[l - 1], self.mask[l - 1], out=D[l - 1])
        self.update()

    def update(self):
        self.t += 1
        for w, g, s1, s2, t1, t2 in zip(self.W + self.b, self.g, self.s1, self.s2, self.tmp, self.tmp2):
            if self.opt == "sgd":
                s1 *= np.float32(0.9)
                s1 += g
                np.multiply(s1, np.float32(0.01), out=t1)
            else:
                s1 *= np.float32(0.9)
                np.multiply(g, np.float32(0.1), out=t1)
                s1 += t1
                s2 *= np.float32(0.999)
                np.multiply(g, g, out=t1)
                t1 *= np.float32(0.001)
                s2 += t1
                np.multiply(s2, np.float32(1 / (1 - 0.999 ** self.t)), out=t2)
                np.sqrt(t2, out=t2)
                t2 += np.float32(1e-8)
                np.multiply(s1, np.float32(0.001 / (1 - 0.9 ** self.t)), out=t1)
                t1 /= t2
            w -= t1


def numpy_epoch(net, X, y, B, steps, rng):
    perm = rng.permutation(X.shape[0])
    t = time.perf_counter()
    for s in range(steps):
        net.step(X, y, perm[s * B:(s + 1) * B])
    return (time.perf_counter() - t) / steps


def main():
    args, threadpool_limits = step.step_args(__doc__, "numpy_step.py")
    rng = np.random.default_rng(0)
    print(f"medians of {args.repeats} rounds of one epoch each; µs per step; "
          f"{step.FLOP_PER_SAMPLE / 1e6:.3f} MFLOP a sample")
    print(f"{'threads':>7} {'opt':>4} {'batch':>5} {'peak GF/s':>9} {'NumPy':>9} {'GEMMs':>9} {'pyneuro':>9} "
          f"{'NumPy/pyneuro':>13} {'% peak':>6} {'1.3x needs':>10}")
    for nt in args.threads:
        _core.set_num_threads(nt)
        probe = peak_probe(np.float32)
        with threadpool_limits(limits=nt):
            for opt in ("sgd", "adam"):
                for B, steps in STEPS.items():
                    X = rng.random((B * steps, 784), dtype=np.float32)
                    y = rng.integers(0, 10, B * steps)
                    net = NumpyNet(B, opt, rng)
                    trainer = step.trainer(B, optimizer=pn.SGD(0.01, momentum=0.9) if opt == "sgd" else pn.Adam(0.001))
                    gemms = mlp_step(B, np.float32, rng)
                    calls = calibrate(run_numpy, gemms)
                    ours, theirs, blas, peaks = [], [], [], []
                    for r in range(args.repeats + 1):        # the first round warms up
                        peaks.append(probe())
                        blas.append(sample(run_numpy, gemms, calls))
                        theirs.append(numpy_epoch(net, X, y, B, steps, rng))
                        time.sleep(SETTLE_SECONDS)           # OpenBLAS's idle workers stop spinning
                        trainer.fit(X, y, epochs=1)
                        ours.append(trainer.history["time"][-1] / steps)
                        peaks[-1] = max(peaks[-1], probe())  # a slow phase only lowers the probe
                    ratio = statistics.median(t / o for t, o in zip(theirs[1:], ours[1:]))
                    flop = step.FLOP_PER_SAMPLE * B / 1e9
                    pct = statistics.median(100 * flop / o / p for o, p in zip(ours[1:], peaks[1:]))
                    needs = statistics.median(100 * flop * 1.3 / t / p for t, p in zip(theirs[1:], peaks[1:]))
                    print(f"{nt:>7} {opt:>4} {B:>5} {statistics.median(peaks[1:]):>9.1f} "
                          f"{statistics.median(theirs[1:]) * 1e6:>9.1f} {statistics.median(blas[1:]) * 1e6:>9.1f} "
                          f"{statistics.median(ours[1:]) * 1e6:>9.1f} {ratio:>12.2f}x {pct:>5.1f}% {needs:>9.1f}%",
                          flush=True)
    _core.set_num_threads(None)


if __name__ == "__main__":
    main()
