# dense.pxi — the fully connected layer, forward and backward.
#
#   forward   Z = X·W + b,  A = f(Z)            X: B×n, W: n×m, b: m, Z, A: B×m
#             (bias and f applied in the GEMM epilogue while each tile is in cache;
#              softmax needs whole rows, so it runs as a second pass)
#   backward  delta = dA ⊙ f'(Z)  (activation_backward; delta = ∂L/∂Z: B×m)
#             dW = Xᵀ·delta      db = Σ_batch delta      dX = delta·Wᵀ
#             (db summed while gemm packs delta for dW: bsum)
#
# Threads: the products are gemm's (each element of C summed over K in one fixed order,
# whatever the split); db's columns are each added over rows 0..B−1 in order by one
# task. So every result is the same on any number of threads.
# uses: gemm, activations (ACT_*, softmax_row), threads, checks.

from libc.string cimport memset


cdef inline Epilogue forward_epilogue(const void *b, int act, double alpha, void *A,
                                      Py_ssize_t ldo) noexcept nogil:
    """Z += b (over columns), then A = f(Z) (A NULL: Z only; A's row stride ldo)."""
    cdef Epilogue ep
    ep.bias, ep.bias_rows, ep.act, ep.alpha, ep.out, ep.ldo = b, False, act, alpha, A, ldo
    ep.Zf = ep.Af = ep.W = NULL
    return ep


cdef int dense_layer(Py_ssize_t B, Py_ssize_t n, Py_ssize_t m, const floating *X, const floating *W,
                     const floating *b, int act, floating alpha, floating *Z, floating *A,
                     int nt) noexcept nogil:
    """Z = X·W + b and A = f(Z) (A may be Z; NULL for identity): one GEMM with the
    bias+activation epilogue, softmax as a second pass over whole rows. Returns 1 when
    GEMM buffers could not be allocated. dense_forward and InferenceChain both run on it."""
    cdef Py_ssize_t i
    cdef Epilogue ep = forward_epilogue(b, act, alpha, A if act != ACT_SOFTMAX else NULL, m)
    if gemm(False, False, B, m, n, <floating>1, X, n, W, m, <floating>0, Z, m, &ep, <floating *>NULL, nt):
        return 1
    if act == ACT_SOFTMAX:
        for i in prange(B, num_threads=min(nt, _nthreads_for(B * m)), schedule="static"):
            softmax_row(Z + i * m, A + i * m, m)
    return 0


cdef void _dense_forward(const floating[:, ::1] X, const floating[:, ::1] W,
                         const floating[::1] b, floating[:, ::1] Z, floating[:, ::1] A, int act,
                         floating alpha) except *:
    cdef Py_ssize_t B = X.shape[0], n = X.shape[1], m = W.shape[1]
    cdef int err
    cdef floating *Aout = &A[0, 0] if A is not None else NULL
    cdef const floating *pX = &X[0, 0] if n else NULL
    cdef const floating *pW = &W[0, 0] if n else NULL
    with nogil:
        err = dense_layer(B, n, m, pX, pW, &b[0], act, alpha, &Z[0, 0], Aout, _nthreads())
    if err:
        raise MemoryError("dense_forward: could not allocate GEMM work buffers")


def dense_forward(X, W, b, Z, A, act="identity", double alpha=0.0):
    """Z = X·W + b and A = f(Z) in one pass (A None: only Z, for identity).
    X: (B, n), W: (n, m), b: (m,), Z and A: (B, m), one float dtype."""
    cdef int code = _act_code(act)
    _float_array("X", X, 2)
    _float_array("W", W, 2)
    _float_array("b", b, 1)
    _float_array("Z", Z, 2, True)
    names, arrays = ["X", "W", "b", "Z"], [X, W, b, Z]
    if A is not None:
        _float_array("A", A, 2, True)
        names.append("A"); arrays.append(A)
    elif code != ACT_IDENTITY:
        raise ValueError(f"dense_forward: activation {act!r} needs an output array A, got None")
    _same_dtype("dense_forward", names, arrays)
    B, n = X.shape
    if W.shape[0] != n:
        raise ValueError(f"dense_forward: X has {n} features but W has {W.shape[0]} rows")
    m = W.shape[1]
    _shape("b", b, (m,))
    _shape("Z", Z, (B, m))
    if A is not None:
        _shape("A", A, (B, m))
    if B == 0 or m == 0:
        return
    if X.dtype == F32:
        _dense_forward[float](X, W, b, Z, A, code, <float>alpha)
    else:
        _dense_forward[double](X, W, b, Z, A, code, alpha)


cdef void _dense_backward(const floating[:, ::1] X, const floating[:, ::1] W,
                          const floating[:, ::1] delta, floating[:, ::1] dW, floating[::1] db,
                          floating[:, ::1] dX) except *:
    cdef Py_ssize_t B = X.shape[0], n = X.shape[1], m = W.shape[1]
    cdef int err = 0, nt = _nthreads()
    cdef floating *pdX = &dX[0, 0] if dX is not None and n else NULL
    with nogil:
        if n:
            err = gemm(True, False, n, m, B, <floating>1, &X[0, 0], n, &delta[0, 0], m, <floating>0,
                       &dW[0, 0], m, NULL, &db[0], nt)
        else:           # no inputs: db alone
            memset(&db[0], 0, m * sizeof(floating))
            add_column_sums(B, m, &delta[0, 0], m, 1, &db[0])
        if pdX != NULL and not err:
            err = gemm(False, True, B, n, m, <floating>1, &delta[0, 0], m, &W[0, 0], m, <floating>0,
                       pdX, n, NULL, <floating *>NULL, nt)
    if err:
        raise MemoryError("dense_backward: could not allocate GEMM work buffers")


def dense_backward(X, W, delta, dW, db, dX=None):
    """dW = Xᵀ·δ, db = Σ_batch δ, and dX = δ·Wᵀ unless dX is None.
    X: (B, n), W: (n, m), delta: (B, m), dW: (n, m), db: (m,), dX: (B, n)."""
    for name, a, nd, w in (("X", X, 2, False), ("W", W, 2, False), ("delta", delta, 2, False),
                           ("dW", dW, 2, True), ("db", db, 1, True)):
        _float_array(name, a, nd, w)
    names, arrays = ["X", "W", "delta", "dW", "db"], [X, W, delta, dW, db]
    if dX is not None:
        _float_array("dX", dX, 2, True)
        names.append("dX"); arrays.append(dX)
    _same_dtype("dense_backward", names, arrays)
    B, n = X.shape
    m = W.shape[1]
    _shape("W", W, (n, m))
    _shape("delta", delta, (B, m))
    _shape("dW", dW, (n, m))
    _shape("db", db, (m,))
    if dX is not None:
        _shape("dX", dX, (B, n))
    if m == 0:  # δ·Wᵀ sums over no columns: dX is all zeros (dW, db are empty)
        if dX is not None:
            dX[...] = 0
        return
    if B == 0:
        dW[...] = 0
        db[...] = 0
        return
    if X.dtype == F32:
        _dense_backward[float](X, W, delta, dW, db, dX)
    else:
        _dense_backward[double](X, W, delta, dW, db, dX)
