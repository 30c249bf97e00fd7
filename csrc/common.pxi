# common.pxi — C declarations, fused math helpers, the thread setting and the
# O(1) checks every wrapper uses.

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport (exp, expf, expm1, expm1f, log, logf, log1p, log1pf, tanh, tanhf,
                        erf, erff, sqrt, sqrtf, fabs, fabsf)
from libc.stdint cimport int64_t, uint32_t, uint64_t

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef extern from "runtime.h" nogil:
    int pn_openmp_enabled()
    int pn_omp_max_threads()
    enum:
        PN_WS_PACK_A
        PN_WS_PACK_B
        PN_WS_NORM
        PN_WS_CHAIN
    void *pn_workspace(int slot, size_t nbytes)
    int pn_cpu_has_avx2_fma()
    int pn_forked
    void pn_watch_fork()

# ---- fused scalar math: one name, float or double libm underneath ------------
cdef inline floating f_exp(floating x) noexcept nogil:
    return expf(x) if floating is float else exp(x)

cdef inline floating f_expm1(floating x) noexcept nogil:
    return expm1f(x) if floating is float else expm1(x)

cdef inline floating f_log(floating x) noexcept nogil:
    return logf(x) if floating is float else log(x)

cdef inline floating f_log1p(floating x) noexcept nogil:
    return log1pf(x) if floating is float else log1p(x)

cdef inline floating f_tanh(floating x) noexcept nogil:
    return tanhf(x) if floating is float else tanh(x)

cdef inline floating f_erf(floating x) noexcept nogil:
    return erff(x) if floating is float else erf(x)

cdef inline floating f_sqrt(floating x) noexcept nogil:
    return sqrtf(x) if floating is float else sqrt(x)

cdef inline floating f_abs(floating x) noexcept nogil:
    return fabsf(x) if floating is float else fabs(x)

# ---- threads ------------------------------------------------------------------
# One process-wide setting. 0 means "follow OpenMP": OMP_NUM_THREADS and
# threadpoolctl's limits, as omp_get_max_threads() reports them.
cdef int _user_threads = 0


def openmp_enabled():
    """True when the core was built with OpenMP (kernels can use several threads)."""
    return bool(pn_openmp_enabled())


def set_num_threads(n):
    """Set the number of threads every kernel uses (process-wide). Results do not depend on it.

    Parameters
    ----------
    n : int or None
        Threads (≥ 1); None returns to the default: OpenMP's, i.e. OMP_NUM_THREADS or
        threadpoolctl's limit, else all cores.
    """
    global _user_threads
    if n is None:
        _user_threads = 0
        return
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: n must be a positive int or None, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _user_threads = <int>min(n, 1 << 16)


def _threads_chosen():
    """Whether set_num_threads chose a thread count (pyneuro.distributed respects it)."""
    return _user_threads > 0


def get_num_threads():
    """The number of threads the kernels use now (1 when built without OpenMP, and in a
    process made by fork, where GNU OpenMP's thread pool cannot be used)."""
    return _nthreads()


cdef enum:
    PARALLEL_MIN_WORK = 32768   # elements: below this a kernel runs on one thread (a fork-join
                                # costs more than the work; on a busy machine, much more)


cdef inline int _nthreads_for(Py_ssize_t work) noexcept nogil:
    """Threads for an elementwise or row kernel over `work` elements."""
    return 1 if work < PARALLEL_MIN_WORK else _nthreads()


cdef inline int _nthreads() noexcept nogil:
    if not pn_openmp_enabled() or pn_forked:   # a child of fork: one thread (runtime.h)
        return 1
    return _user_threads if _user_threads > 0 else pn_omp_max_threads()


pn_watch_fork()


# ---- the O(1) boundary checks ---------------------------------------------------
cdef object F32 = np.dtype(np.float32)
cdef object F64 = np.dtype(np.float64)
cdef object I64 = np.dtype(np.int64)


cdef object _float_array(str name, object a, int ndim, bint writable=False):
    """Check that `a` is a C-contiguous, native-byte-order float32/float64 ndarray of
    `ndim` dims (and writable when it receives output). A few C macros: the checks
    cost nanoseconds, so small kernels stay cheap to call."""
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int t = cnp.PyArray_TYPE(arr)
    if (t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64) or not cnp.PyArray_ISNOTSWAPPED(arr):
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    if cnp.PyArray_NDIM(arr) != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got {a.ndim}-d with shape {a.shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{name}: expected a C-contiguous array, got strides {a.strides}")
    if writable and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name}: expected a writable array (it receives output), got a read-only one")


cdef object _same_dtype(str where, list names, list arrays):
    """All arrays share one float dtype (mixed float32/float64 is refused, never copied)."""
    dt = arrays[0].dtype
    for name, a in zip(names, arrays):
        if a.dtype != dt:
            raise TypeError(f"{where}: mixed dtypes: {names[0]} is {dt} but {name} is {a.dtype}")
    return dt


cdef inline void _shape(str name, object a, tuple expected) except *:
    if a.shape != expected:
        raise ValueError(f"{name}: expected shape {expected}, got {a.shape}")
