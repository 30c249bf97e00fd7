"""activation_forward / activation_backward for every name in _core.ACTIVATIONS:
NumPy formulas in both dtypes, finite differences in float64, extreme inputs."""
import warnings

import numpy as np
import pytest

from pyneuro import _core
from reference import (DTYPES, act_backward_ref, act_forward_ref, assert_close, away_from,
                       numeric_grad, rel_err)

ACTS = sorted(_core.ACTIVATIONS)
ALPHA = {"leaky_relu": 0.1, "elu": 1.3}  # the others ignore α


def forward(name, Z):
    A = np.empty_like(Z)
    _core.activation_forward(name, ALPHA.get(name, 0.0), Z, A)
    return A


def backward(name, Z, G):
    A = forward(name, Z)
    dZ = np.empty_like(Z)
    _core.activation_backward(name, ALPHA.get(name, 0.0), Z, A, G, dZ)
    return dZ


def test_activation_names_are_the_documented_ones():
    assert set(ACTS) == {"identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "softmax"}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTS)
def test_forward_matches_numpy(rng, name, dtype):
    Z = (4 * rng.standard_normal((37, 19))).astype(dtype)
    Z[0, :5] = [0, -0.0, 1e-30, -1e-30, 30]
    A = forward(name, Z)
    assert_close(A, act_forward_ref(name, Z, ALPHA.get(name, 0.0)), dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTS)
def test_backward_matches_numpy(rng, name, dtype):
    Z = (3 * rng.standard_normal((23, 11))).astype(dtype)
    G = rng.standard_normal(Z.shape).astype(dtype)
    dZ = backward(name, Z, G)
    assert_close(dZ, act_backward_ref(name, Z, G, ALPHA.get(name, 0.0)), dtype, name)


@pytest.mark.parametrize("name", ACTS)
def test_in_place(rng, name):
    """A may be Z (forward) and dZ may be G (backward)."""
    Z = rng.standard_normal((9, 5))
    G = rng.standard_normal(Z.shape)
    A, dZ = forward(name, Z), backward(name, Z, G)
    alpha = ALPHA.get(name, 0.0)
    Zi = Z.copy()
    _core.activation_forward(name, alpha, Zi, Zi)
    assert np.array_equal(Zi, A)
    Gi = G.copy()
    _core.activation_backward(name, alpha, Z, A, Gi, Gi)
    assert np.array_equal(Gi, dZ)


@pytest.mark.parametrize("kernel", ["generic", "avx2"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["identity", "relu", "leaky_relu"])
def test_piecewise_linear_kernels_give_numpys_bits(rng, gemm_kernel, kernel, name, dtype):
    """identity, relu and leaky relu run branch-free SIMD kernels (act_kernels.h), per ISA:
    on rows of every length up to 3 vectors (the vector tails), with ±0, NaN, ±inf and
    subnormals, in place and not, each element is bitwise NumPy's formula."""
    gemm_kernel(kernel)
    alpha = ALPHA.get(name, 0.0)
    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-40, -1e-40, 1.0, -1.0], dtype)
    for n in range(1, 3 * 64 // np.dtype(dtype).itemsize + 2):
        Z = rng.standard_normal((3, n)).astype(dtype)
        Z.ravel()[:special.size] = special[:Z.size]
        G = rng.standard_normal(Z.shape).astype(dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            A_ref = np.where(Z > 0, Z, Z * dtype(alpha)) if name == "leaky_relu" else \
                np.where(Z <= 0, dtype(0), Z) if name == "relu" else Z
            dZ_ref = np.where(Z > 0, G, G * dtype(alpha)) if name == "leaky_relu" else \
                np.where(Z > 0, G, dtype(0)) if name == "relu" else G
        A, dZ = forward(name, Z), backward(name, Z, G)
        assert A.tobytes() == A_ref.tobytes() and dZ.tobytes() == dZ_ref.tobytes(), n
        Zi, Gi = Z.copy(), G.copy()
        _core.activation_forward(name, alpha, Zi, Zi)
        _core.activation_backward(name, alpha, Z, A, Gi, Gi)
        assert Zi.tobytes() == A_ref.tobytes() and Gi.tobytes() == dZ_ref.tobytes(), n


@pytest.mark.parametrize("name", ACTS)
def test_backward_against_finite_differences(rng, name):
    """dZ = ∂/∂Z Σ G ⊙ f(Z), inputs kept 0.1 away from the kinks at 0."""
    Z = away_from(rng, (4, 7), kinks=(0.0,))
    G = rng.standard_normal(Z.shape)
    numeric = numeric_grad(lambda: float(np.sum(G * forward(name, Z))), Z)
    assert rel_err(backward(name, Z, G), numeric) < 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTS)
def test_extreme_inputs_stay_finite(name, dtype):
    """|z| up to 1000 (and the float32 edge of exp): no NaN or inf, and the right limits."""
    Z = np.array([[-1000, -100, -89, -50, 0, 50, 89, 100, 1000]], dtype)
    G = np.ones_like(Z)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A, dZ = forward(name, Z), backward(name, Z, G)
    assert np.all(np.isfinite(A)) and np.all(np.isfinite(dZ))
    alpha = ALPHA.get(name, 0.0)
    assert_close(A, act_forward_ref(name, Z, alpha), dtype, name)
    assert_close(dZ, act_backward_ref(name, Z, G, alpha), dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTS)
def test_nan_propagates_like_numpy(name, dtype):
    """A NaN input gives a NaN output (softmax: the whole row), as NumPy's formulas do:
    a kernel must never hide a diverged value."""
    Z = np.array([[np.nan, 1.0, -1.0], [-2.0, np.nan, 0.5], [0.5, -0.5, 2.0]], dtype)
    A = forward(name, Z)
    expected = act_forward_ref(name, Z, ALPHA.get(name, 0.0))
    assert np.array_equal(np.isnan(A), np.isnan(expected)), A
    assert_close(A[2], expected[2], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_saturates_exactly(dtype):
    Z = np.array([[-1000.0, 1000.0, -1e30, 1e30]], dtype)
    A = forward("sigmoid", Z)
    assert A.tolist() == [[0.0, 1.0, 0.0, 1.0]]
    assert np.all(backward("sigmoid", Z, np.ones_like(Z)) == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_large_logits(rng, dtype):
    Z = (1e4 + rng.standard_normal((6, 10))).astype(dtype)
    Z[1] = -1e4
    Z[2, 3] = 2e4
    A = forward("softmax", Z)
    assert np.all(np.isfinite(A))
    assert_close(A, act_forward_ref("softmax", Z), dtype)
    assert_close(A.sum(axis=1), np.ones(6), dtype)


def test_names_and_codes_are_interchangeable(rng):
    Z = rng.standard_normal((5, 4))
    for name, code in _core.ACTIVATIONS.items():
        A = np.empty_like(Z)
        _core.activation_forward(code, ALPHA.get(name, 0.0), Z, A)
        assert np.array_equal(A, forward(name, Z)), name


def test_empty_batch_is_a_no_op():
    Z = np.empty((0, 4))
    _core.activation_forward("gelu", 0.0, Z, Z.copy())
    _core.activation_backward("softmax", 0.0, Z, Z, Z, Z.copy())
