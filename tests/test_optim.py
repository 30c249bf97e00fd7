"""sgd_step, adam_step, rmsprop_step and global_norm against NumPy re-statements of
the formulas in csrc/optim.pxi, over several consecutive steps, both dtypes."""
import math

import numpy as np
import pytest

from pyneuro import _core
from reference import DTYPES, assert_scaled_close, f64

N = 1003  # not a multiple of any vector width


def assert_state(actual, expected, dtype, what):
    """Optimizer state, relative to its largest entry (w − η·u cancels where w ≈ η·u)."""
    assert_scaled_close(actual, expected, np.max(np.abs(expected)), dtype, what)


def vectors(rng, dtype, k):
    return [rng.standard_normal(N).astype(dtype) for _ in range(k)]


# ---- references (float64) -------------------------------------------------------------
def sgd_ref(w, g, v, lr, momentum, nesterov, wd, s):
    g = s * g + wd * w
    if momentum == 0:
        return w - lr * g, v
    v = momentum * v + g
    return w - lr * (g + momentum * v if nesterov else v), v


def adam_ref(w, g, m, v, t, lr, b1, b2, eps, wd, decoupled, s):
    g = s * g
    if decoupled:
        w = w - lr * wd * w
    else:
        g = g + wd * w
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    return w - lr * mhat / (np.sqrt(vhat) + eps), m, v


def rmsprop_ref(w, g, v, lr, rho, eps, wd, s):
    g = s * g + wd * w
    v = rho * v + (1 - rho) * g * g
    return w - lr * g / (np.sqrt(v) + eps), v


# ---- SGD ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True), (0.5, True)])
@pytest.mark.parametrize("wd,scale", [(0.0, 1.0), (0.01, 0.5)])
def test_sgd(rng, dtype, momentum, nesterov, wd, scale):
    w, v = vectors(rng, dtype, 2)
    v = v if momentum else None
    rw, rv = f64(w), (f64(v) if momentum else None)
    for _ in range(4):
        g = rng.standard_normal(N).astype(dtype)
        _core.sgd_step(w, g, v, 0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd,
                       grad_scale=scale)
        rw, rv = sgd_ref(rw, f64(g), rv, 0.1, momentum, nesterov, wd, scale)
    assert_state(w, rw, dtype, "w")
    if momentum:
        assert_state(v, rv, dtype, "v")


def test_sgd_without_momentum_leaves_a_given_velocity_alone(rng):
    w, g, v = vectors(rng, np.float64, 3)
    v0 = v.copy()
    _core.sgd_step(w, g, v, 0.1)
    assert np.array_equal(v, v0)


# ---- Adam / AdamW ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("wd,scale", [(0.0, 1.0), (0.05, 0.25)])
def test_adam_first_steps(rng, dtype, decoupled, wd, scale):
    """t = 1 … 5 from m = v = 0: the bias corrections matter most here."""
    w, = vectors(rng, dtype, 1)
    m, v = np.zeros(N, dtype), np.zeros(N, dtype)
    rw, rm, rv = f64(w), f64(m), f64(v)
    for t in range(1, 6):
        g = rng.standard_normal(N).astype(dtype)
        _core.adam_step(w, g, m, v, t, 1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=wd,
                        decoupled=decoupled, grad_scale=scale)
        rw, rm, rv = adam_ref(rw, f64(g), rm, rv, t, 1e-2, 0.9, 0.999, 1e-8, wd, decoupled, scale)
    for name, got, ref in (("w", w, rw), ("m", m, rm), ("v", v, rv)):
        assert_state(got, ref, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t", [2, 10, 1000, 10**6])
@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_step_t(rng, dtype, t, decoupled):
    w, g, m = vectors(rng, dtype, 3)
    v = rng.uniform(0.01, 2, N).astype(dtype)
    ref = adam_ref(f64(w), f64(g), f64(m), f64(v), t, 3e-3, 0.8, 0.99, 1e-7, 0.1, decoupled, 1.0)
    _core.adam_step(w, g, m, v, t, 3e-3, beta1=0.8, beta2=0.99, eps=1e-7, weight_decay=0.1,
                    decoupled=decoupled)
    for name, got, r in zip("wmv", (w, m, v), ref):
        assert_state(got, r, dtype, name)


def test_adam_first_step_moves_by_lr_times_sign():
    """With bias correction, step 1 is lr·g/(|g| + ε) ≈ lr·sign(g), whatever |g| is."""
    g = np.array([1e-3, -2.0, 50.0, -1e-4])
    w, m, v = np.zeros(4), np.zeros(4), np.zeros(4)
    _core.adam_step(w, g, m, v, 1, 0.5, eps=1e-12)
    np.testing.assert_allclose(w, -0.5 * np.sign(g), rtol=1e-7)


def test_adamw_decay_is_decoupled_from_the_moments():
    w, g = np.full(3, 2.0), np.zeros(3)
    m, v = np.zeros(3), np.zeros(3)
    _core.adam_step(w, g, m, v, 1, 0.1, weight_decay=0.5, decoupled=True)
    assert w.tolist() == [1.9] * 3 and not m.any() and not v.any()
    _core.adam_step(w, g, m, v, 2, 0.1, weight_decay=0.5, decoupled=False)
    assert np.all(m > 0) and np.all(v > 0)


# ---- RMSprop ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rho,wd,scale", [(0.9, 0.0, 1.0), (0.5, 0.01, 2.0)])
def test_rmsprop(rng, dtype, rho, wd, scale):
    w, = vectors(rng, dtype, 1)
    v = np.zeros(N, dtype)
    rw, rv = f64(w), f64(v)
    for _ in range(4):
        g = rng.standard_normal(N).astype(dtype)
        _core.rmsprop_step(w, g, v, 1e-2, rho=rho, eps=1e-8, weight_decay=wd, grad_scale=scale)
        rw, rv = rmsprop_ref(rw, f64(g), rv, 1e-2, rho, 1e-8, wd, scale)
    assert_state(w, rw, dtype, "w")
    assert_state(v, rv, dtype, "v")


# ---- global norm --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, 16384, 16385, 100003])
def test_global_norm(rng, dtype, n):
    """Summed in float64 (float32 squares are exact there): 1e-12 for both dtypes."""
    g = (10 * rng.standard_normal(n)).astype(dtype)
    expected = math.sqrt(math.fsum(f64(g) ** 2))
    got = _core.global_norm(g)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-12, abs=0)


def test_global_norm_does_not_overflow_float32():
    g = np.full(4, 1e30, np.float32)
    assert _core.global_norm(g) == pytest.approx(2e30, rel=1e-6)


# ---- hyper-parameters ---------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda w, g: _core.sgd_step(w, g, None, float("nan")),
    lambda w, g: _core.sgd_step(w, g, w.copy(), 0.1, momentum=float("inf")),
    lambda w, g: _core.adam_step(w, g, w.copy(), w.copy(), 1, 0.1, eps=float("nan")),
    lambda w, g: _core.rmsprop_step(w, g, w.copy(), 0.1, grad_scale=float("inf")),
])
def test_non_finite_hyper_parameters_are_refused(call):
    w, g = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError, match="must be finite"):
        call(w, g)
    assert not w.any()


def test_adam_step_counts_from_one():
    w = np.zeros(3)
    with pytest.raises(ValueError, match="t counts from 1"):
        _core.adam_step(w, w.copy(), w.copy(), w.copy(), 0, 0.1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("step", ["sgd", "nesterov", "adam", "adamw", "rmsprop"])
def test_simd_and_generic_updates_agree(gemm_kernel, step, dtype):
    """The update loops are built for the baseline ISA and for AVX2+FMA (optim_kernels.h,
    picked with the GEMM kernel); both follow the formula, FMA rounding apart."""
    n = 20011                                   # chunks of 8192 and a ragged tail
    rng = np.random.default_rng(3)
    w0, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    m0, v0 = rng.standard_normal(n).astype(dtype), rng.uniform(0.1, 1, n).astype(dtype)
    out = {}
    for kernel in ("generic", "avx2"):
        gemm_kernel(kernel)
        w, m, v = w0.copy(), m0.copy(), v0.copy()
        if step in ("sgd", "nesterov"):
            _core.sgd_step(w, g, v, 0.1, momentum=0.9, nesterov=step == "nesterov", weight_decay=0.01)
        elif step == "rmsprop":
            _core.rmsprop_step(w, g, v, 0.01, weight_decay=0.01)
        else:
            _core.adam_step(w, g, m, v, 3, 0.01, weight_decay=0.01, decoupled=step == "adamw")
        out[kernel] = (w, m, v)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a, b in zip(out["generic"], out["avx2"]):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
