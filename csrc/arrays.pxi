# arrays.pxi — row gathers and elementwise helpers the layers and Trainer use.
#
#   gather_rows   out[i, :] = X[idx[i], :]                (a shuffled batch, no fancy-index copy)
#   dropout_mask  M = [U ≥ p] / (1 − p)   in place on U   (inverted dropout, U ~ uniform[0, 1))
#   multiply      out = A ⊙ B
#   argmax_rows   out[i] = argmax_j Z[i, j]  (first of ties)
#   all_finite    no x is NaN or ±inf                     (input validation, no temporary)


cdef enum:
    FINITE_BLOCK = 16384   # elements per task of all_finite


cdef void _gather(const floating[:, ::1] X, const int64_t[::1] idx, floating[:, ::1] out,
                  int *bad) noexcept nogil:
    cdef Py_ssize_t i, j, n = X.shape[1], N = X.shape[0]
    cdef int64_t r
    for i in prange(idx.shape[0], num_threads=_nthreads_for(idx.shape[0] * n), schedule="static"):
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


cdef void _dropout_mask(floating[::1] U, floating p) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating keep = 1 / (1 - p)
    for i in prange(U.shape[0], num_threads=_nthreads_for(U.shape[0]), schedule="static"):
        U[i] = keep if U[i] >= p else 0


def dropout_mask(U, double p):
    """Turn uniform samples U (flat, in place) into the inverted-dropout mask [U ≥ p]/(1−p)."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout_mask: p must be in [0, 1), got {p}")
    _float_array("U", U, 1, True)
    if U.dtype == F32:
        _dropout_mask[float](U, p)
    else:
        _dropout_mask[double](U, p)


cdef void _multiply(const floating[::1] A, const floating[::1] B, floating[::1] out) noexcept nogil:
    cdef Py_ssize_t i
    for i in prange(A.shape[0], num_threads=_nthreads_for(A.shape[0]), schedule="static"):
        out[i] = A[i] * B[i]


def multiply(A, B, out):
    """out = A ⊙ B on flat arrays of one dtype and length (out may be A or B)."""
    _check_vectors("multiply", ["out", "A", "B"], [out, A, B], 2)
    if A.dtype == F32:
        _multiply[float](A, B, out)
    else:
        _multiply[double](A, B, out)
    return out


cdef void _argmax(const floating[:, ::1] Z, int64_t[::1] out) noexcept nogil:
    cdef Py_ssize_t i, j, best
    for i in prange(Z.shape[0], num_threads=_nthreads_for(Z.shape[0] * Z.shape[1]), schedule="static"):
        best = 0
        for j in range(1, Z.shape[1]):
            if Z[i, j] > Z[i, best]:
                best = j
        out[i] = best


def argmax_rows(Z, out):
    """out[i] = index of the largest entry of row i of Z (the first one on ties)."""
    _float_array("Z", Z, 2)
    if not isinstance(out, np.ndarray) or out.dtype != I64 or not out.flags.c_contiguous or not out.flags.writeable:
        raise TypeError("argmax_rows: out must be a writable contiguous int64 array")
    _shape("out", out, (Z.shape[0],))
    if Z.shape[1] == 0:
        raise ValueError("argmax_rows: Z has no columns")
    if Z.shape[0] == 0:
        return out
    if Z.dtype == F32:
        _argmax[float](Z, out)
    else:
        _argmax[double](Z, out)
    return out


cdef bint _all_finite(const floating *x, Py_ssize_t n) noexcept nogil:
    """No NaN or ±inf among x[0..n): IEEE bit test (all exponent bits set), OR-reduced
    over blocks of FINITE_BLOCK shared among the threads."""
    cdef Py_ssize_t blk, i, nblk = (n + FINITE_BLOCK - 1) // FINITE_BLOCK
    cdef int bad = 0
    cdef const uint32_t *u32 = <const uint32_t *>x
    cdef const uint64_t *u64 = <const uint64_t *>x
    cdef int nt = _nthreads_for(n)
    for blk in prange(nblk, num_threads=nt, schedule="static"):
        for i in range(blk * FINITE_BLOCK, min(n, (blk + 1) * FINITE_BLOCK)):
            if floating is float:
                bad |= (u32[i] & 0x7f800000u) == 0x7f800000u
            else:
                bad |= (u64[i] & 0x7ff0000000000000u) == 0x7ff0000000000000u
    return bad == 0


def all_finite(a):
    """True when the C-contiguous float array `a` (any shape) holds no NaN or infinity."""
    if not cnp.PyArray_Check(a) or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a):
        raise TypeError(f"a: expected a C-contiguous numpy array, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef Py_ssize_t n = cnp.PyArray_SIZE(arr)
    cdef int t = cnp.PyArray_TYPE(arr)
    cdef void *p = cnp.PyArray_DATA(arr)
    cdef bint ok
    if t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64:
        raise TypeError(f"a: expected dtype float32 or float64, got {a.dtype}")
    if not cnp.PyArray_ISNOTSWAPPED(arr):
        raise TypeError(f"a: expected native byte order, got {a.dtype}")
    with nogil:
        ok = _all_finite(<const float *>p, n) if t == cnp.NPY_FLOAT32 else _all_finite(<const double *>p, n)
    return bool(ok)
