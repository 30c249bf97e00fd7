"""dense_forward (Z = X·W + b, A = f(Z) in the GEMM epilogue) and dense_backward
(dW = Xᵀ·δ, db = Σ δ, dX = δ·Wᵀ) against NumPy, both dtypes, and the
whole layer against finite differences in float64."""
import numpy as np
import pytest

from pyneuro import _core
from reference import (DTYPES, act_forward_ref, assert_close, assert_scaled_close, away_from, f64,
                       numeric_grad, rel_err)

ACTS = sorted(_core.ACTIVATIONS)
ALPHA = {"leaky_relu": 0.1, "elu": 1.3}

# (B, n, m): odd sizes, K past one KC slice, m past NR and one column-sum block, n = 0
SHAPES = [(1, 1, 1), (37, 13, 19), (5, 300, 7), (100, 8, 130), (4, 0, 5)]


def layer(rng, B, n, m, dtype):
    X = rng.standard_normal((B, n)).astype(dtype)
    W = (rng.standard_normal((n, m)) / np.sqrt(max(n, 1))).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    return X, W, b


def forward(X, W, b, act, with_A=True):
    B, m = X.shape[0], W.shape[1]
    Z = np.full((B, m), np.nan, X.dtype)  # outputs are written, never read
    A = np.full((B, m), np.nan, X.dtype) if with_A else None
    _core.dense_forward(X, W, b, Z, A, act, ALPHA.get(act, 0.0))
    return Z, A


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("B,n,m", SHAPES)
def test_dense_forward(rng, B, n, m, act, dtype):
    X, W, b = layer(rng, B, n, m, dtype)
    Z, A = forward(X, W, b, act)
    x, w = f64(X), f64(W)
    assert_scaled_close(Z, x @ w + f64(b), np.abs(x) @ np.abs(w) + np.abs(f64(b)), dtype, "Z")
    # the epilogue applies f to the Z it wrote
    assert_close(A, act_forward_ref(act, Z, ALPHA.get(act, 0.0)), dtype, "A")
    if act == "softmax":
        assert_close(A.sum(axis=1), np.ones(B), dtype, "row sums")


PIECEWISE = {"identity": lambda Z, a: Z, "relu": lambda Z, a: np.where(Z <= 0, Z.dtype.type(0), Z),
             "leaky_relu": lambda Z, a: np.where(Z > 0, Z, Z * Z.dtype.type(a))}


@pytest.mark.parametrize("kernel", ["generic", "avx2"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", sorted(PIECEWISE))
def test_epilogue_gives_the_formulas_bits(rng, gemm_kernel, kernel, act, dtype):
    """The GEMM epilogue (a whole tile per call, pn_bias_act: vectors, then a scalar tail)
    writes exactly Z = C + b and A = f(Z), C the product alone: for every tile height and
    width (B = 1..7 rows, m = 1..40 columns), with ±0, NaN, ±inf and subnormals in b and C."""
    gemm_kernel(kernel)
    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-40, -1e-40, 1.0, -1.0], dtype)
    for B in range(1, 8):
        for m in range(1, 41, 3):
            X, W, b = layer(rng, B, 5, m, dtype)
            b[:special.size] = special[:m]
            X[B // 2, 0] = [np.nan, np.inf, 0.0][m % 3]     # rows of C with NaN or ±inf
            C = _core.gemm_into(X, W, np.empty((B, m), dtype))
            with np.errstate(invalid="ignore", over="ignore"):
                Z_ref = C + b
                A_ref = PIECEWISE[act](Z_ref, ALPHA.get(act, 0.0))
            Z, A = forward(X, W, b, act)
            assert Z.tobytes() == Z_ref.tobytes() and A.tobytes() == A_ref.tobytes(), (B, m)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_forward_without_A_is_identity(rng, dtype):
    X, W, b = layer(rng, 33, 17, 21, dtype)
    Z, _ = forward(X, W, b, "identity", with_A=False)
    Z2, A2 = forward(X, W, b, "identity")
    assert np.array_equal(Z, Z2) and np.array_equal(Z, A2)
    with pytest.raises(ValueError, match="needs an output array A"):
        forward(X, W, b, "relu", with_A=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,n,m", SHAPES + [(0, 3, 4), (6, 4, 0)])
@pytest.mark.parametrize("with_dX", [True, False])
def test_dense_backward(rng, B, n, m, with_dX, dtype):
    X, W, _ = layer(rng, B, n, m, dtype)
    D = rng.standard_normal((B, m)).astype(dtype)
    dW, db = np.full((n, m), np.nan, dtype), np.full(m, np.nan, dtype)
    dX = np.full((B, n), np.nan, dtype) if with_dX else None
    _core.dense_backward(X, W, D, dW, db, dX)
    x, w, d = f64(X), f64(W), f64(D)
    assert_scaled_close(dW, x.T @ d, np.abs(x).T @ np.abs(d), dtype, "dW")
    assert_scaled_close(db, d.sum(axis=0), np.abs(d).sum(axis=0), dtype, "db")
    if with_dX:
        assert_scaled_close(dX, d @ w.T, np.abs(d) @ np.abs(w).T, dtype, "dX")


@pytest.mark.parametrize("act", ACTS)
def test_dense_layer_against_finite_differences(rng, act):
    """L = Σ G ⊙ f(X·W + b): activation_backward then dense_backward give ∂L/∂W, ∂L/∂b, ∂L/∂X."""
    B, n, m = 4, 5, 3
    X, W, b = rng.standard_normal((B, n)), rng.standard_normal((n, m)), rng.standard_normal(m)
    G = rng.standard_normal((B, m))
    alpha = ALPHA.get(act, 0.0)
    # keep every pre-activation away from the kink at 0 by moving the bias
    Z, _ = forward(X, W, b, act)
    b += away_from(rng, (m,), kinks=tuple((-Z).ravel()), margin=0.05, low=-1, high=1)

    def loss():
        return float(np.sum(G * forward(X, W, b, act)[1]))

    Z, A = forward(X, W, b, act)
    delta, dW, db, dX = np.empty_like(Z), np.empty_like(W), np.empty_like(b), np.empty_like(X)
    _core.activation_backward(act, alpha, Z, A, G, delta)
    _core.dense_backward(X, W, delta, dW, db, dX)
    for name, param, grad in (("W", W, dW), ("b", b, db), ("X", X, dX)):
        assert rel_err(grad, numeric_grad(loss, param)) < 1e-6, name


def dense_chain(Ws, bs, acts, alphas):
    return _core.InferenceChain([("dense", W, b, act, alpha) for W, b, act, alpha in zip(Ws, bs, acts, alphas)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [1, 5, 33, 300])
@pytest.mark.parametrize("acts", [("relu", "relu", "identity"), ("gelu", "leaky_relu", "softmax"),
                                  ("elu", "sigmoid", "tanh")])
def test_dense_chain_equals_layer_by_layer(rng, B, acts, dtype):
    """InferenceChain of dense steps is the same arithmetic as dense_forward per layer: bitwise equal."""
    widths = (37, 50, 20, 7)
    Ws = [rng.standard_normal((a, b)).astype(dtype) * 0.3 for a, b in zip(widths, widths[1:])]
    bs = [rng.standard_normal(b).astype(dtype) for b in widths[1:]]
    alphas = [0.05 if a == "leaky_relu" else 0.0 for a in acts]
    X = rng.standard_normal((B, widths[0])).astype(dtype)
    out = dense_chain(Ws, bs, acts, alphas).forward(X, np.empty((B, widths[-1]), dtype))
    a = X
    for W, b, act, alpha in zip(Ws, bs, acts, alphas):
        Z, A = np.empty((B, W.shape[1]), dtype), np.empty((B, W.shape[1]), dtype)
        _core.dense_forward(a, W, b, Z, None if act == "identity" else A, act, alpha)
        a = Z if act == "identity" else A
    assert np.array_equal(out, a)
    ref = f64(X)
    for W, b, act, alpha in zip(Ws, bs, acts, alphas):
        ref = act_forward_ref(act, f64(ref) @ f64(W) + f64(b), alpha)
    np.testing.assert_allclose(out, ref, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-5)


def test_dense_chain_sees_weight_updates_in_place(rng):
    W = rng.standard_normal((4, 3)).astype(np.float32)
    b = np.zeros(3, np.float32)
    chain = dense_chain([W], [b], ["identity"], [0.0])
    X = rng.standard_normal((2, 4)).astype(np.float32)
    W *= 2
    b += 1
    assert np.array_equal(chain.forward(X, np.empty((2, 3), np.float32)),
                          _core.gemm_into(X, W, np.empty((2, 3), np.float32)) + 1)


@pytest.mark.parametrize("Ws,bs,match", [
    ([], [], "at least one step"),
    ([np.zeros((3, 4), np.float32), np.zeros((5, 2), np.float32)],
     [np.zeros(4, np.float32), np.zeros(2, np.float32)], r"step 1 W has 5 rows but step 0 gives 4 values per row"),
])
def test_dense_chain_refuses_a_broken_chain(Ws, bs, match):
    with pytest.raises(ValueError, match=match):
        dense_chain(Ws, bs, ["relu"] * len(Ws), [0.0] * len(Ws))


@pytest.mark.parametrize("act", ["softmax", "relu"])
def test_dense_chain_with_a_zero_width_layer(act):
    """Found by the fuzzer under AddressSanitizer: softmax over a row of 0 read Z[0]."""
    Ws = [np.ones((3, 0), np.float32)]
    out = dense_chain(Ws, [np.ones(0, np.float32)], [act], [0.0]).forward(
        np.ones((4, 3), np.float32), np.empty((4, 0), np.float32))
    assert out.shape == (4, 0)
