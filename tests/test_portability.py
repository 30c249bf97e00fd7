"""The built core on an x86-64 without AVX2: run Python under qemu-user emulating
a Nehalem (SSE4.2, no AVX) CPU. The core must import, pick the generic
micro-kernel, refuse 'avx2', agree with NumPy and train the digits classifier.
Needs qemu-user (apt install qemu-user); skipped where it is absent."""
import platform
import shutil
import subprocess
import sys

import pytest

QEMU = shutil.which("qemu-x86_64")
pytestmark = [
    pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 only"),
    pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not installed (apt install qemu-user)"),
]

SCRIPT = r"""
import numpy as np
from pyneuro import _core
assert _core.gemm_kernel() == "generic", _core.gemm_kernel()
try:
    _core.set_gemm_kernel("avx2")
    raise SystemExit("avx2 accepted on a CPU without it")
except ValueError:
    pass
rng = np.random.default_rng(0)
for dt in (np.float32, np.float64):
    A = rng.standard_normal((37, 300)).astype(dt)
    B = rng.standard_normal((29, 300)).astype(dt)
    C = _core.gemm_into(A, B, np.empty((37, 29), dt), trans_b=True)
    err = np.abs(C - A.astype(np.float64) @ B.T.astype(np.float64)).max()
    assert err < (1e-3 if dt == np.float32 else 1e-10), (dt, err)
from pyneuro.cli import main
main(["train", "--epochs", "3", "--quiet"])
"""


def test_core_runs_on_a_cpu_without_avx2():
    out = subprocess.run([QEMU, "-cpu", "Nehalem", sys.executable, "-c", SCRIPT],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    accuracy = float(out.stdout.split("test accuracy")[1].split()[0])
    assert accuracy > 0.9, out.stdout
