# elementwise.pxi — the elementwise product of two flat vectors; the per-column affine map.
#
#   out = A ⊙ B        A, B, out: one length and float dtype (out may be A or B)
#   out = (X − m)·s or (X − m)/s per column (below)
#
# Threads: elements are split over threads; each is one rounded product, so the result
# is the same on any number of threads.
# uses: threads, checks (_check_vectors, _float_array, _same_dtype, _shape).


cdef void _multiply(const floating[::1] A, const floating[::1] B, floating[::1] out):
    cdef Py_ssize_t i, n = A.shape[0]
    with nogil:
        for i in prange(n, num_threads=_nthreads_for(n), schedule="static"):
            out[i] = A[i] * B[i]


def multiply(A, B, out):
    """out = A ⊙ B on flat arrays of one dtype and length (out may be A or B)."""
    _check_vectors("multiply", ["out", "A", "B"], [out, A, B], 2)
    if A.dtype == F32:
        _multiply[float](A, B, out)
    else:
        _multiply[double](A, B, out)
    return out


# The preprocessing layers' per-column affine map (Scale, Standardize) and its gradient:
#
#   out[i, j] = (X[i, j] − m[j]) · s[j]      (divide=False: Scale, m = 0)
#   out[i, j] = (X[i, j] − m[j]) / s[j]      (divide=True:  Standardize, s = σ)
#   X, out: B×n (out may be X); m, s: n; the gradient is the same map with m = 0.
#
# Threads: rows are split over threads; each element is one subtraction and one rounded
# product or quotient, so the result is the same on any number of threads.

cdef void _affine(const floating[:, ::1] X, const floating[::1] m, const floating[::1] s, bint divide,
                  floating[:, ::1] out) noexcept nogil:
    cdef Py_ssize_t i, j, B = X.shape[0], n = X.shape[1]
    for i in prange(B, num_threads=_nthreads_for(B * n), schedule="static"):
        if divide:
            for j in range(n):
                out[i, j] = (X[i, j] - m[j]) / s[j]
        else:
            for j in range(n):
                out[i, j] = (X[i, j] - m[j]) * s[j]


def affine_columns(X, m, s, bint divide, out):
    """out = (X − m)·s, or (X − m)/s when divide, per column (m, s of length X's width)."""
    _float_array("X", X, 2)
    _float_array("out", out, 2, True)
    _float_array("m", m, 1)
    _float_array("s", s, 1)
    _same_dtype("affine_columns", ["X", "m", "s", "out"], [X, m, s, out])
    _shape("m", m, (X.shape[1],))
    _shape("s", s, (X.shape[1],))
    _shape("out", out, X.shape)
    if X.dtype == F32:
        _affine[float](X, m, s, divide, out)
    else:
        _affine[double](X, m, s, divide, out)
    return out
