# gather.pxi — a batch gathered by row index: the Trainer's shuffled mini-batch, without
# NumPy's fancy-index copy into a new array.
#
#   out[i, :] = X[idx[i], :]        X: N×n, idx: k (int64, each in [0, N)), out: k×n
#
# Threads: rows of out are split over threads; each is a plain copy of one row of X, so
# the result is the same on any number of threads. An index out of range leaves its row
# unwritten and raises ValueError afterwards (flag set by any thread, read once).
# uses: threads, checks.


cdef void _gather(const floating[:, ::1] X, const int64_t[::1] idx, floating[:, ::1] out,
                  int *bad):
    cdef Py_ssize_t i, j, k = idx.shape[0], n = X.shape[1], N = X.shape[0]
    cdef int64_t r
    with nogil:
        for i in prange(k, num_threads=_nthreads_for(k * n), schedule="static"):
            r = idx[i]
            if r < 0 or r >= N:
                bad[0] = 1
            else:
                for j in range(n):
                    out[i, j] = X[r, j]


def gather_rows(X, idx, out):
    """out[i] = X[idx[i]] for int64 row indices idx (checked against X's rows)."""
    _float_array("X", X, 2)
    _float_array("out", out, 2, True)
    _same_dtype("gather_rows", ["X", "out"], [X, out])
    if not isinstance(idx, np.ndarray) or idx.dtype != I64 or idx.ndim != 1 or not idx.flags.c_contiguous:
        raise TypeError(f"idx: expected a contiguous 1-d int64 array, got {getattr(idx, 'dtype', type(idx).__name__)}")
    _shape("out", out, (idx.shape[0], X.shape[1]))
    cdef int bad = 0
    if idx.shape[0] == 0 or X.shape[1] == 0:
        return out
    if X.dtype == F32:
        _gather[float](X, idx, out, &bad)
    else:
        _gather[double](X, idx, out, &bad)
    if bad:
        raise ValueError(f"idx: gather_rows indices must lie in [0, {X.shape[0] - 1}], got [{idx.min()}, {idx.max()}]")
    return out
