"""gemm_into: C = α·op(A)·op(B) + β·C against NumPy, both dtypes, both micro-kernels.

Blocking: MC=96, KC=256, NC=4096, MR=6, NR=16 (float32) / 8 (float64); the shapes
below straddle every one of those edges. Tolerance: see tests/reference.py.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyneuro import _core
from reference import DTYPES, assert_scaled_close, f64

TRANS = [(False, False), (True, False), (False, True), (True, True)]

# (M, K, N)
SHAPES = [
    (1, 1, 1),
    (7, 13, 97),
    (97, 7, 13),
    (13, 97, 7),
    (5, 6, 17),       # M < MR, N one past NR(f32)
    (6, 1, 8),        # exactly one f64 tile
    (95, 255, 15),    # one short of MC, KC, NR
    (97, 257, 17),    # one past MC, KC, NR
    (257, 257, 257),
    (193, 513, 33),   # two MC blocks + 1, two KC slices + 1
    (1000, 3, 3),     # tall
    (3, 3, 1000),     # wide
    (3, 1000, 3),     # deep
    (2, 5, 4097),     # one past NC: two column slabs
    (5, 0, 7),        # K = 0: C = β·C
    (0, 4, 3),        # empty results
    (4, 3, 0),
]


def operands(rng, M, K, N, ta, tb, dtype):
    A = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
    B = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
    C = rng.standard_normal((M, N)).astype(dtype)
    return A, B, C


def check_gemm(A, B, C0, ta, tb, alpha, beta, dtype):
    """Run gemm_into on a copy of C0 (NaN-filled when β = 0: it must not be read) and compare."""
    a = f64(A).T if ta else f64(A)
    b = f64(B).T if tb else f64(B)
    expected = alpha * (a @ b)
    scale = abs(alpha) * (np.abs(a) @ np.abs(b))
    if beta != 0:
        expected += beta * f64(C0)
        scale += abs(beta) * np.abs(f64(C0))
        C = C0.copy()
    else:
        C = np.full_like(C0, np.nan)
    out = _core.gemm_into(A, B, C, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
    assert out is C
    assert_scaled_close(C, expected, scale, dtype, f"gemm {C.shape} ta={ta} tb={tb} α={alpha} β={beta}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", TRANS)
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_gemm_shapes(rng, M, K, N, ta, tb, dtype):
    A, B, C0 = operands(rng, M, K, N, ta, tb, dtype)
    check_gemm(A, B, C0, ta, tb, 1.0, 0.0, dtype)      # plain product, C full of NaN
    check_gemm(A, B, C0, ta, tb, -0.75, 1.5, dtype)    # scaled and accumulated


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha,beta", [(1, 0), (2.5, 0), (-1, 1), (0.5, -2), (0, 3), (1, 1), (0, 0)])
@pytest.mark.parametrize("M,K,N", [(31, 300, 45), (5, 0, 3)])
def test_gemm_alpha_beta(rng, M, K, N, alpha, beta, dtype):
    for ta, tb in TRANS:
        A, B, C0 = operands(rng, M, K, N, ta, tb, dtype)
        check_gemm(A, B, C0, ta, tb, alpha, beta, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_beta_zero_ignores_nan_and_inf_in_C(rng, dtype):
    A, B, _ = operands(rng, 20, 300, 30, False, False, dtype)
    C = np.full((20, 30), np.nan, dtype)
    C[::2] = np.inf
    _core.gemm_into(A, B, C)
    assert np.all(np.isfinite(C))
    assert_scaled_close(C, f64(A) @ f64(B), np.abs(f64(A)) @ np.abs(f64(B)), dtype)


@pytest.mark.parametrize("kernel", ["generic", "avx2"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (7, 13, 97), (97, 257, 17), (50, 600, 40)])
def test_micro_kernels_agree_with_numpy(gemm_kernel, kernel, rng, M, K, N, dtype):
    gemm_kernel(kernel)
    for ta, tb in TRANS:
        A, B, C0 = operands(rng, M, K, N, ta, tb, dtype)
        check_gemm(A, B, C0, ta, tb, 1.0, 0.0, dtype)
        check_gemm(A, B, C0, ta, tb, 0.5, -1.0, dtype)


def test_set_gemm_kernel_names(gemm_kernel):
    gemm_kernel("generic")
    _core.set_gemm_kernel("auto")
    assert _core.gemm_kernel() in ("generic", "avx2")
    with pytest.raises(ValueError, match="'auto', 'avx2' or 'generic'"):
        _core.set_gemm_kernel("sse9")


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    M=st.integers(1, 300), K=st.integers(1, 300), N=st.integers(1, 300),
    ta=st.booleans(), tb=st.booleans(), dtype=st.sampled_from(DTYPES),
    alpha=st.sampled_from([1.0, -0.5, 3.0]), beta=st.sampled_from([0.0, 1.0, -2.25]),
    seed=st.integers(0, 2**32 - 1),
)
def test_gemm_random_shapes(M, K, N, ta, tb, dtype, alpha, beta, seed):
    A, B, C0 = operands(np.random.default_rng(seed), M, K, N, ta, tb, dtype)
    check_gemm(A, B, C0, ta, tb, alpha, beta, dtype)
