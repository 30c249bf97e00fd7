"""pytest-benchmark suite for the core kernels: `python -m pytest bench -q`.

Each GEMM benchmark has a NumPy twin on the same operands so the two rows of the
table compare directly (ratios and % of peak come with the GEMM issue's script)."""
import numpy as np
import pytest

from pyneuro import _core

SIZES = [(32, 784, 256), (128, 784, 256), (256, 256, 256)]


@pytest.mark.parametrize("M,K,N", SIZES)
@pytest.mark.parametrize("impl", ["pyneuro", "numpy"])
def test_gemm_f32(benchmark, impl, M, K, N):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((M, K), dtype=np.float32)
    B = rng.standard_normal((K, N), dtype=np.float32)
    C = np.empty((M, N), dtype=np.float32)
    if impl == "pyneuro":
        benchmark(_core.gemm_into, A, B, C)
    else:
        benchmark(np.matmul, A, B, out=C)
