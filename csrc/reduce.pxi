# reduce.pxi — reductions in a fixed order: the helpers every sum over a batch or a row
# shares, and two kernels that are reductions themselves.
#
#   chunk_rows(B)            rows per chunk when B rows are cut into at most MAX_CHUNKS
#                            chunks: a function of B alone, never of the thread count
#   sum_in_order(p, n)       p[0] + p[1] + … + p[n−1], left to right (chunk sums → the total)
#   sum_lanes(x, n)          Σ_j x_j as 8 interleaved running sums (lane l: j ≡ l mod 8, in
#                            order), then lanes 0..7 and the tail in order: a fixed order for
#                            each n that vectorises, where one running sum waits on each add
#   row_max(z, n)            max_j z_j over one row (n ≥ 1)
#   sum_exp_shifted(z, zmax, e, n)   s = Σ_j e^{z_j − zmax}, j = 0, 1, … in order; writes
#                            e_j = e^{z_j − zmax} unless e is NULL. With zmax = row_max:
#                            softmax(z) = e / s,  log-sum-exp lse(z) = zmax + log s
#   argmax_rows   out[i] = argmax_j Z[i, j], the first of ties          Z: B×n, out: B (int64)
#   all_finite    no element is NaN or ±inf                             any C-contiguous array
#
# Threads: the helpers are serial, called per row or per chunk inside their caller's
# parallel loop; argmax_rows splits rows, all_finite blocks of FINITE_BLOCK elements.
# Deterministic: a sum always runs over the same elements in the same order (rows,
# chunks fixed by the sizes); a max, an argmax and an OR do not depend on order at all.
# uses: threads, checks.

cdef enum:
    MAX_CHUNKS = 64        # chunks of a batch-wide sum (per-chunk partial sums live on the stack)
    FINITE_BLOCK = 16384   # elements per task of all_finite


cdef inline Py_ssize_t chunk_rows(Py_ssize_t B) noexcept nogil:
    """Rows per chunk, a function of B alone (at most MAX_CHUNKS chunks)."""
    return (B + MAX_CHUNKS - 1) // MAX_CHUNKS


cdef inline double sum_in_order(const double *partial, Py_ssize_t n) noexcept nogil:
    cdef double s = 0
    cdef Py_ssize_t c
    for c in range(n):
        s += partial[c]
    return s


cdef inline floating sum_lanes(const floating *x, Py_ssize_t n) noexcept nogil:
    cdef floating acc[8]
    cdef floating s = 0
    cdef Py_ssize_t j, l, n8 = n // 8 * 8
    for l in range(8):
        acc[l] = 0
    for j in range(0, n8, 8):
        for l in range(8):
            acc[l] += x[j + l]
    for l in range(8):
        s += acc[l]
    for j in range(n8, n):
        s += x[j]
    return s


cdef inline floating row_max(const floating *z, Py_ssize_t n) noexcept nogil:
    """max_j z_j for j < n (n ≥ 1; a NaN is passed over unless it is z[0])."""
    cdef Py_ssize_t j
    cdef floating zmax = z[0]
    for j in range(1, n):
        if z[j] > zmax:
            zmax = z[j]
    return zmax


cdef inline floating sum_exp_shifted(const floating *z, floating zmax, floating *e,
                                     Py_ssize_t n) noexcept nogil:
    """Σ_j e^{z_j − zmax} in order j = 0..n−1; e_j = e^{z_j − zmax} is written to e unless
    e is NULL (e may be z)."""
    cdef Py_ssize_t j
    cdef floating s = 0
    if e == NULL:
        for j in range(n):
            s += f_exp(z[j] - zmax)
    else:
        for j in range(n):
            e[j] = f_exp(z[j] - zmax)
            s += e[j]
    return s


cdef void _argmax(const floating[:, ::1] Z, int64_t[::1] out):
    cdef Py_ssize_t i, j, best, B = Z.shape[0], n = Z.shape[1]
    with nogil:
        for i in prange(B, num_threads=_nthreads_for(B * n), schedule="static"):
            best = 0
            for j in range(1, n):
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


cdef inline int _any_nonfinite(const floating *x, Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    """1 when some x[i], i0 ≤ i < i1, is NaN or ±inf: IEEE bit test (all exponent bits set)."""
    cdef Py_ssize_t i
    cdef int bad = 0
    cdef const uint32_t *u32 = <const uint32_t *>x
    cdef const uint64_t *u64 = <const uint64_t *>x
    for i in range(i0, i1):
        if floating is float:
            bad |= (u32[i] & 0x7f800000u) == 0x7f800000u
        else:
            bad |= (u64[i] & 0x7ff0000000000000u) == 0x7ff0000000000000u
    return bad


cdef bint _all_finite(const floating *x, Py_ssize_t n) noexcept nogil:
    """No NaN or ±inf among x[0..n): blocks of FINITE_BLOCK shared among the threads, their
    answers OR-reduced (a small x: one pass, no parallel region to open)."""
    cdef Py_ssize_t blk, nblk = (n + FINITE_BLOCK - 1) // FINITE_BLOCK
    cdef int bad = 0
    cdef int nt = _nthreads_for(n)
    if nt == 1:
        return _any_nonfinite(x, 0, n) == 0
    for blk in prange(nblk, num_threads=nt, schedule="static"):
        bad |= _any_nonfinite(x, blk * FINITE_BLOCK, min(n, (blk + 1) * FINITE_BLOCK))
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


def rows_as_given(X, n_features, bint allow_nonfinite):
    """True when check_features has nothing to do to X: a C-contiguous native float32/64
    numpy.ndarray (not a subclass, which check_features turns into one) of 2 dims, at least one row, n_features columns (an int, or a 1-tuple), and no
    NaN or infinity unless allowed; else False (check_features then converts or refuses,
    naming what is wrong). One call for the case a one-row prediction takes."""
    if not cnp.PyArray_CheckExact(X):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>X
    cdef int t = cnp.PyArray_TYPE(arr)
    cdef Py_ssize_t n
    if (t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64) or not cnp.PyArray_ISNOTSWAPPED(arr):
        return False
    if cnp.PyArray_NDIM(arr) != 2 or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or cnp.PyArray_DIM(arr, 0) == 0:
        return False
    if type(n_features) is tuple:
        if len(<tuple>n_features) != 1:
            return False
        n_features = (<tuple>n_features)[0]
    if type(n_features) is not int or cnp.PyArray_DIM(arr, 1) != <Py_ssize_t>n_features:
        return False
    if allow_nonfinite:
        return True
    n = cnp.PyArray_SIZE(arr)
    cdef const void *p = cnp.PyArray_DATA(arr)
    cdef bint ok
    with nogil:
        ok = _all_finite(<const float *>p, n) if t == cnp.NPY_FLOAT32 else _all_finite(<const double *>p, n)
    return ok

