"""NumPy references and comparison helpers for the kernel tests.

Every reference computes in float64 from the very values the kernel was given
(float32 inputs are widened exactly), so a difference measures only the kernel's
own rounding. Tolerances are relative to the *scale* of a result, the bound on
its magnitude before cancellation (e.g. |α|·|op(A)|·|op(B)| + |β|·|C| for a GEMM):

    float32  1e-5 · scale        float64  1e-12 · scale
"""
import math

import numpy as np

# _core's functions that set or report how it runs rather than compute (the kernel-coverage
# tests leave them out)
KNOBS = {"gemm_kernel", "set_gemm_kernel", "get_num_threads", "set_num_threads", "max_threads",
         "openmp_enabled", "fma_probe"}
DTYPES = (np.float32, np.float64)
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def rtol(dtype):
    return RTOL[np.dtype(dtype)]


def other_float(dtype):
    return np.float64 if np.dtype(dtype) == np.float32 else np.float32


def f64(a):
    """A float64 copy (never a view: kernels work in place on their inputs' siblings)."""
    return np.array(a, dtype=np.float64)


def assert_scaled_close(actual, expected, scale, dtype, what="result"):
    """|actual − expected| ≤ rtol(dtype)·scale elementwise (scale broadcast; a scalar is fine)."""
    actual, expected = f64(actual), f64(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
    bound = rtol(dtype) * np.broadcast_to(f64(scale), expected.shape) + np.finfo(dtype).tiny
    err = np.abs(actual - expected)
    worst = float(np.max(err / bound, initial=0.0))
    assert worst <= 1.0, f"{what}: error {worst:.3g}x the {np.dtype(dtype)} tolerance"


def assert_close(actual, expected, dtype, what="result"):
    """Relative to each value's own magnitude, floored at 1 (results of order one)."""
    expected = f64(expected)
    assert_scaled_close(actual, expected, np.maximum(np.abs(expected), 1.0), dtype, what)


# ---- activations (formulas as in csrc/activations.pxi, written independently) -----
_erf = np.vectorize(math.erf, otypes=[np.float64])


def sigmoid_ref(z):
    e = np.exp(-np.abs(z))  # never overflows
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def softmax_ref(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def act_forward_ref(name, Z, alpha=0.0):
    z = f64(Z)
    if name == "identity":
        return z.copy()
    if name == "relu":
        return np.maximum(z, 0)
    if name == "leaky_relu":
        return np.where(z > 0, z, alpha * z)
    if name == "elu":
        return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0)))
    if name == "sigmoid":
        return sigmoid_ref(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "gelu":
        return 0.5 * z * (1 + _erf(z / math.sqrt(2)))
    if name == "softmax":
        return softmax_ref(z)
    raise KeyError(name)


def act_backward_ref(name, Z, G, alpha=0.0):
    """dZ = G ⊙ f'(Z) (softmax: the row-wise vector–Jacobian product)."""
    z, g = f64(Z), f64(G)
    if name == "identity":
        return g.copy()
    if name == "relu":
        return g * (z > 0)
    if name == "leaky_relu":
        return g * np.where(z > 0, 1, alpha)
    if name == "elu":
        return g * np.where(z > 0, 1, alpha * np.exp(np.minimum(z, 0)))
    if name == "sigmoid":
        s = sigmoid_ref(z)
        return g * s * (1 - s)
    if name == "tanh":
        return g * (1 - np.tanh(z) ** 2)
    if name == "gelu":
        cdf = 0.5 * (1 + _erf(z / math.sqrt(2)))
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        return g * (cdf + z * pdf)
    if name == "softmax":
        a = softmax_ref(z)
        return a * (g - (g * a).sum(axis=1, keepdims=True))
    raise KeyError(name)


# ---- finite differences ---------------------------------------------------------
def numeric_grad(f, x, eps=1e-6):
    """Central differences of the scalar f() with respect to x (perturbed in place)."""
    grad = np.empty(x.shape)
    flat, out = x.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        keep = flat[k]
        flat[k] = keep + eps
        up = f()
        flat[k] = keep - eps
        down = f()
        flat[k] = keep
        out[k] = (up - down) / (2 * eps)
    return grad


def rel_err(a, b):
    a, b = f64(a), f64(b)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300))


def away_from(rng, shape, kinks=(0.0,), margin=0.1, low=-3.0, high=3.0):
    """Uniform samples in [low, high] at least `margin` from every kink (for gradient checks)."""
    x = rng.uniform(low, high, size=shape)
    for _ in range(100):
        near = np.zeros(shape, bool)
        for k in kinks:
            near |= np.abs(x - k) < margin
        if not near.any():
            return x
        x[near] = rng.uniform(low, high, size=int(near.sum()))
    raise RuntimeError("could not sample away from the kinks")


# ---- 2-d convolution (the formula of csrc/conv.pxi, written as k_h·k_w shifted slices) ----
def _conv_taps(plan, Xp):
    """For each kernel tap (i, j): the slice of the padded input it reads, (B, C, Ho, Wo)."""
    (sh, sw), (dh, dw), Ho, Wo = plan.stride, plan.dilation, plan.out_h, plan.out_w
    for i in range(plan.kernel[0]):
        for j in range(plan.kernel[1]):
            yield i, j, (slice(None), slice(None), slice(i * dh, i * dh + sh * (Ho - 1) + 1, sh),
                         slice(j * dw, j * dw + sw * (Wo - 1) + 1, sw))


def conv_unfold(plan, X):
    """cols[s, (c, i, j), ho·Wo + wo] = Xpad[s, c, ho·sh + i·dh, wo·sw + j·dw]: the unfolded
    input (B, k, P), in X's dtype (the padded float64 copy holds X's values exactly)."""
    Xp = _padded(plan, X)
    kh, kw = plan.kernel
    cols = np.empty((Xp.shape[0], plan.C, kh, kw, plan.out_h * plan.out_w), X.dtype)
    for i, j, taps in _conv_taps(plan, Xp):
        cols[:, :, i, j] = Xp[taps].reshape(Xp.shape[0], plan.C, -1)
    return cols.reshape(Xp.shape[0], plan.k, -1)


def _padded(plan, X):
    pt, pl, pb, pr = plan.padding
    x = f64(X).reshape(-1, plan.C, plan.H, plan.W)
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))


def conv_forward_ref(plan, X, W, b=None):
    """Z[s, o, ho, wo] = Σ_{c,i,j} W[o, c, i, j] · Xpad[s, c, ho·sh + i·dh, wo·sw + j·dw] + b[o],
    flattened to (B, out_features); float64."""
    Xp = _padded(plan, X)
    w = f64(W).reshape(plan.out_channels, plan.C, *plan.kernel)
    Z = np.zeros((Xp.shape[0], plan.out_channels, plan.out_h, plan.out_w))
    for i, j, taps in _conv_taps(plan, Xp):
        Z += np.einsum("bchw,oc->bohw", Xp[taps], w[:, :, i, j])
    if b is not None:
        Z += f64(b)[None, :, None, None]
    return Z.reshape(Xp.shape[0], -1)


def conv_backward_ref(plan, X, W, delta):
    """(dW, db, dX) of Z = conv(X, W) + b given delta = ∂L/∂Z; float64."""
    Xp = _padded(plan, X)
    w = f64(W).reshape(plan.out_channels, plan.C, *plan.kernel)
    d = f64(delta).reshape(Xp.shape[0], plan.out_channels, plan.out_h, plan.out_w)
    dW, dXp = np.zeros_like(w), np.zeros_like(Xp)
    for i, j, taps in _conv_taps(plan, Xp):
        dW[:, :, i, j] = np.einsum("bohw,bchw->oc", d, Xp[taps])
        dXp[taps] += np.einsum("bohw,oc->bchw", d, w[:, :, i, j])
    pt, pl = plan.padding[:2]
    dX = dXp[:, :, pt:pt + plan.H, pl:pl + plan.W]
    return dW.reshape(plan.out_channels, -1), d.sum(axis=(0, 2, 3)), dX.reshape(Xp.shape[0], -1)
