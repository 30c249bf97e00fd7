# checks.pxi — the one boundary (DESIGN.md, rule 1): the O(1) checks every wrapper makes
# before a kernel runs without bounds checks.
#
#   _float_array(name, a, ndim, writable)   a C-contiguous native float32/float64 ndarray of ndim dims
#   _same_dtype(where, names, arrays)       one float dtype for all (mixed ones are refused, never cast)
#   _shape(name, a, expected)               a.shape == expected
#   _check_vectors(where, names, arrays)    flat vectors of one dtype and length (elementwise kernels)
#   _check_hyper(where, name=value, …)      finite scalars (learning rates, decay rates …)
#
# Each raises TypeError/ValueError naming the argument, what was expected and what was given.
# uses: nothing.

cdef object F32 = np.dtype(np.float32)
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


cdef _check_vectors(str where, list names, list arrays, int n_inputs=1):
    """Flat float vectors of one dtype, all as long as the first; arrays[0] and those past
    arrays[n_inputs] are written (so must be writable), arrays[1..n_inputs] only read."""
    for k, (name, a) in enumerate(zip(names, arrays)):
        _float_array(name, a, 1, not 1 <= k <= n_inputs)
    _same_dtype(where, names, arrays)
    for name, a in zip(names[1:], arrays[1:]):
        _shape(name, a, arrays[0].shape)


def _check_hyper(str where, **values):
    for name, value in values.items():
        if not np.isfinite(value):
            raise ValueError(f"{where}: {name} must be finite, got {value}")
