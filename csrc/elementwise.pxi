# elementwise.pxi — the elementwise product of two flat vectors.
#
#   out = A ⊙ B        A, B, out: one length and float dtype (out may be A or B)
#
# Threads: elements are split over threads; each is one rounded product, so the result
# is the same on any number of threads.
# uses: threads, checks (_check_vectors).


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
