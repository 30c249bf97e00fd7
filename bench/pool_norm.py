"""Pooling, BatchNorm and LayerNorm kernels at LeNet-ish shapes, float32, side by side with
a NumPy implementation of the same step in one run: median time and GB/s (the bytes each
step must read and write at least once, divided by its time; both columns use the same
byte count, so the GB/s ratio is the speed ratio).

    batch 64: max/avg pool 2x2 over 32x24x24, BatchNorm over 32 channels of 24x24,
    global average pooling of 32x24x24, LayerNorm over 128 features

    flock /work/timing.lock python bench/pool_norm.py [repeats] [threads]
"""
import sys
import time

import numpy as np

from pyneuro import _core

B, C, H, W, F = 64, 32, 24, 24, 128
P = H * W
EPS = 1e-5
DT = np.float32
SIZE = np.dtype(DT).itemsize


def median_seconds(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def cases(rng):
    """name -> (bytes moved, pyneuro step, NumPy step)."""
    X = rng.standard_normal((B, C * P)).astype(DT)
    x4 = X.reshape(B, C, H, W)
    out = {}
    for kind in ("max", "avg"):
        plan = _core.PoolPlan(C, H, W, kind, kernel=2, dtype=DT)
        Y = np.empty((B, plan.out_features), DT)
        dY = rng.standard_normal(Y.shape).astype(DT)
        dX = np.empty_like(X)
        n_in, n_out = X.size * SIZE, Y.size * SIZE
        arg = n_out if kind == "max" else 0                   # the int32 argmax, written then read
        if kind == "max":
            def np_fwd():
                return x4.reshape(B, C, H // 2, 2, W // 2, 2).max(axis=(3, 5))

            def np_bwd(dY=dY, np_fwd=np_fwd):
                y6 = np_fwd()[:, :, :, None, :, None]
                mask = x4.reshape(B, C, H // 2, 2, W // 2, 2) == y6
                return mask * dY.reshape(y6.shape)
        else:
            def np_fwd():
                return x4.reshape(B, C, H // 2, 2, W // 2, 2).mean(axis=(3, 5), dtype=DT)

            def np_bwd(dY=dY):
                d = (dY * DT(0.25)).reshape(B, C, H // 2, 1, W // 2, 1)
                return np.broadcast_to(d, (B, C, H // 2, 2, W // 2, 2)).reshape(B, -1).copy()
        out[f"{kind}pool 2x2 forward"] = (n_in + n_out + arg, lambda p=plan, Y=Y: p.forward(X, Y), np_fwd)
        plan.forward(X, Y)
        out[f"{kind}pool 2x2 backward"] = (n_in + n_out + arg, lambda p=plan, dY=dY, dX=dX: p.backward(dY, dX), np_bwd)

    Yg, dX = np.empty((B, C), DT), np.empty_like(X)
    out["global avg pool forward"] = (X.size * SIZE, lambda: _core.global_avg_pool_forward(X, Yg, C),
                                      lambda: x4.mean(axis=(2, 3), dtype=DT))
    out["global avg pool backward"] = (X.size * SIZE, lambda: _core.global_avg_pool_backward(Yg, dX, C),
                                       lambda: np.repeat(Yg / DT(P), P, axis=1))

    g, b = rng.standard_normal(C).astype(DT), rng.standard_normal(C).astype(DT)
    xhat, Y, dY = np.empty_like(X), np.empty_like(X), rng.standard_normal(X.shape).astype(DT)
    s1, s2 = np.empty(C, DT), np.empty(C, DT)

    def bn_forward():
        mean = _core.channel_sums(X, C, s1) / (B * P)
        inv = (1 / np.sqrt(_core.channel_sq_dev(X, mean, C, s2) / (B * P) + EPS)).astype(DT)
        _core.batchnorm_apply(X, mean, inv, g, b, C, xhat, Y)
        return inv

    def np_bn_forward():
        mean = x4.mean(axis=(0, 2, 3), dtype=DT)
        inv = 1 / np.sqrt(x4.var(axis=(0, 2, 3), dtype=DT) + DT(EPS))
        xh = (x4 - mean[:, None, None]) * inv[:, None, None]
        return xh, xh * g[:, None, None] + b[:, None, None]

    inv = bn_forward()
    d4, xh4 = dY.reshape(x4.shape), xhat.reshape(x4.shape)

    def bn_backward():
        sd = _core.channel_sums(dY, C, s1)
        sdx = _core.channel_dot(dY, xhat, C, s2)
        _core.batchnorm_input_grad(dY, xhat, g, inv, sd, sdx, B * P, C, dX)

    def np_bn_backward():
        sd, sdx = d4.sum(axis=(0, 2, 3)), (d4 * xh4).sum(axis=(0, 2, 3))
        c = (slice(None), None, None)
        return (g * inv)[c] * (d4 - sd[c] / (B * P) - xh4 * sdx[c] / (B * P))

    n = X.size * SIZE
    out["batchnorm forward (training)"] = (3 * n, bn_forward, np_bn_forward)       # X twice… ≥ X, xhat, Y
    out["batchnorm backward"] = (3 * n, bn_backward, np_bn_backward)              # dY, xhat, dX

    Xl, dYl = (rng.standard_normal((B, F)).astype(DT) for _ in range(2))
    gl, bl = rng.standard_normal(F).astype(DT), rng.standard_normal(F).astype(DT)
    xl, il, Yl, dXl, dgl, dbl = (np.empty_like(Xl), np.empty(B, DT), np.empty_like(Xl), np.empty_like(Xl),
                                 np.empty(F, DT), np.empty(F, DT))

    def np_ln_forward():
        mu = Xl.mean(1, keepdims=True)
        iv = 1 / np.sqrt(((Xl - mu) ** 2).mean(1, keepdims=True) + DT(EPS))
        xh = (Xl - mu) * iv
        return xh, iv, xh * gl + bl

    xh_np, iv_np, _ = np_ln_forward()

    def np_ln_backward():
        gg = dYl * gl
        dx = iv_np * (gg - gg.mean(1, keepdims=True) - xh_np * (gg * xh_np).mean(1, keepdims=True))
        return dx, (dYl * xh_np).sum(0), dYl.sum(0)

    nl = Xl.size * SIZE
    out["layernorm forward"] = (3 * nl, lambda: _core.layernorm_forward(Xl, gl, bl, EPS, xl, il, Yl), np_ln_forward)
    _core.layernorm_forward(Xl, gl, bl, EPS, xl, il, Yl)
    out["layernorm backward"] = (3 * nl, lambda: _core.layernorm_backward(dYl, xl, gl, il, dXl, dgl, dbl),
                                 np_ln_backward)
    return out


def main(repeats=200, threads=None):
    if threads is not None:
        _core.set_num_threads(threads)
    rng = np.random.default_rng(0)
    print(f"float32, batch {B}; pyneuro on {_core.get_num_threads()} thread(s); medians of {repeats}")
    print(f"{'kernel':32s} {'pyneuro us':>11s} {'GB/s':>7s} {'NumPy us':>10s} {'GB/s':>7s} {'speed-up':>9s}")
    for name, (nbytes, ours, theirs) in cases(rng).items():
        t_ours = min(median_seconds(ours, repeats) for _ in range(3))        # best of 3 rounds
        t_np = min(median_seconds(theirs, repeats) for _ in range(3))
        print(f"{name:32s} {t_ours * 1e6:11.1f} {nbytes / t_ours / 1e9:7.2f} {t_np * 1e6:10.1f} "
              f"{nbytes / t_np / 1e9:7.2f} {t_np / t_ours:8.1f}x")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
