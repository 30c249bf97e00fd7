# dropout.pxi — the inverted-dropout mask, made in place from uniform samples.
#
#   M = [U ≥ p] / (1 − p)        U ~ uniform[0, 1) (flat, any length), p ∈ [0, 1)
#
# (the layer then applies it with elementwise.pxi's multiply: y = x ⊙ M, dx = dy ⊙ M).
# Threads: elements are split over threads; each is computed alone, so the mask is the
# same on any number of threads (its randomness is the caller's seeded U).
# uses: threads, checks.


cdef void _dropout_mask(floating[::1] U, floating p):
    cdef Py_ssize_t i, n = U.shape[0]
    cdef floating keep = 1 / (1 - p)
    with nogil:
        for i in prange(n, num_threads=_nthreads_for(n), schedule="static"):
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
