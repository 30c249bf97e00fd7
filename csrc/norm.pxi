# norm.pxi — per-channel statistics and the normalisations built on them: BatchNorm as
# pieces (so that the caller can all-reduce the sums across MPI ranks between them: sync
# batch norm) and LayerNorm whole.
#
# Layout: X is (B, C·P), C-contiguous; row s holds sample s as C channels of P positions
# (an image batch NCHW flattened: P = H·W; a dense batch (B, F) is P = 1, C = F). A value
# X[s, c, p] is X[s, c·P + p]. N = B·P values per channel (summed over ranks by the caller).
#
#   channel_sums     out[c] = Σ_{s,p} X[s,c,p]                                  out: (C,)
#   channel_sq_dev   out[c] = Σ_{s,p} (X[s,c,p] − mean[c])²                      mean, out: (C,)
#   channel_dot      out[c] = Σ_{s,p} A[s,c,p]·B[s,c,p]
#   batchnorm_apply  x̂ = (X − mean[c])·invstd[c],  Y = gamma[c]·x̂ + beta[c]      all (B, C·P)
#   batchnorm_input_grad  dX = gamma[c]·invstd[c]·(dY − Σ_c dY/N − x̂·Σ_c(dY·x̂)/N)
#       (with dβ = channel_sums(dY), dγ = channel_dot(dY, x̂); training's invstd = 1/√(var+ε),
#        var = channel_sq_dev(X, mean)/N, mean = channel_sums(X)/N: the biased variance)
#   layernorm_forward   per row s over its F columns: μ = Σx/F, σ² = Σ(x − μ)²/F (two passes),
#       invstd[s] = 1/√(σ² + ε), x̂ = (x − μ)·invstd[s], Y = gamma⊙x̂ + beta    gamma, beta: (F,)
#   layernorm_backward  g = dY⊙gamma; dX = invstd[s]·(g − mean_j g − x̂·mean_j(g⊙x̂)) per row;
#       dgamma = Σ_s dY⊙x̂, dbeta = Σ_s dY
#
# Precision: every sum (statistics, the row means of the backward, the column sums) is
# accumulated in double and rounded to the dtype once; the elementwise passes compute
# in the dtype, except x̂ of LayerNorm, formed in double from the double μ and invstd.
#
# Threads and order: a sum over one channel (or one row) is seg_reduce's fixed order over
# each contiguous run of P values (four interleaved partials i mod 4, then the tail), the
# runs added s = 0..B−1. Channel sums are split into tasks owning blocks of channels
# (CH_ELEMS/P channels, at least one: a function of the sizes alone); LayerNorm splits
# rows; the elementwise passes split (sample, channel) runs. No sum is ever split across
# threads, so every result is bitwise the same on any number of threads.
# uses: threads, checks.

from libc.math cimport sqrt

cdef enum:
    RED_SUM = 0      # Σ a_i
    RED_SQDEV = 1    # Σ (a_i − shift)²
    RED_DOT = 2      # Σ a_i·b_i
    RED_DOT3 = 3     # Σ a_i·b_i·c_i
    CH_ELEMS = 16    # a channel task covers at least this many values of a row (P = 1: 16 channels)
    CH_BLOCK_MAX = 16


cdef inline double _term(int kind, const floating *a, const floating *b, const floating *c,
                         double shift, Py_ssize_t i) noexcept nogil:
    cdef double d
    if kind == RED_SUM:
        return a[i]
    elif kind == RED_SQDEV:
        d = a[i] - shift
        return d * d
    elif kind == RED_DOT:
        return <double>a[i] * b[i]
    return <double>a[i] * b[i] * c[i]


cdef inline double seg_reduce(int kind, const floating *a, const floating *b, const floating *c,
                              double shift, Py_ssize_t n) noexcept nogil:
    """Σ_{i<n} t_i in double, t_i = _term(kind, …): four partials over i mod 4 (i < n − n mod 4),
    added as (s0 + s1) + (s2 + s3), then the tail in order. The order depends on n alone."""
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t i, n4 = n - n % 4
    for i in range(0, n4, 4):
        s0 += _term(kind, a, b, c, shift, i)
        s1 += _term(kind, a, b, c, shift, i + 1)
        s2 += _term(kind, a, b, c, shift, i + 2)
        s3 += _term(kind, a, b, c, shift, i + 3)
    s0 = (s0 + s1) + (s2 + s3)
    for i in range(n4, n):
        s0 += _term(kind, a, b, c, shift, i)
    return s0


cdef inline Py_ssize_t channels_per_task(Py_ssize_t P) noexcept nogil:
    return max(1, min(<Py_ssize_t>CH_BLOCK_MAX, (CH_ELEMS + P - 1) // P))


cdef inline void _channel_block(int kind, const floating *X, const floating *Y, const floating *mean,
                                Py_ssize_t B, Py_ssize_t C, Py_ssize_t P, Py_ssize_t c0, Py_ssize_t c1,
                                floating *out) noexcept nogil:
    """out[c] for c0 ≤ c < c1: the runs of channel c added in sample order s = 0..B−1."""
    cdef double acc[CH_BLOCK_MAX]
    cdef Py_ssize_t s, c, off
    cdef double shift = 0
    for c in range(c0, c1):
        acc[c - c0] = 0
    for s in range(B):
        for c in range(c0, c1):
            off = s * C * P + c * P
            if kind == RED_SQDEV:
                shift = mean[c]
            acc[c - c0] += seg_reduce(kind, X + off, Y + off if Y != NULL else NULL,
                                      <const floating *>NULL, shift, P)
    for c in range(c0, c1):
        out[c] = <floating>acc[c - c0]


cdef void channel_reduce(int kind, const floating *X, const floating *Y, const floating *mean,
                         Py_ssize_t B, Py_ssize_t C, Py_ssize_t P, floating *out) noexcept nogil:
    """out[c] = Σ_{s,p} t(X, Y, mean)[s, c, p] (kind RED_SUM, RED_SQDEV or RED_DOT)."""
    cdef Py_ssize_t cb = channels_per_task(P), t, ntasks = (C + cb - 1) // cb
    for t in prange(ntasks, num_threads=_nthreads_for(B * C * P) if ntasks > 1 else 1, schedule="static"):
        _channel_block(kind, X, Y, mean, B, C, P, t * cb, min(C, (t + 1) * cb), out)


cdef object _channels(str where, str name, object X, object C):
    """(B, P) of X = (B, C·P), the array called `name`, after checking it and the channel count C."""
    _float_array(name, X, 2)
    if isinstance(C, bool) or not isinstance(C, (int, np.integer)) or C < 1:
        raise ValueError(f"{where}: C must be a positive int (the number of channels), got {C!r}")
    B, F = X.shape
    if F % C:
        raise ValueError(f"{name}: expected a width C·P divisible by C = {C}, got {F} columns")
    return B, F // C


cdef void _channel_reduce(int kind, const floating[:, ::1] X, const floating[:, ::1] Y,
                          const floating[::1] mean, Py_ssize_t C, floating[::1] out) except *:
    cdef Py_ssize_t B = X.shape[0], P = X.shape[1] // C
    cdef const floating *pX = &X[0, 0] if B and P else NULL
    cdef const floating *pY = &Y[0, 0] if Y is not None and B and P else NULL
    cdef const floating *pm = &mean[0] if mean is not None else NULL
    with nogil:
        channel_reduce(kind, pX, pY, pm, B, C, P, &out[0])


cdef _channel_wrapper(str where, int kind, str xname, object X, object Y, object mean, object C, object out):
    B, P = _channels(where, xname, X, C)
    names, arrays = [xname], [X]
    for name, a in (("B", Y), ("mean", mean)):
        if a is not None:
            _float_array(name, a, 2 if name == "B" else 1)
            names.append(name); arrays.append(a)
    _float_array("out", out, 1, True)
    _same_dtype(where, names + ["out"], arrays + [out])
    if Y is not None:
        _shape("B", Y, X.shape)   # (only channel_dot has a second array: A and B)
    if mean is not None:
        _shape("mean", mean, (C,))
    _shape("out", out, (C,))
    if X.dtype == F32:
        _channel_reduce[float](kind, X, Y, mean, C, out)
    else:
        _channel_reduce[double](kind, X, Y, mean, C, out)
    return out


def channel_sums(X, C, out):
    """Per-channel sums: out[c] = Σ_{s,p} X[s, c, p] (accumulated in double).

    Parameters
    ----------
    X : ndarray, shape (B, C·P)
        Each row one sample as C channels of P positions (P = 1: a dense batch).
    C : int
        The number of channels.
    out : ndarray, shape (C,)
        Receives the sums; X's dtype.

    Returns
    -------
    out
    """
    return _channel_wrapper("channel_sums", RED_SUM, "X", X, None, None, C, out)


def channel_sq_dev(X, mean, C, out):
    """Per-channel sums of squared deviations: out[c] = Σ_{s,p} (X[s, c, p] − mean[c])²
    (in double; divided by N it is the biased variance BatchNorm normalises by).

    Parameters
    ----------
    X : ndarray, shape (B, C·P)
    mean : ndarray, shape (C,)
    C : int
    out : ndarray, shape (C,)

    Returns
    -------
    out
    """
    _float_array("mean", mean, 1)
    return _channel_wrapper("channel_sq_dev", RED_SQDEV, "X", X, None, mean, C, out)


def channel_dot(A, B, C, out):
    """Per-channel dot products: out[c] = Σ_{s,p} A[s, c, p]·B[s, c, p] (in double;
    dγ = channel_dot(dY, x̂) in BatchNorm's backward).

    Parameters
    ----------
    A, B : ndarray, shape (N, C·P)
    C : int
    out : ndarray, shape (C,)

    Returns
    -------
    out
    """
    _float_array("B", B, 2)          # (None would mean "no second array" to the wrapper)
    return _channel_wrapper("channel_dot", RED_DOT, "A", A, B, None, C, out)


# ---- BatchNorm's elementwise passes ---------------------------------------------------------
cdef void _bn_apply(const floating[:, ::1] X, const floating[::1] mean, const floating[::1] invstd,
                    const floating[::1] gamma, const floating[::1] beta, Py_ssize_t C,
                    floating[:, ::1] xhat, floating[:, ::1] Y) except *:
    """x̂ = (X − mean[c])·invstd[c] (stored unless xhat is None), Y = gamma[c]·x̂ + beta[c]."""
    cdef Py_ssize_t B = X.shape[0], P = X.shape[1] // C, r, c, p
    cdef const floating *x
    cdef floating *xh
    cdef floating *y
    cdef floating *pxh = &xhat[0, 0] if xhat is not None else NULL
    cdef floating m, s, g, b
    with nogil:
        for r in prange(B * C, num_threads=_nthreads_for(B * C * P), schedule="static"):
            c = r % C
            m, s, g, b = mean[c], invstd[c], gamma[c], beta[c]   # locals: stores cannot change them
            x = &X[0, 0] + r * P
            y = &Y[0, 0] + r * P
            if pxh != NULL:
                xh = pxh + r * P
                for p in range(P):
                    xh[p] = (x[p] - m) * s
                    y[p] = g * xh[p] + b
            else:
                for p in range(P):
                    y[p] = g * ((x[p] - m) * s) + b


def batchnorm_apply(X, mean, invstd, gamma, beta, C, xhat, Y):
    """BatchNorm's normalisation and affine map with given statistics.

    x̂[s,c,p] = (X[s,c,p] − mean[c])·invstd[c],   Y[s,c,p] = gamma[c]·x̂[s,c,p] + beta[c]

    Parameters
    ----------
    X : ndarray, shape (B, C·P)
    mean, invstd, gamma, beta : ndarray, shape (C,)
        Batch statistics in training (invstd = 1/√(var + ε)), running ones in evaluation.
    C : int
    xhat : ndarray, shape (B, C·P), or None
        Receives x̂ (kept for the backward pass); None in evaluation.
    Y : ndarray, shape (B, C·P)
        The output (may be X itself, when xhat is not needed).
    """
    B, P = _channels("batchnorm_apply", "X", X, C)
    names, arrays = ["X"], [X]
    for name, a in (("mean", mean), ("invstd", invstd), ("gamma", gamma), ("beta", beta)):
        _float_array(name, a, 1)
        names.append(name); arrays.append(a)
    if xhat is not None:
        _float_array("xhat", xhat, 2, True)
        names.append("xhat"); arrays.append(xhat)
    _float_array("Y", Y, 2, True)
    _same_dtype("batchnorm_apply", names + ["Y"], arrays + [Y])
    for name, a in zip(names[1:5], arrays[1:5]):
        _shape(name, a, (C,))
    if xhat is not None:
        _shape("xhat", xhat, X.shape)
    _shape("Y", Y, X.shape)
    if B == 0 or P == 0:
        return
    if X.dtype == F32:
        _bn_apply[float](X, mean, invstd, gamma, beta, C, xhat, Y)
    else:
        _bn_apply[double](X, mean, invstd, gamma, beta, C, xhat, Y)


cdef void _bn_input_grad(const floating[:, ::1] dY, const floating[:, ::1] xhat, const floating[::1] gamma,
                         const floating[::1] invstd, const floating[::1] sum_dY,
                         const floating[::1] sum_dY_xhat, double N, Py_ssize_t C,
                         floating[:, ::1] dX) except *:
    cdef Py_ssize_t B = dY.shape[0], P = dY.shape[1] // C, r, c, p
    cdef const floating *dy
    cdef const floating *xh
    cdef floating *dx
    cdef floating k, m1, m2
    with nogil:
        for r in prange(B * C, num_threads=_nthreads_for(B * C * P), schedule="static"):
            c = r % C
            k = gamma[c] * invstd[c]
            m1 = <floating>(sum_dY[c] / N)
            m2 = <floating>(sum_dY_xhat[c] / N)
            dy = &dY[0, 0] + r * P
            xh = &xhat[0, 0] + r * P
            dx = &dX[0, 0] + r * P
            for p in range(P):
                dx[p] = k * (dy[p] - m1 - xh[p] * m2)


def batchnorm_input_grad(dY, xhat, gamma, invstd, sum_dY, sum_dY_xhat, N, C, dX):
    """BatchNorm's input gradient in training mode (batch statistics).

    dX[s,c,p] = gamma[c]·invstd[c]·(dY[s,c,p] − sum_dY[c]/N − x̂[s,c,p]·sum_dY_xhat[c]/N)

    Parameters
    ----------
    dY, xhat : ndarray, shape (B, C·P)
        ∂L/∂Y and the forward's x̂.
    gamma, invstd : ndarray, shape (C,)
    sum_dY, sum_dY_xhat : ndarray, shape (C,)
        Σ dY and Σ dY·x̂ per channel (channel_sums, channel_dot; all-reduced for sync BN).
    N : int or float
        Values per channel that the statistics were taken over (B·P, summed over ranks).
    C : int
    dX : ndarray, shape (B, C·P)
        Receives ∂L/∂X (may be dY itself).
    """
    B, P = _channels("batchnorm_input_grad", "dY", dY, C)
    names, arrays = ["dY", "xhat"], [dY, xhat]
    _float_array("xhat", xhat, 2)
    for name, a in (("gamma", gamma), ("invstd", invstd), ("sum_dY", sum_dY), ("sum_dY_xhat", sum_dY_xhat)):
        _float_array(name, a, 1)
        names.append(name); arrays.append(a)
    _float_array("dX", dX, 2, True)
    _same_dtype("batchnorm_input_grad", names + ["dX"], arrays + [dX])
    _shape("xhat", xhat, dY.shape)
    for name, a in zip(names[2:], arrays[2:]):
        _shape(name, a, (C,))
    _shape("dX", dX, dY.shape)
    if not (np.isfinite(N) and N > 0):
        raise ValueError(f"batchnorm_input_grad: N must be a positive number of values per channel, got {N!r}")
    if B == 0 or P == 0:
        return
    if dY.dtype == F32:
        _bn_input_grad[float](dY, xhat, gamma, invstd, sum_dY, sum_dY_xhat, N, C, dX)
    else:
        _bn_input_grad[double](dY, xhat, gamma, invstd, sum_dY, sum_dY_xhat, N, C, dX)


# ---- LayerNorm --------------------------------------------------------------------------------
cdef void _ln_forward(const floating[:, ::1] X, const floating[::1] gamma, const floating[::1] beta,
                      double eps, floating[:, ::1] xhat, floating[::1] invstd, floating[:, ::1] Y) except *:
    cdef Py_ssize_t B = X.shape[0], F = X.shape[1], s, j
    cdef const floating *x
    cdef floating *y
    cdef floating *xh
    cdef floating *pxh = &xhat[0, 0] if xhat is not None else NULL
    cdef floating *pinv = &invstd[0] if invstd is not None else NULL
    cdef floating v
    cdef double mu, inv
    with nogil:
        for s in prange(B, num_threads=_nthreads_for(B * F), schedule="static"):
            x = &X[0, 0] + s * F
            y = &Y[0, 0] + s * F
            xh = pxh + s * F if pxh != NULL else NULL
            mu = seg_reduce(RED_SUM, x, x, x, 0.0, F) / F
            inv = 1.0 / sqrt(seg_reduce(RED_SQDEV, x, x, x, mu, F) / F + eps)
            if pinv != NULL:
                pinv[s] = <floating>inv
            for j in range(F):
                v = <floating>((x[j] - mu) * inv)
                if xh != NULL:
                    xh[j] = v
                y[j] = gamma[j] * v + beta[j]


def layernorm_forward(X, gamma, beta, eps, xhat, invstd, Y):
    """LayerNorm over each row's F features.

    μ_s = Σ_j X[s,j]/F,  σ²_s = Σ_j (X[s,j] − μ_s)²/F (two passes, in double),
    invstd[s] = 1/√(σ²_s + eps),  x̂ = (X − μ_s)·invstd[s],  Y = gamma⊙x̂ + beta

    Parameters
    ----------
    X : ndarray, shape (B, F)
    gamma, beta : ndarray, shape (F,)
    eps : float
        ε ≥ 0 (PyTorch's default 1e-5).
    xhat : ndarray, shape (B, F), or None
        Receives x̂ for the backward pass (None in evaluation).
    invstd : ndarray, shape (B,), or None
        Receives 1/√(σ² + ε) per row (None in evaluation).
    Y : ndarray, shape (B, F)
        The output (may be X itself).
    """
    _float_array("X", X, 2)
    names, arrays = ["X"], [X]
    for name, a in (("gamma", gamma), ("beta", beta)):
        _float_array(name, a, 1)
        names.append(name); arrays.append(a)
    for name, a, nd in (("xhat", xhat, 2), ("invstd", invstd, 1)):
        if a is not None:
            _float_array(name, a, nd, True)
            names.append(name); arrays.append(a)
    _float_array("Y", Y, 2, True)
    _same_dtype("layernorm_forward", names + ["Y"], arrays + [Y])
    B, F = X.shape
    _shape("gamma", gamma, (F,))
    _shape("beta", beta, (F,))
    if xhat is not None:
        _shape("xhat", xhat, (B, F))
    if invstd is not None:
        _shape("invstd", invstd, (B,))
    _shape("Y", Y, (B, F))
    if not (np.isfinite(eps) and eps >= 0):
        raise ValueError(f"layernorm_forward: eps must be finite and >= 0, got {eps!r}")
    if F == 0:
        raise ValueError("layernorm_forward: X must have at least one feature, got shape "
                         f"{X.shape}")
    if B == 0:
        return
    if X.dtype == F32:
        _ln_forward[float](X, gamma, beta, eps, xhat, invstd, Y)
    else:
        _ln_forward[double](X, gamma, beta, eps, xhat, invstd, Y)


cdef void _ln_backward(const floating[:, ::1] dY, const floating[:, ::1] xhat, const floating[::1] gamma,
                       const floating[::1] invstd, floating[:, ::1] dX, floating[::1] dgamma,
                       floating[::1] dbeta) except *:
    cdef Py_ssize_t B = dY.shape[0], F = dY.shape[1], s, j
    cdef const floating *dy
    cdef const floating *xh
    cdef floating *dx
    cdef floating mg, mgx, g
    cdef const floating *pg = &gamma[0]
    with nogil:
        # column sums first (dX may be dY): dY is (B, F) read as F channels of one position
        channel_reduce(RED_DOT, &dY[0, 0], &xhat[0, 0], <const floating *>NULL, B, F, 1, &dgamma[0])
        channel_reduce(RED_SUM, &dY[0, 0], <const floating *>NULL, <const floating *>NULL, B, F, 1, &dbeta[0])
        for s in prange(B, num_threads=_nthreads_for(B * F), schedule="static"):
            dy = &dY[0, 0] + s * F
            xh = &xhat[0, 0] + s * F
            dx = &dX[0, 0] + s * F
            mg = <floating>(seg_reduce(RED_DOT, dy, pg, pg, 0.0, F) / F)
            mgx = <floating>(seg_reduce(RED_DOT3, dy, pg, xh, 0.0, F) / F)
            for j in range(F):
                g = dy[j] * pg[j]
                dx[j] = invstd[s] * (g - mg - xh[j] * mgx)


def layernorm_backward(dY, xhat, gamma, invstd, dX, dgamma, dbeta):
    """LayerNorm's gradients.

    g = dY⊙gamma,  dX[s] = invstd[s]·(g − mean_j g − x̂[s]·mean_j(g⊙x̂[s])) per row,
    dgamma = Σ_s dY⊙x̂,  dbeta = Σ_s dY  (column sums in double, rows in order 0..B−1)

    Parameters
    ----------
    dY, xhat : ndarray, shape (B, F)
    gamma : ndarray, shape (F,)
    invstd : ndarray, shape (B,)
        The forward's per-row 1/√(σ² + ε).
    dX : ndarray, shape (B, F)
        Receives ∂L/∂X (may be dY itself).
    dgamma, dbeta : ndarray, shape (F,)
        Receive ∂L/∂gamma and ∂L/∂beta (overwritten).
    """
    names = ["dY", "xhat", "gamma", "invstd", "dX", "dgamma", "dbeta"]
    arrays = [dY, xhat, gamma, invstd, dX, dgamma, dbeta]
    for name, a, nd, w in zip(names, arrays, (2, 2, 1, 1, 2, 1, 1), (0, 0, 0, 0, 1, 1, 1)):
        _float_array(name, a, nd, w)
    _same_dtype("layernorm_backward", names, arrays)
    B, F = dY.shape
    for name, a, shape in (("xhat", xhat, (B, F)), ("gamma", gamma, (F,)), ("invstd", invstd, (B,)),
                           ("dX", dX, (B, F)), ("dgamma", dgamma, (F,)), ("dbeta", dbeta, (F,))):
        _shape(name, a, shape)
    if F == 0:
        raise ValueError(f"layernorm_backward: dY must have at least one feature, got shape {dY.shape}")
    if B == 0:
        dgamma[...] = 0
        dbeta[...] = 0
        return
    if dY.dtype == F32:
        _ln_backward[float](dY, xhat, gamma, invstd, dX, dgamma, dbeta)
    else:
        _ln_backward[double](dY, xhat, gamma, invstd, dX, dgamma, dbeta)
