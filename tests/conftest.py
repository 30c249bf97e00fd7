import zlib

import numpy as np
import pytest

from pyneuro import _core


@pytest.fixture
def rng(request):
    """A Generator seeded from the test's id, so every test is reproducible on its own."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def num_threads():
    """Call it to set the kernels' thread count; the default (None) is restored afterwards."""
    yield _core.set_num_threads
    _core.set_num_threads(None)


@pytest.fixture
def gemm_kernel():
    """Call it with 'generic', 'avx2' or 'avx512' (skips where the CPU lacks it); 'auto' is
    restored."""
    def use(name):
        try:
            _core.set_gemm_kernel(name)
        except ValueError as e:
            pytest.skip(str(e))       # this CPU lacks it
        assert _core.gemm_kernel() == name

    yield use
    _core.set_gemm_kernel("auto")


def pytest_configure(config):
    """OpenMP's current maximum is a ceiling on pyneuro's threads (threadpoolctl lowers it to
    limit an application); its default is the machine's cores. The tests check results on up
    to 4 threads (and settings up to 7) on any machine, so the session raises that ceiling to
    pyneuro's own cap (4 x the CPUs), through threadpoolctl as an application would."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:      # without it, thread counts above the cores run as the cores
        return
    config._pyneuro_threads = threadpool_limits(limits=_core.max_threads(), user_api="openmp")
