"""Conv2D kernel speed: pyneuro's ConvPlan against a NumPy im2col + matmul (its BLAS), and
torch.nn.functional's conv2d when torch is importable, with % of the machine's peak.

    python bench/conv.py                  # threads 1 and 2, median of 9
    python bench/conv.py --threads 1,2 --repeats 9

Cases: the LeNet shapes at batch 64, float32: conv1 1→32 channels, 5×5 on 28×28 (forward,
and backward without dX: a first layer needs none) and conv2 32→64 channels, 5×5 on 12×12
(forward, and backward with dX). Forward includes bias and ReLU. FLOPs counted are the
GEMMs' 2·B·Cout·P·K per product (one forward; two backward with dX, one without).
torch's backward samples include its forward (autograd needs the graph), so its
backward figures understate torch. Samples of the libraries alternate, as in bench/gemm.py (whose calibrate, sample and
peak_gflops this script uses), so all see the same machine state; the ratio column is the
median of side-by-side ratios other/pyneuro (> 1: pyneuro faster).
Needs threadpoolctl (pip install ".[bench]") to hold NumPy's BLAS to the same thread count.
"""
import statistics
import time

import numpy as np

from gemm import SETTLE_SECONDS, bench_args, calibrate, peak_gflops, sample
from pyneuro import _core

BATCH = 64
CASES = [  # name, (C, H, W, Cout, k), backward computes dX
    ("conv1 1→32 5×5 28×28", (1, 28, 28, 32, 5), False),
    ("conv2 32→64 5×5 12×12", (32, 12, 12, 64, 5), True),
]


class Case:
    """The arrays of one convolution at batch BATCH, float32, and each library's pass."""

    def __init__(self, spec, with_dx, rng):
        C, H, W, Cout, k = spec
        self.plan = _core.ConvPlan(C, H, W, Cout, kernel=(k, k))
        p = self.plan
        self.shape, self.k, self.with_dx = (C, H, W, Cout), k, with_dx
        self.X = rng.standard_normal((BATCH, p.in_features)).astype(np.float32)
        self.W = (rng.standard_normal((Cout, p.k)) * 0.1).astype(np.float32)
        self.b = rng.standard_normal(Cout).astype(np.float32)
        self.Z, self.A = (np.empty((BATCH, p.out_features), np.float32) for _ in range(2))
        self.delta = rng.standard_normal((BATCH, p.out_features)).astype(np.float32)
        self.dW, self.db = np.empty_like(self.W), np.empty_like(self.b)
        self.dX = np.empty_like(self.X) if with_dx else None

    def flops(self, backward):
        p = self.plan
        return 2.0 * BATCH * p.out_features * p.k * ((2 if self.with_dx else 1) if backward else 1)

    # ---- pyneuro
    def ours_forward(self, _):
        self.plan.forward(self.X, self.W, self.b, self.Z, self.A, "relu")

    def ours_backward(self, _):
        self.plan.backward(self.X, self.W, self.delta, self.dW, self.db, self.dX)

    # ---- NumPy: im2col with stride tricks, then matmul (BLAS); col2im by k×k slice adds
    def _cols(self):
        C, H, W, Cout = self.shape
        win = np.lib.stride_tricks.sliding_window_view(self.X.reshape(BATCH, C, H, W), (self.k, self.k), (2, 3))
        Ho, Wo = win.shape[2:4]
        return win.transpose(0, 2, 3, 1, 4, 5).reshape(BATCH * Ho * Wo, C * self.k * self.k), Ho, Wo

    def numpy_forward(self, _):
        cols, Ho, Wo = self._cols()
        Y = cols @ self.W.T                                   # (B·P, Cout)
        Z = Y.reshape(BATCH, Ho * Wo, -1).transpose(0, 2, 1) + self.b[:, None]
        np.maximum(Z, 0, out=self.A.reshape(Z.shape))

    def numpy_backward(self, _):
        C, H, W, Cout = self.shape
        cols, Ho, Wo = self._cols()
        D = self.delta.reshape(BATCH, Cout, Ho * Wo).transpose(0, 2, 1).reshape(-1, Cout)
        np.matmul(D.T, cols, out=self.dW)
        self.delta.reshape(BATCH, Cout, -1).sum(axis=(0, 2), out=self.db)
        if self.with_dx:
            dcols = (D @ self.W).reshape(BATCH, Ho, Wo, C, self.k, self.k)
            dX = self.dX.reshape(BATCH, C, H, W)
            dX[...] = 0
            for i in range(self.k):
                for j in range(self.k):
                    dX[:, :, i:i + Ho, j:j + Wo] += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)

    # ---- torch (when importable)
    def torch_setup(self, torch):
        C, H, W, Cout = self.shape
        self.torch = torch
        self.tX = torch.from_numpy(self.X.reshape(BATCH, C, H, W)).requires_grad_(self.with_dx)
        self.tW = torch.from_numpy(self.W.reshape(Cout, C, self.k, self.k)).requires_grad_(True)
        self.tb = torch.from_numpy(self.b).requires_grad_(True)
        self.tD = torch.from_numpy(self.delta.reshape(BATCH, Cout, H - self.k + 1, W - self.k + 1))

    def torch_forward(self, _):
        with self.torch.no_grad():
            self.torch.relu(self.torch.nn.functional.conv2d(self.tX, self.tW, self.tb))

    def torch_backward(self, _):
        Z = self.torch.nn.functional.conv2d(self.tX, self.tW, self.tb)
        inputs = (self.tX, self.tW, self.tb) if self.with_dx else (self.tW, self.tb)
        self.torch.autograd.grad(Z, inputs, self.tD)   # includes one forward: torch needs its graph


def paired(fns, repeats):
    """Median seconds per call of each function, and median ratios of each to the first,
    from samples taken side by side in rotating order."""
    calls = [calibrate(f, None) for f in fns]
    times = [[] for _ in fns]
    for r in range(repeats):
        order = list(range(len(fns)))
        order = order[r % len(order):] + order[:r % len(order)]
        for i in order:
            time.sleep(SETTLE_SECONDS)
            times[i].append(sample(fns[i], None, calls[i]))
    ratios = [statistics.median(t / o for o, t in zip(times[0], ti)) for ti in times]
    return [statistics.median(t) for t in times], ratios


def main(argv=None):
    threads, repeats, threadpool_limits, _ = bench_args(__doc__, "conv.py", argv)
    try:
        import torch
    except ImportError:
        torch = None
    libs = ["pyneuro", "NumPy"] + (["torch"] if torch else [])
    print(f"pyneuro micro-kernel: {_core.gemm_kernel()}; NumPy {np.__version__}; "
          f"torch {torch.__version__ if torch else 'not installed'}; batch {BATCH}, float32")
    rows = []
    for nt in threads:
        _core.set_num_threads(nt)
        if torch:
            torch.set_num_threads(nt)
        with threadpool_limits(limits=nt):
            peak = peak_gflops(np.float32, repeats)
            print(f"peak ({nt} thread{'s' * (nt > 1)}): float32 {peak:.1f} GFLOP/s")
            for name, spec, with_dx in CASES:
                case = Case(spec, with_dx, np.random.default_rng(0))
                if torch:
                    case.torch_setup(torch)
                for pass_ in ("forward", "backward"):
                    fns = [getattr(case, f"{lib.lower()}_{pass_}") for lib in ("ours", "numpy", "torch")[:len(libs)]]
                    secs, ratios = paired(fns, repeats)
                    gf = [case.flops(pass_ == "backward") / s / 1e9 for s in secs]
                    label = pass_ + (" (dW, db, dX)" if pass_ == "backward" and with_dx else
                                     " (dW, db)" if pass_ == "backward" else " (+b, relu)")
                    rows.append((name, label, nt, gf, ratios[1:], [100 * g / peak for g in gf]))
    _core.set_num_threads(None)
    head = (["case", "pass", "threads"] + [f"{lib} GFLOP/s" for lib in libs]
            + [f"{lib}/pyneuro time" for lib in libs[1:]] + [f"{lib} % peak" for lib in libs])
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, label, nt, gf, ratios, pct in rows:
        cells = [name, label, str(nt)] + [f"{g:.1f}" for g in gf] + [f"{r:.2f}" for r in ratios] + [f"{p:.0f}%" for p in pct]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
