"""pytest-benchmark suite for the core kernels: `python -m pytest bench -q`.

Every case of bench/gemm.py (square products, one MLP training step's GEMMs) runs
once through pyneuro and once through numpy.matmul on the same operands, so the
two rows of the table compare directly; `python bench/gemm.py` prints the ratios
and % of the measured peak."""
import numpy as np
import pytest

import gemm


@pytest.mark.parametrize("impl", ["pyneuro", "numpy"])
@pytest.mark.parametrize("name,dtype,make", gemm.CASES,
                         ids=[f"{n}-{np.dtype(d).name}" for n, d, _ in gemm.CASES])
def test_gemm(benchmark, impl, name, dtype, make):
    ops = make(dtype, np.random.default_rng(0))
    benchmark.extra_info["gflop"] = gemm.flops(ops) / 1e9
    benchmark(gemm.run_pyneuro if impl == "pyneuro" else gemm.run_numpy, ops)
