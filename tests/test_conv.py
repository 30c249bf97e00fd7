"""ConvPlan (csrc/conv.pxi): forward Z = conv(X, W) + b, A = f(Z) and backward dW, db, dX
against a NumPy reference (tests/reference.py: shifted slices of the padded input) over a
sweep of geometries, both dtypes, every activation; finite differences in float64;
bitwise identical on 1, 2, 3 threads; the boundary; no allocation per batch once warm."""
import tracemalloc

import numpy as np
import pytest

from pyneuro import _core
from reference import (DTYPES, act_forward_ref, assert_scaled_close, conv_backward_ref,
                       conv_forward_ref, conv_unfold, f64, numeric_grad, rel_err)

ACTS = sorted(set(_core.ACTIVATIONS) - {"softmax"})
ALPHA = {"leaky_relu": 0.1, "elu": 1.3}

# (C, H, W, Cout, kernel, stride, padding, dilation, B)
GEOMETRIES = {
    "odd_asymmetric": (3, 9, 8, 4, (3, 2), (2, 1), (1, 0, 2, 1), (1, 2), 5),
    "one_channel_batch1": (1, 7, 7, 2, 3, 1, 0, 1, 1),
    "stride2_padded": (2, 11, 13, 5, 3, 2, 1, 1, 3),
    "1x1": (4, 10, 9, 3, 1, 1, 0, 1, 4),
    "1x1_stride2": (3, 5, 6, 2, 1, 2, 0, 1, 2),
    "dilation2_same": (3, 12, 12, 6, 3, 1, 2, 2, 2),
    "same_even_kernel": (2, 8, 8, 3, 4, 1, (1, 1, 2, 2), 1, 3),
    "mixed": (5, 6, 7, 7, (2, 3), (3, 2), (0, 1, 1, 0), (2, 1), 2),
    "padding_past_the_kernel": (1, 3, 3, 2, 2, 1, 3, 1, 2),
    "kernel_is_the_image": (2, 5, 4, 3, (5, 4), 1, 0, 1, 3),
    "lenet_conv2": (32, 12, 12, 64, 5, 1, 0, 1, 3),
    "many_taps": (9, 7, 6, 20, (4, 4), (2, 1), (1, 2, 0, 1), (1, 2), 3),   # K = 144: the direct tile
    "chunks": (4, 64, 64, 3, 3, 1, 0, 1, 65),        # K·P > a chunk's columns: 65 chunks of 1
}


def make_plan(geometry, dtype):
    C, H, W, Cout, k, s, p, d, B = GEOMETRIES[geometry]
    return _core.ConvPlan(C, H, W, Cout, kernel=k, stride=s, padding=p, dilation=d, dtype=dtype), B


def arrays(plan, B, rng, dtype):
    X = rng.standard_normal((B, plan.in_features)).astype(dtype)
    W = (rng.standard_normal((plan.out_channels, plan.k)) / np.sqrt(plan.k)).astype(dtype)
    b = rng.standard_normal(plan.out_channels).astype(dtype)
    return X, W, b


def forward(plan, X, W, b, act="identity", with_A=True):
    B = X.shape[0]
    Z = np.full((B, plan.out_features), np.nan, X.dtype)   # written, never read
    A = np.full((B, plan.out_features), np.nan, X.dtype) if with_A else None
    plan.forward(X, W, b, Z, A, act, ALPHA.get(act, 0.0))
    return Z, A


def backward(plan, X, W, delta, with_db=True, with_dX=True):
    dW = np.full(W.shape, np.nan, X.dtype)
    db = np.full(plan.out_channels, np.nan, X.dtype) if with_db else None
    dX = np.full(X.shape, np.nan, X.dtype) if with_dX else None
    plan.backward(X, W, delta, dW, db, dX)
    return dW, db, dX


# ---- against the reference ----------------------------------------------------------------------
def test_geometry_attributes():
    plan = _core.ConvPlan(3, 9, 8, 4, kernel=(3, 2), stride=(2, 1), padding=(1, 0, 2, 1), dilation=(1, 2))
    assert (plan.out_h, plan.out_w) == ((9 + 1 + 2 - 2 - 1) // 2 + 1, (8 + 0 + 1 - 2 - 1) // 1 + 1)
    assert (plan.in_features, plan.out_features, plan.k) == (3 * 9 * 8, 4 * plan.out_h * plan.out_w, 3 * 3 * 2)
    assert plan.padding == (1, 0, 2, 1) and plan.dtype == np.float32
    same = _core.ConvPlan(1, 28, 28, 1, kernel=5, padding=2)     # ints as pairs, padding as four
    assert (same.out_h, same.out_w, same.padding) == (28, 28, (2, 2, 2, 2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_forward_and_backward_match_the_reference(rng, geometry, dtype):
    plan, B = make_plan(geometry, dtype)
    X, W, b = arrays(plan, B, rng, dtype)
    Z, A = forward(plan, X, W, b, with_A=False)
    scale = conv_forward_ref(plan, np.abs(f64(X)), np.abs(f64(W)), np.abs(f64(b)))
    assert_scaled_close(Z, conv_forward_ref(plan, X, W, b), scale, dtype, "Z")
    assert A is None
    delta = rng.standard_normal(Z.shape).astype(dtype)
    dW, db, dX = backward(plan, X, W, delta)
    rW, rb, rX = conv_backward_ref(plan, X, W, delta)
    sW, sb, sX = conv_backward_ref(plan, np.abs(f64(X)), np.abs(f64(W)), np.abs(f64(delta)))
    assert_scaled_close(dW, rW, sW, dtype, "dW")
    assert_scaled_close(db, rb, sb, dtype, "db")
    assert_scaled_close(dX, rX, sX + np.finfo(np.float64).tiny, dtype, "dX")


@pytest.mark.parametrize("kernel", ["generic", "avx2"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", ["lenet_conv2", "many_taps", "odd_asymmetric", "1x1"])
def test_forward_has_the_bits_of_the_gemm_of_the_unfolded_image(rng, gemm_kernel, kernel, geometry, dtype):
    """Z (no bias) is bit for bit the project's GEMM of W and the unfolded image, sample by
    sample: with many taps (K ≥ 128, the tile that reads the image: conv_kernels.h; LeNet's
    conv2 in four K slices, 20 channels in a full and a partial panel) as with few (the
    GEMM's panels unfolded from the image) — every element the same FMA chain per K slice."""
    gemm_kernel(kernel)
    plan, B = make_plan(geometry, dtype)
    X, W, _ = arrays(plan, B, rng, dtype)
    Z, _ = forward(plan, X, W, None, with_A=False)
    cols = conv_unfold(plan, X)
    for s in range(B):
        expected = _core.gemm_into(W, cols[s], np.empty((plan.out_channels, cols.shape[2]), dtype))
        assert Z[s].tobytes() == expected.tobytes(), s


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_every_activation_is_fused(rng, act, dtype):
    plan, B = make_plan("stride2_padded", dtype)
    X, W, b = arrays(plan, B, rng, dtype)
    Z, A = forward(plan, X, W, b, act)
    Z0, _ = forward(plan, X, W, b, with_A=False)
    np.testing.assert_array_equal(Z, Z0)                         # Z does not depend on f
    ref = act_forward_ref(act, Z, ALPHA.get(act, 0.0))           # f of the kernel's own Z
    assert_scaled_close(A, ref, np.maximum(np.abs(ref), 1.0), dtype, f"A = {act}(Z)")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
@pytest.mark.parametrize("geometry", ["odd_asymmetric", "lenet_conv2", "1x1"])
def test_epilogue_adds_one_bias_per_channel_bit_for_bit(rng, act, geometry, dtype):
    """The epilogue's bias is one value per row of C (an output channel): Z = C + b[c] and
    A = f(Z) exactly, C the convolution without bias (its Z with b = 0 is C + 0: equal to C
    except for the sign of a zero, so b has no zeros here), NaN, ±inf and subnormals in b."""
    plan, B = make_plan(geometry, dtype)
    X, W, b = arrays(plan, B, rng, dtype)
    b[:4] = np.array([np.nan, np.inf, -np.inf, 1e-40], dtype)[:b.size]
    C, _ = forward(plan, X, W, np.zeros_like(b), with_A=False)
    Z, A = forward(plan, X, W, b, act)
    bias = np.repeat(b, C.shape[1] // b.size)            # (N, Cout·P): channel-major per sample
    with np.errstate(invalid="ignore"):
        Z_ref = C + bias
        A_ref = np.where(Z_ref <= 0, dtype(0), Z_ref) if act == "relu" else \
            np.where(Z_ref > 0, Z_ref, Z_ref * dtype(ALPHA[act]))
    assert Z.tobytes() == Z_ref.tobytes() and A.tobytes() == A_ref.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["identity", "relu", "leaky_relu", "tanh"])
@pytest.mark.parametrize("window", [(2, 2, 0), (3, 2, 1), (2, 1, 0)])   # kernel, stride, padding
@pytest.mark.parametrize("case", ["copy", "quantised"])
def test_a_max_pool_after_a_convolution_in_the_chain_is_the_layers_bit_for_bit(rng, case, window, act, dtype):
    """InferenceChain pools a convolution's output before its bias and f where that gives the
    same bits (inference_chain.pxi, pools_first): the chain equals ConvPlan.forward then
    PoolPlan.forward bit for bit. "copy": a 1×1 convolution with W = 1 copies X into three
    channels, X drawn from NaN, ±inf, ±0, ±subnormal, ±1, 2, so windows tie and hold NaN
    after a −inf or +inf; b with +0, −0, finite values and (not deferred) ±inf and NaN —
    leaky ReLU's α·(−subnormal) = −0 before a +0, or b = −inf after z = +inf, would differ if
    deferred. "quantised": a 3×3 convolution of halves (exact sums, many ties)."""
    k, s, p = window
    tiny = np.finfo(dtype).smallest_subnormal
    if case == "copy":
        plan, B = _core.ConvPlan(1, 6, 6, 3, kernel=1, dtype=dtype), 200
        specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, tiny, -tiny, 1, -1, 2], dtype)
        X, W = rng.choice(specials, (B, plan.in_features)), np.ones((3, 1), dtype)
        biases = [np.array(v, dtype) for v in ([0, -0.0, 0.5], [-0.0, -0.0, -0.0], [np.inf, 0, 1],
                                                [0, -np.inf, 0], [np.nan, 0, 0])]
    else:
        plan, B = _core.ConvPlan(2, 9, 8, 4, kernel=3, padding=1, dtype=dtype), 7
        X = np.round(rng.standard_normal((B, plan.in_features)) * 2).astype(dtype) / 2
        X[0, :5] = [np.nan, np.inf, -np.inf, -0.0, tiny]
        W = np.round(rng.standard_normal((4, plan.k)) * 2).astype(dtype) / 2
        biases = [np.round(rng.standard_normal(4) * 2).astype(dtype) / 2, np.array([-0.0, 0, -0.0, 1], dtype)]
    pool = _core.PoolPlan(plan.out_channels, plan.out_h, plan.out_w, "max", kernel=k, stride=s, padding=p,
                          dtype=dtype)
    alpha = ALPHA.get(act, 0.0)
    for b in biases:
        chain = _core.InferenceChain([("conv", plan, W, b, act, alpha), ("pool", pool)])
        for n in (B, 1):
            with np.errstate(invalid="ignore", over="ignore"):
                Z, A = forward(plan, X[:n], W, b, act)
            layers = pool.forward(A, np.empty((n, pool.out_features), dtype), training=False)
            got = chain.forward(X[:n], np.full((n, pool.out_features), np.nan, dtype))
            assert got.tobytes() == layers.tobytes(), (b, n)


@pytest.mark.parametrize("dtype", DTYPES)
def test_without_bias_and_without_dX(rng, dtype):
    plan, B = make_plan("odd_asymmetric", dtype)
    X, W, b = arrays(plan, B, rng, dtype)
    Z, _ = forward(plan, X, W, None, with_A=False)
    Zb, _ = forward(plan, X, W, b, with_A=False)
    assert_scaled_close(Zb - Z, np.repeat(f64(b), plan.out_h * plan.out_w)[None].repeat(B, 0),
                        np.abs(f64(Zb)) + 1, dtype, "Z + b − Z")
    delta = rng.standard_normal(Z.shape).astype(dtype)
    full = backward(plan, X, W, delta)
    dW, db, dX = backward(plan, X, W, delta, with_db=False, with_dX=False)
    assert db is None and dX is None
    np.testing.assert_array_equal(dW, full[0])


def test_outputs_are_overwritten_not_accumulated(rng):
    plan, B = make_plan("stride2_padded", np.float64)
    X, W, b = arrays(plan, B, rng, np.float64)
    delta = rng.standard_normal((B, plan.out_features))
    first = backward(plan, X, W, delta)
    again = backward(plan, X, W, delta)      # the same buffers' reuse changes nothing
    for a, c in zip(first, again):
        np.testing.assert_array_equal(a, c)


def test_batch_of_zero_samples():
    plan = _core.ConvPlan(2, 5, 5, 3, kernel=3)
    X, Z = np.zeros((0, plan.in_features), np.float32), np.zeros((0, plan.out_features), np.float32)
    W, b = np.ones((3, plan.k), np.float32), np.ones(3, np.float32)
    plan.forward(X, W, b, Z, None)
    dW, db = np.full(W.shape, np.nan, np.float32), np.full(3, np.nan, np.float32)
    plan.backward(X, W, Z, dW, db, np.zeros_like(X))
    assert not dW.any() and not db.any()


# ---- finite differences (float64) -----------------------------------------------------------------
@pytest.mark.parametrize("geometry", ["odd_asymmetric", "same_even_kernel", "mixed"])
def test_backward_matches_finite_differences(rng, geometry):
    """L = Σ G ⊙ tanh(Z): backward given δ = G ⊙ tanh′(Z) against central differences of L."""
    plan, B = make_plan(geometry, np.float64)
    X, W, b = arrays(plan, B, rng, np.float64)
    G = rng.standard_normal((B, plan.out_features))

    def loss():
        _, A = forward(plan, X, W, b, "tanh")
        return float(np.sum(G * A))

    _, A = forward(plan, X, W, b, "tanh")
    dW, db, dX = backward(plan, X, W, G * (1 - A * A))
    for name, analytic, param in (("dW", dW, W), ("db", db, b), ("dX", dX, X)):
        assert rel_err(analytic, numeric_grad(loss, param)) < 1e-7, name


# ---- threads ------------------------------------------------------------------------------------
needs_openmp = pytest.mark.skipif(not _core.openmp_enabled(), reason="built without OpenMP")


@needs_openmp
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", ["lenet_conv2", "chunks", "stride2_padded"])
def test_bitwise_identical_on_1_2_3_threads(num_threads, geometry, dtype):
    plan, B = make_plan(geometry, dtype)
    B = max(B, 64) if geometry != "chunks" else B
    outputs = {}
    for n in (1, 2, 3):
        num_threads(n)
        rng = np.random.default_rng(7)
        X, W, b = arrays(plan, B, rng, dtype)
        Z, A = forward(plan, X, W, b, "gelu")
        outputs[n] = [a.tobytes() for a in (Z, A, *backward(plan, X, W, rng.standard_normal(Z.shape).astype(dtype)))]
    assert outputs[2] == outputs[1], "2 threads differ from 1"
    assert outputs[3] == outputs[1], "3 threads differ from 1"


# ---- the boundary -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,error,match", [
    (dict(C=1, H=3, W=3, out_channels=1, kernel=5), ValueError, r"output would be -1 x -1.*3 x 3.*5 x 5"),
    (dict(C=1, H=8, W=8, out_channels=1, kernel=3, dilation=4), ValueError, r"output would be 0 x 0.*spans 9 x 9"),
    (dict(C=1, H=8, W=4, out_channels=1, kernel=(3, 5), padding=(0, 0, 0, 0)), ValueError, r"output would be 6 x 0"),
    (dict(C=0, H=8, W=8, out_channels=1, kernel=3), ValueError, r"C must be >= 1, got 0"),
    (dict(C=1, H=8, W=8, out_channels=0, kernel=3), ValueError, r"out_channels must be >= 1"),
    (dict(C=1, H=8, W=8, out_channels=1, kernel=(3, 0)), ValueError, r"kernel width must be >= 1"),
    (dict(C=1, H=8, W=8, out_channels=1, kernel=3, stride=0), ValueError, r"stride height must be >= 1"),
    (dict(C=1, H=8, W=8, out_channels=1, kernel=3, padding=-1), ValueError, r"padding must be >= 0"),
    (dict(C=1, H=8, W=8, out_channels=1, kernel=3, padding=(1, 2, 3)), TypeError, r"padding"),
    (dict(C=1.0, H=8, W=8, out_channels=1, kernel=3), TypeError, r"C must be an int"),
    (dict(C=1, H=8, W=8, out_channels=1, kernel=(3, 3, 3)), TypeError, r"kernel must be an int or a pair"),
    (dict(C=1, H=8, W=8, out_channels=1, kernel=3, dtype=np.int32), TypeError, r"dtype must be float32 or float64"),
])
def test_bad_geometry_is_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        _core.ConvPlan(**kwargs)


def test_bad_calls_are_refused_by_name():
    plan = _core.ConvPlan(2, 6, 6, 3, kernel=3)
    X, W, b = np.zeros((4, 72), np.float32), np.zeros((3, 18), np.float32), np.zeros(3, np.float32)
    Z, A = np.zeros((4, 48), np.float32), np.zeros((4, 48), np.float32)
    with pytest.raises(ValueError, match="softmax"):
        plan.forward(X, W, b, Z, A, "softmax")
    with pytest.raises(ValueError, match="needs an output array A"):
        plan.forward(X, W, b, Z, None, "relu")
    with pytest.raises(ValueError, match="activation"):
        plan.forward(X, W, b, Z, A, "swish")
    with pytest.raises(TypeError, match=r"plan is float32 but X is float64"):
        plan.forward(*(a.astype(np.float64) for a in (X, W, b, Z, A)))
    with pytest.raises(TypeError, match=r"\bW\b"):
        plan.forward(X, W.astype(np.float64), b, Z, A)
    with pytest.raises(ValueError, match=r"^X: expected shape \(4, 72\), got \(4, 71\)"):
        plan.forward(X[:, :71].copy(), W, b, Z, A)
    with pytest.raises(ValueError, match=r"^Z: expected shape \(4, 48\)"):
        plan.forward(X, W, b, Z[:3], A)
    with pytest.raises(ValueError, match=r"^X: expected a C-contiguous"):
        plan.forward(np.asfortranarray(X), W, b, Z, A)
    with pytest.raises(ValueError, match=r"^dX: expected shape \(4, 72\)"):
        plan.backward(X, W, Z, np.zeros_like(W), np.zeros_like(b), np.zeros((4, 73), np.float32))
    with pytest.raises(ValueError, match=r"^delta: expected shape \(4, 48\)"):
        plan.backward(X, W, Z[:, :47].copy(), np.zeros_like(W), np.zeros_like(b))


# ---- no allocation per batch once warm ------------------------------------------------------------
def test_no_allocation_per_batch_after_the_first(rng):
    """The plan's buffers (W and Wᵀ packed for the GEMM) are sized by the geometry alone and
    made at first use: no later batch, of any size, allocates (NumPy reports its buffers to
    tracemalloc; the padded image, the unfolded dX columns and gemm's packing buffers are
    per-thread and kept, runtime.h)."""
    plan = _core.ConvPlan(2, 8, 8, 4, kernel=3, padding=(1, 1, 1, 1))
    X, W, b = arrays(plan, 65, rng, np.float32)
    Z, A = np.empty((65, plan.out_features), np.float32), np.empty((65, plan.out_features), np.float32)
    delta, dW, db, dX = rng.standard_normal(Z.shape).astype(np.float32), np.empty_like(W), np.empty_like(b), np.empty_like(X)

    def step(n):
        plan.forward(X[:n], W, b, Z[:n], A[:n], "relu")
        plan.backward(X[:n], W, delta[:n], dW, db, dX[:n])

    step(64)
    held = plan.work_elements
    assert held >= 2 * plan.k * plan.out_channels             # W and Wᵀ, packed
    assert held < 4 * plan.k * plan.out_channels + 4096        # and no columns of the batch
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for n in (64, 17, 65, 1):
            step(n)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert plan.work_elements == held
    assert peak < 16 * 1024, f"{peak} bytes allocated by warm batches"
