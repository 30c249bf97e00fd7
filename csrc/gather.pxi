# gather.pxi — a batch gathered by row index: the Trainer's shuffled mini-batch, without
# NumPy's fancy-index copy into a new array, converted to the model's dtype as it is read.
#
#   out[i, :] = T(X[idx[i], :])     X: N×n, idx: k (int64, each in [0, N)), out: k×n
#
# X's dtype is any real one (float32/64, int8…int64, uint8…uint64; bool read as uint8),
# out's is the model's float; T is C's conversion to it (round to nearest, as NumPy's
# astype), so out is bitwise X.astype(out.dtype)[idx] and a uint8 or float64 data set is
# never copied whole. (float16 has no C type: its wrapper converts the batch in NumPy.)
#
# Threads: rows of out are split over threads; each is a plain copy of one row of X, so
# the result is the same on any number of threads. An index out of range leaves its row
# unwritten and raises ValueError afterwards (flag set by any thread, read once).
# uses: threads, checks.

ctypedef fused source_t:
    float
    double
    int8_t
    int16_t
    int32_t
    int64_t
    uint8_t
    uint16_t
    uint32_t
    uint64_t


def _gather_kernel(const source_t[:, ::1] X, const int64_t[::1] idx, floating[:, ::1] out):
    """The typed loops (one per source × output dtype); returns 1 when an index is out of range."""
    cdef Py_ssize_t i, j, k = idx.shape[0], n = X.shape[1], N = X.shape[0]
    cdef int64_t r
    cdef int bad = 0
    cdef int *flag = &bad      # written through a pointer: a prange-assigned local would be lastprivate
    with nogil:
        for i in prange(k, num_threads=_nthreads_for(k * n), schedule="static"):
            r = idx[i]
            if r < 0 or r >= N:
                flag[0] = 1     # every thread writes the same value
            else:
                for j in range(n):
                    out[i, j] = <floating>X[r, j]
    return bad


GATHER_SOURCES = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64, np.bool_, np.int8,
                                                  np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                                  np.uint32, np.uint64))


def gather_rows(X, idx, out):
    """out[i] = X[idx[i]] converted to out's float dtype, for int64 row indices idx (checked
    against X's rows); X is C-contiguous 2-d of any dtype in GATHER_SOURCES."""
    if not isinstance(X, np.ndarray):
        raise TypeError(f"X: expected a numpy.ndarray, got {type(X).__name__}")
    if X.dtype not in GATHER_SOURCES:
        raise TypeError(f"X: expected a real dtype (float, int, uint or bool, native byte order), got {X.dtype}")
    if X.ndim != 2 or not X.flags.c_contiguous:
        raise ValueError(f"X: expected a C-contiguous 2-d array, got shape {X.shape}, strides {X.strides}")
    _float_array("out", out, 2, True)
    if not isinstance(idx, np.ndarray) or idx.dtype != I64 or idx.ndim != 1 or not idx.flags.c_contiguous:
        raise TypeError(f"idx: expected a contiguous 1-d int64 array, got {getattr(idx, 'dtype', type(idx).__name__)}")
    _shape("out", out, (idx.shape[0], X.shape[1]))
    if idx.shape[0] == 0 or X.shape[1] == 0:
        return out
    cdef int bad = 0
    if X.dtype == np.float16:
        bad = idx.min() < 0 or idx.max() >= X.shape[0]
        if not bad:
            out[...] = X.take(idx, axis=0)
    else:
        bad = _gather_kernel(X.view(np.uint8) if X.dtype == np.bool_ else X, idx, out)
    if bad:
        raise ValueError(f"idx: gather_rows indices must lie in [0, {X.shape[0] - 1}], got [{idx.min()}, {idx.max()}]")
    return out
