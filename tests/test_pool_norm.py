"""Pooling, BatchNorm and LayerNorm kernels (csrc/pool.pxi, csrc/norm.pxi): each against a
straightforward NumPy reference over a sweep of shapes, float64 finite differences of the
backward passes, BatchNorm composed from its pieces against a NumPy port of PyTorch's
BatchNorm2d training formulas, and the boundary (thread-count independence: test_threads.py).

Layout: a batch is (B, C·H·W), NCHW rows (tests reshape to (B, C, H, W) for the references).
"""
import numpy as np
import pytest

from pyneuro import _core
from reference import DTYPES, assert_close, assert_scaled_close, f64


# (C, H, W, kernel, stride, padding): odd sizes, stride 2, padding, kernel 1, one channel,
# overlapping windows (kernel 3 stride 2), asymmetric kernels, a LeNet-sized plane
GEOMETRIES = [
    (1, 1, 1, 1, 1, 0),
    (2, 5, 7, 2, 2, 0),
    (3, 7, 5, 3, 2, 1),
    (1, 6, 6, (3, 2), (1, 2), (1, 0)),
    (4, 4, 4, 1, 2, 0),
    (2, 9, 8, (4, 3), (3, 1), (2, 1)),
    (3, 24, 24, 2, 2, 0),
    (1, 3, 3, 3, 1, 1),
    (2, 11, 13, 3, 2, 0),
]
GEOM_IDS = [f"C{g[0]}_{g[1]}x{g[2]}_k{g[3]}_s{g[4]}_p{g[5]}" for g in GEOMETRIES]


def pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


# ---- NumPy references -------------------------------------------------------------------
def pool_ref(X, C, H, W, kind, kernel, stride, padding):
    """Y and, for max, the argmax positions (h, w) per output: padded window by window."""
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel), pair(stride), pair(padding)
    B = X.shape[0]
    x = np.pad(f64(X).reshape(B, C, H, W), ((0, 0), (0, 0), (ph, ph), (pw, pw)),
               constant_values=-np.inf if kind == "max" else 0.0)
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    Y = np.empty((B, C, Ho, Wo))
    hh, ww = np.empty((B, C, Ho, Wo), int), np.empty((B, C, Ho, Wo), int)
    for i in range(Ho):
        for j in range(Wo):
            win = x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].reshape(B, C, kh * kw)
            if kind == "max":
                k = win.argmax(-1)                         # the first maximum, row-major
                Y[:, :, i, j] = win.max(-1)
                hh[:, :, i, j], ww[:, :, i, j] = i * sh + k // kw - ph, j * sw + k % kw - pw
            else:
                Y[:, :, i, j] = win.sum(-1) / (kh * kw)
    return Y.reshape(B, -1), (hh, ww)


def pool_backward_ref(dY, C, H, W, kind, kernel, stride, padding, where):
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel), pair(stride), pair(padding)
    B = dY.shape[0]
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    dy = f64(dY).reshape(B, C, Ho, Wo)
    if kind == "max":
        dX = np.zeros((B, C, H, W))
        b, c = np.meshgrid(np.arange(B), np.arange(C), indexing="ij")
        for i in range(Ho):
            for j in range(Wo):
                np.add.at(dX, (b, c, where[0][:, :, i, j], where[1][:, :, i, j]), dy[:, :, i, j])
        return dX.reshape(B, -1)
    dXp = np.zeros((B, C, H + 2 * ph, W + 2 * pw))
    for i in range(Ho):
        for j in range(Wo):
            dXp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += dy[:, :, i, j, None, None] / (kh * kw)
    return dXp[:, :, ph:ph + H, pw:pw + W].reshape(B, -1)


def run_pool(plan, X):
    Y = np.full((X.shape[0], plan.out_features), np.nan, X.dtype)
    return plan.forward(X, Y)


def run_pool_backward(plan, dY, n_in):
    dX = np.full((dY.shape[0], n_in), np.nan, dY.dtype)
    return plan.backward(dY, dX)


# ---- pooling against NumPy ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("geom", GEOMETRIES, ids=GEOM_IDS)
def test_pool_matches_numpy(rng, geom, kind, B, dtype):
    C, H, W, k, s, p = geom
    plan = _core.PoolPlan(C, H, W, kind, kernel=k, stride=s, padding=p, dtype=dtype)
    Yref, where = pool_ref(np.zeros((1, C * H * W)), C, H, W, kind, k, s, p)
    assert (plan.out_h, plan.out_w) == (where[0].shape[2], where[0].shape[3])
    assert plan.in_features == C * H * W and plan.out_features == Yref.shape[1]
    X = rng.standard_normal((B, C * H * W)).astype(dtype)
    Yref, where = pool_ref(X, C, H, W, kind, k, s, p)
    Y = run_pool(plan, X)
    if kind == "max":
        assert np.array_equal(f64(Y), Yref)          # a max is one of the inputs, exactly
    else:
        assert_scaled_close(Y, Yref, 1.0, dtype, "avg pool Y")
    dY = rng.standard_normal((B, plan.out_features)).astype(dtype)
    dX = run_pool_backward(plan, dY, plan.in_features)
    assert_scaled_close(dX, pool_backward_ref(dY, C, H, W, kind, k, s, p, where),
                        np.abs(f64(dY)).max() * 9, dtype, f"{kind} pool dX")


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_ties_go_to_the_first_in_row_major_window_order(rng, dtype):
    C, H, W, k, s, p = 2, 9, 7, 3, 2, 1
    plan = _core.PoolPlan(C, H, W, "max", kernel=k, stride=s, padding=p, dtype=dtype)
    X = rng.integers(0, 3, (4, C * H * W)).astype(dtype)       # many ties
    _, where = pool_ref(X, C, H, W, "max", k, s, p)
    run_pool(plan, X)
    dY = rng.integers(1, 5, (4, plan.out_features)).astype(dtype)   # exact sums
    dX = run_pool_backward(plan, dY, plan.in_features)
    assert np.array_equal(f64(dX), pool_backward_ref(dY, C, H, W, "max", k, s, p, where))


@pytest.mark.parametrize("kernel", ["generic", "avx2"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_2x2_without_argmax_is_the_training_pool_bit_for_bit(rng, gemm_kernel, kernel, dtype):
    """Prediction pools 2×2 windows of stride 2 on whole vectors (pool_kernels.h; a row of
    Wo ≥ 8 / 4 outputs ends with an overlapping vector), training by the scalar rule that
    records the argmax: the same bits for every width (W = 2..41, odd ones too) and for
    ties of ±0 and of equal values, ±inf, subnormals, and a NaN in some planes (redone by
    the NaN rule: the first NaN of the window)."""
    gemm_kernel(kernel)
    tiny = np.finfo(dtype).smallest_subnormal
    special = np.array([0.0, -0.0, 1.0, 1.0, -1.0, 2.0, np.inf, -np.inf, tiny, -tiny], dtype)
    for W in range(2, 42):
        C, H = 3, 5
        plan = _core.PoolPlan(C, H, W, "max", kernel=2, dtype=dtype)
        X = rng.choice(special, (2, C * H * W))
        X[1, rng.integers(0, C * H * W, 2)] = [np.nan, -np.nan]   # payloads differ in the sign
        training = run_pool(plan, X)
        predicted = plan.forward(X, np.full_like(training, 7.0), training=False)
        assert predicted.tobytes() == training.tobytes(), W
        Yref, _ = pool_ref(X[:1], C, H, W, "max", 2, 2, 0)
        assert np.array_equal(f64(predicted[:1]), Yref, equal_nan=True), W


def test_max_pool_propagates_nan_and_padding_is_minus_infinity():
    plan = _core.PoolPlan(1, 2, 2, "max", kernel=2, stride=1, padding=1, dtype=np.float64)
    X = np.array([[-5.0, -7.0, -6.0, np.nan]])
    Y = run_pool(plan, X).reshape(3, 3)
    assert Y[0, 0] == -5.0 and Y[0, 2] == -7.0 and Y[2, 0] == -6.0   # corners: one real value, not 0
    assert np.isnan(Y[1, 1]) and np.isnan(Y[2, 2]) and Y[0, 1] == -5.0
    dX = run_pool_backward(plan, np.ones((1, 9)), 4)
    assert dX.tolist() == [[3.0, 1.0, 1.0, 4.0]]      # the four windows holding the NaN route to it


def test_eval_forward_keeps_the_training_argmax(rng):
    plan = _core.PoolPlan(2, 4, 4, "max", kernel=2, dtype=np.float64)
    X = rng.standard_normal((3, 32))
    run_pool(plan, X)
    dY = rng.standard_normal((3, 8))
    before = run_pool_backward(plan, dY, 32)
    plan.forward(rng.standard_normal((5, 32)), np.empty((5, 8)), training=False)
    assert np.array_equal(run_pool_backward(plan, dY, 32), before)
    run_pool(plan, X[:2])                      # a smaller batch reuses the buffer
    assert np.array_equal(run_pool_backward(plan, dY[:2], 32), before[:2])


def test_pool_defaults_follow_pytorch():
    plan = _core.PoolPlan(3, 28, 28, "max", kernel=2)
    assert plan.stride == (2, 2) and plan.padding == (0, 0) and plan.dtype == np.float32
    assert (plan.out_h, plan.out_w, plan.in_features, plan.out_features) == (14, 14, 3 * 784, 3 * 196)
    assert "PoolPlan(C=3" in repr(plan)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("geom", [(2, 5, 5, 3, 2, 1), (1, 4, 6, 2, 2, 0), (2, 5, 4, (3, 2), 1, (1, 1))])
def test_pool_backward_finite_differences(rng, kind, geom):
    C, H, W, k, s, p = geom
    plan = _core.PoolPlan(C, H, W, kind, kernel=k, stride=s, padding=p, dtype=np.float64)
    X = rng.standard_normal((2, C * H * W))
    R = rng.standard_normal((2, plan.out_features))

    def loss(Xv):
        return float(np.sum(plan.forward(Xv, np.empty_like(R), training=False) * R))

    run_pool(plan, X)
    grad = run_pool_backward(plan, R, plan.in_features)
    num = numeric_grad(loss, X)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


def numeric_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        fp = f(x)
        x[i] = old - h
        fm = f(x)
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


# ---- global average pooling -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C,P", [(1, 1, 1), (3, 2, 7), (5, 32, 36), (2, 3, 101)])
def test_global_avg_pool(rng, B, C, P, dtype):
    X = rng.standard_normal((B, C * P)).astype(dtype)
    Y = _core.global_avg_pool_forward(X, np.empty((B, C), dtype), C)
    assert_scaled_close(Y, f64(X).reshape(B, C, P).mean(-1), 1.0, dtype, "global avg pool")
    dY = rng.standard_normal((B, C)).astype(dtype)
    dX = _core.global_avg_pool_backward(dY, np.empty((B, C * P), dtype), C)
    assert_close(dX, np.repeat(f64(dY) / P, P, axis=1), dtype, "global avg pool dX")


# ---- per-channel sums and BatchNorm ---------------------------------------------------------
SUM_SHAPES = [(1, 1, 1), (7, 5, 1), (3, 1, 17), (4, 3, 36), (64, 33, 1), (2, 17, 9)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C,P", SUM_SHAPES)
def test_channel_reductions_match_numpy(rng, B, C, P, dtype):
    X, A = (rng.standard_normal((B, C * P)).astype(dtype) + 3 for _ in range(2))
    x, a = f64(X).reshape(B, C, P), f64(A).reshape(B, C, P)
    mean = rng.standard_normal(C).astype(dtype)
    out = np.empty(C, dtype)
    assert_scaled_close(_core.channel_sums(X, C, out), x.sum((0, 2)), np.abs(x).sum((0, 2)), dtype, "sums")
    dev = (x - f64(mean)[:, None]) ** 2
    assert_scaled_close(_core.channel_sq_dev(X, mean, C, out), dev.sum((0, 2)), dev.sum((0, 2)), dtype, "sq_dev")
    assert_scaled_close(_core.channel_dot(X, A, C, out), (x * a).sum((0, 2)), np.abs(x * a).sum((0, 2)),
                        dtype, "dot")


def test_channel_sums_round_once_from_double():
    """Accumulated in double: 2^24 + 1 + 1 … in float32 would stick at 2^24."""
    X = np.ones((4096, 1), np.float32)
    X[0] = 2.0 ** 24
    assert _core.channel_sums(X, 1, np.empty(1, np.float32))[0] == np.float32(2.0 ** 24 + 4095)


def bn_forward(X, gamma, beta, C, eps, xhat=None, Y=None):
    """A training-mode BatchNorm composed from the pieces, as the layer does it."""
    B, F = X.shape
    N = B * (F // C)
    dt = X.dtype
    mean = _core.channel_sums(X, C, np.empty(C, dt)) / N
    var = _core.channel_sq_dev(X, mean, C, np.empty(C, dt)) / N
    invstd = (1 / np.sqrt(var + eps)).astype(dt)
    xhat = np.empty_like(X) if xhat is None else xhat
    Y = np.empty_like(X) if Y is None else Y
    _core.batchnorm_apply(X, mean, invstd, gamma, beta, C, xhat, Y)
    return Y, xhat, invstd


def bn_backward(dY, xhat, gamma, invstd, C):
    B, F = dY.shape
    dt = dY.dtype
    dbeta = _core.channel_sums(dY, C, np.empty(C, dt))
    dgamma = _core.channel_dot(dY, xhat, C, np.empty(C, dt))
    dX = np.empty_like(dY)
    _core.batchnorm_input_grad(dY, xhat, gamma, invstd, dbeta, dgamma, B * (F // C), C, dX)
    return dX, dgamma, dbeta


def torch_batchnorm2d_ref(x, w, b, eps, dy):
    """A NumPy port of PyTorch's BatchNorm2d training forward and its CPU backward
    (aten batch_norm_cpu_backward: dotp, k = dotp·invstd²/N, grad_mean), in float64."""
    axes = (0, 2, 3)
    N = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.mean(axes)
    var = x.var(axes)                                      # biased, as used for normalising
    invstd = 1 / np.sqrt(var + eps)
    c = (slice(None), None, None)
    y = (x - mean[c]) * invstd[c] * w[c] + b[c]
    dotp = ((x - mean[c]) * dy).sum(axes)
    sum_dy = dy.sum(axes)
    k = dotp * invstd ** 2 / N
    dx = (dy - sum_dy[c] / N - (x - mean[c]) * k[c]) * invstd[c] * w[c]
    return y, dx, dotp * invstd, sum_dy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C,H,W", [(1, 1, 1, 2), (3, 1, 5, 7), (4, 6, 3, 3), (2, 32, 24, 24), (16, 20, 1, 1)])
def test_batchnorm_equals_pytorch_formula(rng, B, C, H, W, dtype):
    eps = 1e-5
    X = (rng.standard_normal((B, C * H * W)) * 2 + 0.5).astype(dtype)
    gamma, beta = (rng.standard_normal(C).astype(dtype) for _ in range(2))
    dY = rng.standard_normal(X.shape).astype(dtype)
    Y, xhat, invstd = bn_forward(X, gamma, beta, C, eps)
    dX, dgamma, dbeta = bn_backward(dY, xhat, gamma, invstd, C)
    y, dx, dw, db = torch_batchnorm2d_ref(f64(X).reshape(B, C, H, W), f64(gamma), f64(beta), eps,
                                          f64(dY).reshape(B, C, H, W))
    tol = 50 if dtype == np.float32 else 1e4    # cancellation in dX: a scale of |dY|·|γ|·invstd·few
    scale = np.abs(f64(gamma)).max() * np.abs(f64(invstd)).max()
    assert_scaled_close(Y, y.reshape(B, -1), np.abs(y).max() + 1, dtype, "BN Y")
    assert_scaled_close(dX, dx.reshape(B, -1), tol * scale * np.abs(f64(dY)).max(), dtype, "BN dX")
    assert_scaled_close(dgamma, dw, np.abs(f64(dY)).sum() / C * 10, dtype, "BN dgamma")
    assert_scaled_close(dbeta, db, np.abs(f64(dY)).sum() / C, dtype, "BN dbeta")


def test_batchnorm_apply_without_xhat_and_in_place(rng):
    X = rng.standard_normal((5, 3 * 4))
    m, s, g, b = (rng.standard_normal(3) for _ in range(4))
    ref = ((X.reshape(5, 3, 4) - m[:, None]) * s[:, None] * g[:, None] + b[:, None]).reshape(5, -1)
    Y = np.empty_like(X)
    _core.batchnorm_apply(X, m, s, g, b, 3, None, Y)
    np.testing.assert_allclose(Y, ref, rtol=1e-14, atol=1e-14)
    _core.batchnorm_apply(X, m, s, g, b, 3, None, X)    # Y may be X
    assert np.array_equal(X, Y)


def test_batchnorm_finite_differences(rng):
    B, C, P, eps = 3, 2, 5, 1e-3
    X = rng.standard_normal((B, C * P))
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    R = rng.standard_normal(X.shape)

    def loss(X_, g_, b_):
        return float(np.sum(bn_forward(X_, g_, b_, C, eps)[0] * R))

    _, xhat, invstd = bn_forward(X, gamma, beta, C, eps)
    dX, dgamma, dbeta = bn_backward(R, xhat, gamma, invstd, C)
    np.testing.assert_allclose(dX, numeric_grad(lambda v: loss(v, gamma, beta), X), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dgamma, numeric_grad(lambda v: loss(X, v, beta), gamma), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dbeta, numeric_grad(lambda v: loss(X, gamma, v), beta), rtol=1e-6, atol=1e-8)


# ---- LayerNorm --------------------------------------------------------------------------------
def layernorm_ref(X, gamma, beta, eps, dY):
    x, g, dy = f64(X), f64(gamma), f64(dY)
    mu = x.mean(1, keepdims=True)
    inv = 1 / np.sqrt(((x - mu) ** 2).mean(1, keepdims=True) + eps)
    xh = (x - mu) * inv
    gg = dy * g
    dx = inv * (gg - gg.mean(1, keepdims=True) - xh * (gg * xh).mean(1, keepdims=True))
    return xh * g + f64(beta), xh, inv[:, 0], dx, (dy * xh).sum(0), dy.sum(0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,F", [(1, 1), (1, 7), (5, 3), (64, 128), (9, 257)])
def test_layernorm_matches_numpy(rng, B, F, dtype):
    eps = 1e-5
    X = (rng.standard_normal((B, F)) * 3 + 2).astype(dtype)
    gamma, beta = (rng.standard_normal(F).astype(dtype) for _ in range(2))
    dY = rng.standard_normal((B, F)).astype(dtype)
    xhat, invstd, Y = np.empty_like(X), np.empty(B, dtype), np.empty_like(X)
    _core.layernorm_forward(X, gamma, beta, eps, xhat, invstd, Y)
    dX, dgamma, dbeta = np.empty_like(X), np.empty(F, dtype), np.empty(F, dtype)
    _core.layernorm_backward(dY, xhat, gamma, invstd, dX, dgamma, dbeta)
    y, xh, inv, dx, dg, db = layernorm_ref(X, gamma, beta, eps, dY)
    assert_close(xhat, xh, dtype, "LN xhat")
    assert_close(invstd, inv, dtype, "LN invstd")
    assert_scaled_close(Y, y, np.abs(f64(gamma)) * np.abs(xh) + np.abs(f64(beta)) + 1, dtype, "LN Y")
    tol = 20 if dtype == np.float32 else 1e3
    assert_scaled_close(dX, dx, tol * inv.max() * np.abs(f64(dY) * f64(gamma)).max(), dtype, "LN dX")
    assert_scaled_close(dgamma, dg, 10 * np.abs(f64(dY)).sum(0) * np.abs(xh).max(), dtype, "LN dgamma")
    assert_scaled_close(dbeta, db, np.abs(f64(dY)).sum(0), dtype, "LN dbeta")


def test_layernorm_evaluation_and_aliasing(rng):
    X = rng.standard_normal((4, 6))
    g, b = rng.standard_normal(6), rng.standard_normal(6)
    Y = np.empty_like(X)
    _core.layernorm_forward(X, g, b, 1e-5, None, None, Y)
    np.testing.assert_allclose(Y, layernorm_ref(X, g, b, 1e-5, X)[0], rtol=1e-12, atol=1e-12)
    xhat, inv = np.empty_like(X), np.empty(4)
    _core.layernorm_forward(X, g, b, 1e-5, xhat, inv, X)          # Y may be X
    assert np.array_equal(X, Y)
    dY = rng.standard_normal((4, 6))
    dX, dg, db = np.empty_like(X), np.empty(6), np.empty(6)
    _core.layernorm_backward(dY, xhat, g, inv, dX, dg, db)
    dg2, db2 = np.empty(6), np.empty(6)
    _core.layernorm_backward(dY, xhat, g, inv, dY, dg2, db2)      # dX may be dY
    assert np.array_equal(dY, dX) and np.array_equal(dg, dg2) and np.array_equal(db, db2)


def test_layernorm_finite_differences(rng):
    B, F, eps = 3, 5, 1e-3
    X, gamma, beta, R = rng.standard_normal((B, F)), rng.standard_normal(F), rng.standard_normal(F), rng.standard_normal((B, F))

    def loss(X_, g_, b_):
        Y = np.empty_like(X_)
        _core.layernorm_forward(X_, g_, b_, eps, None, None, Y)
        return float(np.sum(Y * R))

    xhat, inv, Y = np.empty_like(X), np.empty(B), np.empty_like(X)
    _core.layernorm_forward(X, gamma, beta, eps, xhat, inv, Y)
    dX, dg, db = np.empty_like(X), np.empty(F), np.empty(F)
    _core.layernorm_backward(R, xhat, gamma, inv, dX, dg, db)
    np.testing.assert_allclose(dX, numeric_grad(lambda v: loss(v, gamma, beta), X), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dg, numeric_grad(lambda v: loss(X, v, beta), gamma), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, numeric_grad(lambda v: loss(X, gamma, v), beta), rtol=1e-6, atol=1e-8)


# ---- threads: bitwise the same on 1, 2, 3 (and 4) threads: the cases maxpool_*, avgpool_*,
# global_avg_pool, batchnorm_* and layernorm of tests/test_threads.py's KERNELS.


# ---- the boundary (the array-by-array variants are in test_kernel_boundary.py) -----------------
@pytest.mark.parametrize("args,error,match", [
    (dict(C=0, H=4, W=4, kind="max"), ValueError, "C must be a positive int"),
    (dict(C=1, H=4, W=4, kind="min"), ValueError, "kind must be 'max' or 'avg'"),
    (dict(C=1, H=4, W=4, kind="max", kernel=0), ValueError, r"kernel must be >= 1, got \(0, 0\)"),
    (dict(C=1, H=4, W=4, kind="max", kernel=2, stride=(1, 0)), ValueError, r"stride must be >= 1, got \(1, 0\)"),
    (dict(C=1, H=4, W=4, kind="max", kernel=3, padding=2), ValueError,
     r"padding must lie in \[0, kernel/2\].*\(2, 2\) for kernel \(3, 3\)"),
    (dict(C=1, H=2, W=4, kind="avg", kernel=3), ValueError, r"output would be 0x1.*\(2\+2\*0\)x\(4\+2\*0\).*3x3"),
    (dict(C=1, H=4, W=4, kind="max", kernel=(2, 2, 2)), TypeError, "kernel must be an int or a pair"),
    (dict(C=1, H=4, W=4, kind="max", kernel=2.0), TypeError, "kernel must be an int or a pair"),
    (dict(C=1, H=4, W=4, kind="max", dtype=np.float16), TypeError, "dtype must be float32 or float64"),
])
def test_pool_plan_refuses_bad_geometry(args, error, match):
    with pytest.raises(error, match=match):
        _core.PoolPlan(**args)


def test_max_pool_backward_needs_its_training_forward():
    plan = _core.PoolPlan(1, 4, 4, "max", kernel=2, dtype=np.float64)
    with pytest.raises(ValueError, match="never run"):
        plan.backward(np.zeros((2, 4)), np.zeros((2, 16)))
    plan.forward(np.zeros((2, 16)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="dY has 3 rows but the last training forward recorded 2"):
        plan.backward(np.zeros((3, 4)), np.zeros((3, 16)))
    with pytest.raises(TypeError, match="the plan is float64 but X is float32"):
        plan.forward(np.zeros((2, 16), np.float32), np.zeros((2, 4), np.float32))


@pytest.mark.parametrize("call,match", [
    (lambda: _core.channel_sums(np.zeros((2, 6)), 4, np.zeros(4)), "width C·P divisible by C = 4, got 6"),
    (lambda: _core.channel_sums(np.zeros((2, 6)), 0, np.zeros(0)), "C must be a positive int"),
    (lambda: _core.channel_sums(np.zeros((2, 6)), 2.0, np.zeros(2)), "C must be a positive int"),
    (lambda: _core.global_avg_pool_forward(np.zeros((2, 0)), np.zeros((2, 3)), 3), "at least one position"),
    (lambda: _core.batchnorm_input_grad(*[np.zeros((2, 4))] * 2, *[np.zeros(2)] * 4, 0, 2, np.zeros((2, 4))),
     "N must be a positive number"),
    (lambda: _core.layernorm_forward(np.zeros((2, 3)), np.ones(3), np.ones(3), -1.0, None, None, np.zeros((2, 3))),
     "eps must be finite and >= 0"),
    (lambda: _core.layernorm_forward(np.zeros((2, 0)), np.ones(0), np.ones(0), 1e-5, None, None, np.zeros((2, 0))),
     "at least one feature"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_backward_masked_by_the_relu_output_it_pooled(rng, dtype):
    """backward(dY, dX, X) with X = relu(Z) is ∂L/∂Z: the routed dY kept where X > 0 (NumPy)."""
    plan = _core.PoolPlan(3, 7, 6, "max", kernel=3, stride=2, padding=1, dtype=dtype)
    Z = rng.standard_normal((4, plan.in_features)).astype(dtype)
    Z[0, :5] = np.nan
    X = np.where(Z > 0, Z, 0).astype(dtype)
    X[0, :5] = np.nan
    plan.forward(X, np.empty((4, plan.out_features), dtype), True)
    dY = rng.standard_normal((4, plan.out_features)).astype(dtype)
    plain, masked = np.empty_like(X), np.empty_like(X)
    plan.backward(dY, plain)
    plan.backward(dY, masked, X)
    assert np.array_equal(masked, np.where(Z > 0, plain, 0))
    assert np.count_nonzero(masked) < np.count_nonzero(plain)


def test_max_pool_backward_mask_is_checked():
    plan = _core.PoolPlan(2, 4, 4, "max", kernel=2)
    X = np.ones((3, plan.in_features), np.float32)
    plan.forward(X, np.empty((3, plan.out_features), np.float32), True)
    dY, dX = np.ones((3, plan.out_features), np.float32), np.empty_like(X)
    with pytest.raises(ValueError, match=r"^X: expected shape \(3, 32\)"):
        plan.backward(dY, dX, X[:, :31].copy())
    with pytest.raises(TypeError, match=r"\bX\b"):
        plan.backward(dY, dX, X.astype(np.float64))
    avg = _core.PoolPlan(2, 4, 4, "avg", kernel=2)
    with pytest.raises(ValueError, match="max pooling only"):
        avg.backward(dY, dX, X)
