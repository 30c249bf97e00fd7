"""gemm_into: C = α·op(A)·op(B) + β·C against NumPy, both dtypes, both micro-kernels.

Blocking: MC=144 (float32) / 72 (float64), KC=256, NC=4080 (upper bounds: K, M and N
are cut into equal slices), MR=6, NR=16 (float32) / 8 (float64); the shapes below
straddle those edges. Tolerance: see tests/reference.py.
"""
import os
import subprocess
import sys

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
    (97, 257, 17),    # one past KC, NR
    (145, 513, 17),   # one past MC, 2·KC
    (4, 2, 4081),     # one past NC
    (257, 257, 257),
    (193, 513, 33),   # two MC blocks + 1, two KC slices + 1
    (1000, 3, 3),     # tall
    (3, 3, 1000),     # wide
    (3, 1000, 3),     # deep
    (2, 5, 4097),     # two column slabs
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


@pytest.mark.parametrize("kernel", ["generic", "avx2", "avx512"])
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
    assert _core.gemm_kernel() in ("generic", "avx2", "avx512")
    with pytest.raises(ValueError, match="'auto', 'avx512', 'avx2' or 'generic'"):
        _core.set_gemm_kernel("sse9")


PRIMES = [2, 3, 5, 7, 11, 13, 17, 31, 61, 97, 127, 139, 149, 211, 251, 257, 277, 293]
SIZES = st.one_of(st.integers(1, 300), st.sampled_from(PRIMES))


@settings(max_examples=120, deadline=None, derandomize=True)
@given(
    M=SIZES, K=SIZES, N=SIZES, ta=st.booleans(), tb=st.booleans(), dtype=st.sampled_from(DTYPES),
    alpha=st.sampled_from([1.0, -0.5, 3.0]), beta=st.sampled_from([0.0, 1.0, -2.25]),
    threads=st.integers(1, 3), kernel=st.sampled_from(["generic", "avx2", "avx512"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_gemm_random_sweep(M, K, N, ta, tb, dtype, alpha, beta, threads, kernel, seed):
    if not _cpu_has(kernel):
        kernel = "generic"
    _core.set_num_threads(threads)
    _core.set_gemm_kernel(kernel)
    try:
        A, B, C0 = operands(np.random.default_rng(seed), M, K, N, ta, tb, dtype)
        check_gemm(A, B, C0, ta, tb, alpha, beta, dtype)
    finally:
        _core.set_num_threads(None)
        _core.set_gemm_kernel("auto")


def _cpu_has(kernel):
    try:
        _core.set_gemm_kernel(kernel)
        return True
    except ValueError:
        return False
    finally:
        _core.set_gemm_kernel("auto")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", [(61, 277, 139), (300, 300, 300), (6, 1000, 16)])
def test_generic_and_avx2_kernels_agree(gemm_kernel, rng, M, K, N, dtype):
    """Same packing and order; only FMA rounding differs: agreement to a few ulps of the scale."""
    A, B, _ = operands(rng, M, K, N, False, True, dtype)
    out = {}
    for kernel in ("generic", "avx2"):
        gemm_kernel(kernel)
        out[kernel] = _core.gemm_into(A, B, np.empty((M, N), dtype), trans_b=True)
    scale = np.abs(f64(A)) @ np.abs(f64(B)).T
    assert_scaled_close(out["avx2"], f64(out["generic"]), scale, dtype, "avx2 vs generic")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", [(61, 277, 139), (300, 300, 300), (6, 1000, 64), (13, 40, 97), (1, 784, 300)])
def test_avx512_and_avx2_kernels_give_the_same_bits(gemm_kernel, num_threads, rng, M, K, N, dtype):
    """AVX-512 tiles run each element's FMA chain over p in the AVX2 tiles' order: the same
    bits, for every transpose, with α, β, and on 1 and 3 threads."""
    for ta, tb in TRANS:
        A, B, C0 = operands(rng, M, K, N, ta, tb, dtype)
        out = {}
        for kernel in ("avx2", "avx512"):
            gemm_kernel(kernel)
            for threads in (1, 3):
                num_threads(threads)
                out[kernel, threads] = _core.gemm_into(A, B, C0.copy(), alpha=0.5, beta=-1.0,
                                                       trans_a=ta, trans_b=tb).tobytes()
        assert len(set(out.values())) == 1, (ta, tb)


@pytest.mark.parametrize("kernel", ["generic", "avx2"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.5, -1.0)])
@pytest.mark.parametrize("K,N", [(257, 300), (784, 256), (1000, 10), (2049, 129), (261, 1100)])
def test_one_row_is_that_row_of_a_batch_on_any_thread_count(num_threads, gemm_kernel, rng, kernel, K, N,
                                                            alpha, beta, dtype):
    """One row reads B a row at a time (pn_row: sums of up to 512 columns at once, 8 rows of
    B a pass, then a tail; the last N mod NR columns by pn_row_tail, B in place), and with
    α = 1, β = 0 spreads its K slices over the threads (row_k_slices, adding their products
    in gemm_block's order): bitwise the row of a many-row product, for every transpose and
    1 to 3 threads, and NumPy's to a few ulps."""
    gemm_kernel(kernel)
    for ta, tb in TRANS:
        A, B, C0 = operands(rng, 40, K, N, ta, tb, dtype)
        row = A[:, :1].copy() if ta else A[:1]
        num_threads(1)
        batch = _core.gemm_into(A, B, C0.copy(), trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
        for threads in (1, 2, 3):
            num_threads(threads)
            one = _core.gemm_into(row, B, C0[:1].copy() if beta else np.full((1, N), np.nan, dtype),
                                  trans_a=ta, trans_b=tb, alpha=alpha, beta=beta)
            assert one.tobytes() == batch[:1].tobytes(), (ta, tb, threads)
        a, Bm = f64(row.T if ta else row), f64(B.T if tb else B)
        assert_scaled_close(one, alpha * (a @ Bm) + beta * f64(C0[:1]),
                            abs(alpha) * (np.abs(a) @ np.abs(Bm)) + abs(beta) * np.abs(f64(C0[:1])),
                            dtype, "one row vs NumPy")


@pytest.mark.parametrize("kernel", ["generic", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fma_probe_counts_its_work(gemm_kernel, kernel, dtype):
    gemm_kernel(kernel)
    lanes = (64 if kernel == "avx512" else 32) // np.dtype(dtype).itemsize
    assert _core.fma_probe(1000, dtype) == 2 * 12 * lanes * 1000 * _core.get_num_threads()
    with pytest.raises(ValueError, match="n must be >= 0"):
        _core.fma_probe(-1)


@pytest.mark.parametrize("name", ["generic", "auto"])
def test_kernel_chosen_by_environment(name):
    code = ("import numpy as np; from pyneuro import _core; print(_core.gemm_kernel()); "
            "A = np.arange(12.0).reshape(3, 4); B = np.ones((4, 5)); "
            "assert np.array_equal(_core.gemm_into(A, B, np.empty((3, 5))), A @ B)")
    env = dict(os.environ, PYNEURO_GEMM_KERNEL=name)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    expected = {"generic"} if name == "generic" else {"generic", "avx2", "avx512"}
    assert out.stdout.strip() in expected


def test_unknown_kernel_in_environment_is_refused():
    env = dict(os.environ, PYNEURO_GEMM_KERNEL="sse9")
    out = subprocess.run([sys.executable, "-c", "import pyneuro"], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "PYNEURO_GEMM_KERNEL='sse9'" in out.stderr


# Packing (gemm_pack.h): each contiguous direction of op(A) and op(B) has its own SIMD path
# per kernel (A: 6 × L transposes or, for Aᵀ, straight copies of 6; B: NR-wide copies or,
# for Bᵀ, L × L transposes), with scalar edges. Small integers make every product and sum
# exact, so the result must equal NumPy's bit for bit: a misplaced element cannot hide.
# A is packed when N > 8·NR and B when M > 8·MR (otherwise they are read in place).
PACK_SHAPES = [
    (49, 1, 129), (49, 3, 129), (53, 7, 131), (55, 9, 137),   # k below / around L = 8, 4
    (61, 17, 145), (97, 255, 143), (145, 257, 161),            # m, n off MR, NR; k around KC
    (293, 31, 300), (300, 260, 33),
]


@pytest.mark.parametrize("kernel", ["generic", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", PACK_SHAPES)
def test_packing_edges_exact(gemm_kernel, num_threads, kernel, M, K, N, dtype):
    gemm_kernel(kernel)
    rng = np.random.default_rng(M * 1000 + K)
    for ta, tb in TRANS:
        A = rng.integers(-8, 9, (K, M) if ta else (M, K)).astype(dtype)
        B = rng.integers(-8, 9, (N, K) if tb else (K, N)).astype(dtype)
        expected = (A.T if ta else A).astype(np.int64) @ (B.T if tb else B).astype(np.int64)
        for threads in (1, 2, 3):
            num_threads(threads)
            C = _core.gemm_into(A, B, np.full((M, N), np.nan, dtype), trans_a=ta, trans_b=tb)
            np.testing.assert_array_equal(C, expected.astype(dtype),
                                          err_msg=f"{kernel} {dtype.__name__} ta={ta} tb={tb} threads={threads}")
