# losses.pxi — loss values and their gradients w.r.t. the network output Z.
#
# Each kernel returns L and writes delta = ∂L/∂Z (delta may be omitted for the value alone).
#   softmax cross-entropy, integer labels y (B,), logits Z (B×C), mean over the batch:
#       L = (1/B) Σ_i [lse(Z_i) − Z_{i,y_i}],   lse(z) = max z + log Σ_j e^{z_j − max z}
#       ∂L/∂Z_ij = (softmax(Z_i)_j − [j = y_i]) / B
#   softmax cross-entropy, target probabilities T (B×C):
#       L = (1/B) Σ_i Σ_j T_ij (lse(Z_i) − Z_ij),   ∂L/∂Z_ij = (softmax(Z_i)_j Σ_k T_ik − T_ij) / B
#   elementwise losses, mean over all B×m elements (r = Z − Y, N = B·m):
#       binary cross-entropy on logits  ℓ = max(z, 0) − z·y + log(1 + e^{−|z|})   ∂ℓ/∂z = σ(z) − y
#       mse    ℓ = r²                                                         ∂ℓ/∂z = 2r
#       mae    ℓ = |r|                                                        ∂ℓ/∂z = sign r
#       huber  ℓ = ½r² if |r| ≤ δ else δ(|r| − ½δ)   (δ: huber_delta)         ∂ℓ/∂z = clip(r, −δ, δ)
#       L = (s/N) Σ ℓ,   ∂L/∂Z = s·∂ℓ/∂z / N      (s = scale: 1 for the mean; m/2 for mse makes
#                                                 the textbook's C = 1/2B Σ_i ‖r_i‖²)
# Threads: the rows are cut into chunks (chunk_rows: their count depends on B alone),
# one task per chunk; each chunk's sum lands in its own slot and the slots are added
# in order (sum_in_order), so the value is the same for any thread count. delta is
# elementwise.
# uses: scalar_math (f_exp, f_log, f_log1p, f_abs, sigmoid), reduce (chunk_rows,
# sum_in_order, row_max, sum_exp_shifted), threads, checks.

cdef enum:
    LOSS_BCE = 1
    LOSS_MSE = 2
    LOSS_MAE = 3
    LOSS_HUBER = 4

POINTWISE_LOSSES = {"binary_cross_entropy": LOSS_BCE, "mse": LOSS_MSE, "mae": LOSS_MAE,
                    "huber": LOSS_HUBER}


cdef double ce_label_rows(const floating *Z, const int64_t *y, floating *delta, Py_ssize_t i0,
                          Py_ssize_t i1, Py_ssize_t C, floating inv_b, int *bad) noexcept nogil:
    """Σ_{i0≤i<i1} lse(Z_i) − Z_{i,y_i}; delta rows = (softmax − onehot)/B. Bad labels set *bad."""
    cdef Py_ssize_t i, j
    cdef int64_t yi
    cdef floating zmax, s, lse
    cdef const floating *z
    cdef double total = 0
    for i in range(i0, i1):
        z = Z + i * C
        yi = y[i]
        if yi < 0 or yi >= C:
            bad[0] = 1
            continue
        zmax = row_max(z, C)
        s = sum_exp_shifted(z, zmax, <floating *>NULL, C)
        lse = zmax + f_log(s)
        total += lse - z[yi]
        if delta != NULL:
            s = 1 / s
            for j in range(C):
                delta[i * C + j] = f_exp(z[j] - zmax) * s * inv_b
            delta[i * C + yi] -= inv_b
    return total


cdef double ce_prob_rows(const floating *Z, const floating *T, floating *delta, Py_ssize_t i0,
                         Py_ssize_t i1, Py_ssize_t C, floating inv_b) noexcept nogil:
    """Σ_i Σ_j T_ij (lse(Z_i) − Z_ij); delta rows = (softmax·ΣT − T)/B."""
    cdef Py_ssize_t i, j
    cdef floating zmax, s, lse, tsum
    cdef const floating *z
    cdef const floating *t
    cdef double total = 0
    for i in range(i0, i1):
        z = Z + i * C
        t = T + i * C
        zmax = row_max(z, C)
        s = sum_exp_shifted(z, zmax, <floating *>NULL, C)
        tsum = 0
        for j in range(C):
            tsum += t[j]
        lse = zmax + f_log(s)
        for j in range(C):
            if t[j] != 0:
                total += t[j] * (lse - z[j])
        if delta != NULL:
            s = tsum / s
            for j in range(C):
                delta[i * C + j] = (f_exp(z[j] - zmax) * s - t[j]) * inv_b
    return total


cdef double pointwise_rows(int kind, floating huber_delta, const floating *Z, const floating *Y,
                           floating *delta, Py_ssize_t e0, Py_ssize_t e1, floating inv_n) noexcept nogil:
    """Σ ℓ(Z_e, Y_e) over elements e0..e1, and delta_e = ∂ℓ/∂z / N."""
    cdef Py_ssize_t e
    cdef floating z, r, g
    cdef double total = 0
    for e in range(e0, e1):
        z = Z[e]
        if kind == LOSS_BCE:
            total += (z if z > 0 else 0) - z * Y[e] + f_log1p(f_exp(-f_abs(z)))
            g = sigmoid(z) - Y[e]
        elif kind == LOSS_MSE:
            r = z - Y[e]
            total += r * r
            g = 2 * r
        elif kind == LOSS_MAE:
            r = z - Y[e]
            total += f_abs(r)
            g = (r > 0) - (r < 0)
        else:
            r = z - Y[e]
            if f_abs(r) <= huber_delta:
                total += <floating>0.5 * r * r
                g = r
            else:
                total += huber_delta * (f_abs(r) - <floating>0.5 * huber_delta)
                g = huber_delta if r > 0 else -huber_delta
        if delta != NULL:
            delta[e] = g * inv_n
    return total


cdef double _ce_labels(const floating[:, ::1] Z, const int64_t[::1] y, floating[:, ::1] delta) except? -1:
    cdef Py_ssize_t B = Z.shape[0], C = Z.shape[1], chunk = chunk_rows(B), c
    cdef Py_ssize_t nchunks = (B + chunk - 1) // chunk
    cdef double partial[MAX_CHUNKS]
    cdef int bad = 0, nt = _nthreads_for(B * C)
    cdef floating *pdelta = &delta[0, 0] if delta is not None else NULL
    with nogil:
        for c in prange(nchunks, num_threads=nt, schedule="static"):
            partial[c] = ce_label_rows(&Z[0, 0], &y[0], pdelta, c * chunk, min(B, (c + 1) * chunk),
                                       C, <floating>1 / B, &bad)
    if bad:
        lo, hi = np.min(y), np.max(y)
        raise ValueError(f"y: cross_entropy labels must lie in [0, {C - 1}] for {C} classes, "
                         f"got values in [{lo}, {hi}]")
    return sum_in_order(partial, nchunks) / B


cdef double _ce_probs(const floating[:, ::1] Z, const floating[:, ::1] T, floating[:, ::1] delta):
    cdef Py_ssize_t B = Z.shape[0], C = Z.shape[1], chunk = chunk_rows(B), c
    cdef Py_ssize_t nchunks = (B + chunk - 1) // chunk
    cdef double partial[MAX_CHUNKS]
    cdef int nt = _nthreads_for(B * C)
    cdef floating *pdelta = &delta[0, 0] if delta is not None else NULL
    with nogil:
        for c in prange(nchunks, num_threads=nt, schedule="static"):
            partial[c] = ce_prob_rows(&Z[0, 0], &T[0, 0], pdelta, c * chunk, min(B, (c + 1) * chunk),
                                      C, <floating>1 / B)
    return sum_in_order(partial, nchunks) / B


cdef double _pointwise(int kind, floating huber_delta, const floating[:, ::1] Z,
                       const floating[:, ::1] Y, floating[:, ::1] delta, double scale):
    cdef Py_ssize_t B = Z.shape[0], m = Z.shape[1], chunk = chunk_rows(B), c
    cdef Py_ssize_t nchunks = (B + chunk - 1) // chunk
    cdef double partial[MAX_CHUNKS]
    cdef int nt = _nthreads_for(B * m)
    cdef floating *pdelta = &delta[0, 0] if delta is not None else NULL
    cdef floating inv_n = <floating>scale / (B * m)
    with nogil:
        for c in prange(nchunks, num_threads=nt, schedule="static"):
            partial[c] = pointwise_rows(kind, huber_delta, &Z[0, 0], &Y[0, 0], pdelta, c * chunk * m,
                                        min(B, (c + 1) * chunk) * m, inv_n)
    return scale * sum_in_order(partial, nchunks) / (B * m)


cdef _check_loss_args(str where, Z, delta):
    _float_array("Z", Z, 2)
    if Z.shape[0] == 0 or Z.shape[1] == 0:
        raise ValueError(f"{where}: expected a non-empty batch, got Z of shape {Z.shape}")
    if delta is not None:
        _float_array("delta", delta, 2, True)
        _same_dtype(where, ["Z", "delta"], [Z, delta])
        _shape("delta", delta, Z.shape)


def softmax_cross_entropy(Z, y, delta=None):
    """Mean softmax cross-entropy of logits Z (B, C) against integer labels y (B,) int64
    or target probabilities y (B, C); writes ∂L/∂Z into delta when given. Returns L."""
    _check_loss_args("softmax_cross_entropy", Z, delta)
    if not isinstance(y, np.ndarray):
        raise TypeError(f"y: expected a numpy.ndarray, got {type(y).__name__}")
    if y.ndim == 1:
        if y.dtype != I64:
            raise TypeError(f"y: expected int64 class labels, got dtype {y.dtype}")
        if not y.flags.c_contiguous:
            raise ValueError(f"y: expected a C-contiguous array, got strides {y.strides}")
        _shape("y", y, (Z.shape[0],))
        if Z.dtype == F32:
            return _ce_labels[float](Z, y, delta)
        return _ce_labels[double](Z, y, delta)
    _float_array("y", y, 2)
    _same_dtype("softmax_cross_entropy", ["Z", "y"], [Z, y])
    _shape("y", y, Z.shape)
    if Z.dtype == F32:
        return _ce_probs[float](Z, y, delta)
    return _ce_probs[double](Z, y, delta)


def pointwise_loss(str kind, Z, Y, delta=None, double huber_delta=1.0, double scale=1.0):
    """scale × the mean of an elementwise loss over all elements of Z (B, m) against targets
    Y (B, m): kind in 'binary_cross_entropy' (Z are logits), 'mse', 'mae', 'huber'
    (δ = huber_delta). Writes ∂L/∂Z into delta when given. Returns L."""
    if not (scale > 0 and scale < float("inf")):
        raise ValueError(f"pointwise_loss: scale must be finite and > 0, got {scale}")
    if kind not in POINTWISE_LOSSES:
        raise ValueError(f"pointwise_loss: expected kind in {sorted(POINTWISE_LOSSES)}, got {kind!r}")
    if kind == "huber" and not huber_delta > 0:
        raise ValueError(f"huber: huber_delta must be > 0, got {huber_delta}")
    _check_loss_args(kind, Z, delta)
    _float_array("Y", Y, 2)
    _same_dtype(kind, ["Z", "Y"], [Z, Y])
    _shape("Y", Y, Z.shape)
    if Z.dtype == F32:
        return _pointwise[float](POINTWISE_LOSSES[kind], <float>huber_delta, Z, Y, delta, scale)
    return _pointwise[double](POINTWISE_LOSSES[kind], huber_delta, Z, Y, delta, scale)
