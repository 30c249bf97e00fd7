"""softmax_cross_entropy (int64 labels, probability targets) and pointwise_loss
('binary_cross_entropy' on logits, 'mse', 'mae', 'huber'): value and ∂L/∂Z against
NumPy in both dtypes, against finite differences in float64, and at huge logits."""
import numpy as np
import pytest

from pyneuro import _core
from reference import (DTYPES, assert_close, assert_scaled_close, away_from, f64, numeric_grad,
                       rel_err, sigmoid_ref, softmax_ref)

KINDS = ["binary_cross_entropy", "mse", "mae", "huber"]


# ---- references ---------------------------------------------------------------------
def lse(z):
    m = z.max(axis=1, keepdims=True)
    return m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def ce_ref(Z, y):
    """Mean cross-entropy and ∂L/∂Z for int labels y (B,) or targets y (B, C)."""
    z = f64(Z)
    B = z.shape[0]
    T = np.eye(z.shape[1])[y] if y.ndim == 1 else f64(y)
    loss = float(np.sum(T * (lse(z) - z)) / B)
    return loss, (softmax_ref(z) * T.sum(axis=1, keepdims=True) - T) / B


def pointwise_ref(kind, Z, Y, delta=1.0):
    ell, g = elementwise_ref(kind, Z, Y, delta)
    return float(ell.mean()), g / g.size


def elementwise_ref(kind, Z, Y, delta=1.0):
    """ℓ and ∂ℓ/∂z of every element."""
    z, y = f64(Z), f64(Y)
    r = z - y
    if kind == "binary_cross_entropy":
        ell, g = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))), sigmoid_ref(z) - y
    elif kind == "mse":
        ell, g = r * r, 2 * r
    elif kind == "mae":
        ell, g = np.abs(r), np.sign(r)
    else:
        small = np.abs(r) <= delta
        ell = np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
        g = np.clip(r, -delta, delta)
    return ell, g


def targets(rng, kind, shape, dtype):
    if kind == "binary_cross_entropy":
        return rng.uniform(0, 1, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def run_loss(fn, Z, *args, **kw):
    """Call a loss with and without dZ; both values must agree. Returns (L, dZ)."""
    dZ = np.full_like(Z, np.nan)
    loss = fn(Z, *args, delta=dZ, **kw)
    assert isinstance(loss, float)
    assert fn(Z, *args, **kw) == loss
    return loss, dZ


# ---- softmax cross-entropy --------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,C", [(1, 1), (1, 5), (37, 10), (1000, 3)])
def test_cross_entropy_labels(rng, B, C, dtype):
    Z = (2 * rng.standard_normal((B, C))).astype(dtype)
    y = rng.integers(0, C, B)
    loss, dZ = run_loss(_core.softmax_cross_entropy, Z, y)
    ref_loss, ref_dZ = ce_ref(Z, y)
    assert_close(loss, ref_loss, dtype, "L")
    assert_scaled_close(dZ, ref_dZ, 1 / B, dtype, "dZ")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalised", [True, False])
def test_cross_entropy_probabilities(rng, dtype, normalised):
    Z = (2 * rng.standard_normal((29, 7))).astype(dtype)
    T = rng.uniform(0, 1, Z.shape) * (rng.uniform(size=Z.shape) < 0.7)  # some exact zeros
    T[0] = 0
    if normalised:
        T[1:] /= T[1:].sum(axis=1, keepdims=True)
    T = T.astype(dtype)
    loss, dZ = run_loss(_core.softmax_cross_entropy, Z, T)
    ref_loss, ref_dZ = ce_ref(Z, T)
    assert_close(loss, ref_loss, dtype, "L")
    assert_scaled_close(dZ, ref_dZ, 1 / 29, dtype, "dZ")


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_hot_targets_equal_labels(rng, dtype):
    Z = rng.standard_normal((40, 6)).astype(dtype)
    y = rng.integers(0, 6, 40)
    loss_y, dZ_y = run_loss(_core.softmax_cross_entropy, Z, y)
    loss_t, dZ_t = run_loss(_core.softmax_cross_entropy, Z, np.eye(6, dtype=dtype)[y])
    assert_close(loss_t, loss_y, dtype)
    assert_scaled_close(dZ_t, dZ_y, 1 / 40, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("targets_kind", ["labels", "probabilities"])
def test_cross_entropy_huge_logits(rng, dtype, targets_kind):
    Z = np.array([[1e4, -1e4, 0, 5e3], [1e4, 1e4 - 1, 1e4 - 2, 1e4 - 30], [-1e4, -1e4, -1e4, -1e4]], dtype)
    y = np.array([1, 0, 2])
    if targets_kind == "probabilities":
        y = np.full(Z.shape, 0.25, dtype)
    loss, dZ = run_loss(_core.softmax_cross_entropy, Z, y)
    ref_loss, ref_dZ = ce_ref(Z, y)
    assert np.isfinite(loss) and np.all(np.isfinite(dZ))
    assert_close(loss, ref_loss, dtype, "L")
    assert_scaled_close(dZ, ref_dZ, 1 / 3, dtype, "dZ")


@pytest.mark.parametrize("targets_kind", ["labels", "probabilities"])
def test_cross_entropy_finite_differences(rng, targets_kind):
    Z = 2 * rng.standard_normal((5, 4))
    y = rng.integers(0, 4, 5) if targets_kind == "labels" else rng.dirichlet(np.ones(4), 5)
    _, dZ = run_loss(_core.softmax_cross_entropy, Z, y)
    numeric = numeric_grad(lambda: _core.softmax_cross_entropy(Z, y), Z)
    assert rel_err(dZ, numeric) < 1e-6


# ---- pointwise losses ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,delta", [(k, 1.0) for k in KINDS] + [("huber", 0.3)])
@pytest.mark.parametrize("B,m", [(1, 1), (33, 7), (1000, 2)])
def test_pointwise_matches_numpy(rng, kind, delta, B, m, dtype):
    Z = (2 * rng.standard_normal((B, m))).astype(dtype)
    Y = targets(rng, kind, (B, m), dtype)
    loss, dZ = run_loss(lambda *a, **k: _core.pointwise_loss(kind, *a, **k), Z, Y, huber_delta=delta)
    ref_loss, ref_dZ = pointwise_ref(kind, Z, Y, delta)
    assert_close(loss, ref_loss, dtype, "L")
    assert_scaled_close(dZ, ref_dZ, np.maximum(np.abs(ref_dZ), 1 / Z.size), dtype, "dZ")


@pytest.mark.parametrize("kind,delta", [(k, 1.0) for k in KINDS] + [("huber", 0.3)])
def test_pointwise_finite_differences(rng, kind, delta):
    """Residuals kept 0.05 away from the kinks (mae at 0, huber at ±δ)."""
    Y = targets(rng, kind, (5, 4), np.float64)
    kinks = {"mae": (0.0,), "huber": (-delta, delta)}.get(kind, ())
    Z = Y + away_from(rng, Y.shape, kinks=kinks, margin=0.05, low=-3 * delta, high=3 * delta)
    dZ = np.empty_like(Z)
    _core.pointwise_loss(kind, Z, Y, dZ, huber_delta=delta)
    numeric = numeric_grad(lambda: _core.pointwise_loss(kind, Z, Y, huber_delta=delta), Z)
    assert rel_err(dZ, numeric) < 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_huge_logits(dtype):
    Z = np.array([[1000, -1000, 1000, -1000, 0]], dtype)
    Y = np.array([[1, 0, 0, 1, 1]], dtype)
    loss, dZ = run_loss(lambda *a, **k: _core.pointwise_loss("binary_cross_entropy", *a, **k), Z, Y)
    assert_close(loss, (0 + 0 + 1000 + 1000 + np.log(2)) / 5, dtype)
    assert_close(dZ * 5, [[0, 0, 1, -1, -0.5]], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["labels", "probabilities"] + KINDS)
@pytest.mark.parametrize("where", [(0, 0), (3, 2)])
def test_nan_logit_gives_nan_loss(dtype, kind, where):
    """A diverged output must show in the loss, never be hidden by a max or a branch."""
    Z = np.zeros((4, 3), dtype)
    Z[where] = np.nan
    if kind in ("labels", "probabilities"):
        y = np.array([0, 1, 2, 0]) if kind == "labels" else np.full((4, 3), 1 / 3, dtype)
        loss = _core.softmax_cross_entropy(Z, y)
    else:
        loss = _core.pointwise_loss(kind, Z, np.zeros_like(Z))
    assert np.isnan(loss)


def test_huber_is_mse_like_inside_and_mae_like_outside():
    Z = np.array([[0.5, -0.5, 3.0, -3.0]])
    Y = np.zeros_like(Z)
    dZ = np.empty_like(Z)
    loss = _core.pointwise_loss("huber", Z, Y, dZ, huber_delta=1.0)
    assert loss == pytest.approx((0.125 + 0.125 + 2.5 + 2.5) / 4, rel=1e-15)
    assert dZ.tolist() == [[0.125, -0.125, 0.25, -0.25]]
