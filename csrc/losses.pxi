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
#         with pos_weight p_j (output j): ℓ = −[p·y·log σ(z) + (1−y)·log(1−σ(z))]
#                                          = (1−y)·z + (1 + (p−1)·y)·(log(1 + e^{−|z|}) + max(−z, 0))
#                                     ∂ℓ/∂z = (1 + (p−1)·y)·σ(z) − p·y        (PyTorch's BCEWithLogitsLoss)
#       mse    ℓ = r²                                                         ∂ℓ/∂z = 2r
#       mae    ℓ = |r|                                                        ∂ℓ/∂z = sign r
#       huber  ℓ = ½r² if |r| ≤ δ else δ(|r| − ½δ)   (δ: huber_delta)         ∂ℓ/∂z = clip(r, −δ, δ)
#       L = (s/N) Σ ℓ,   ∂L/∂Z = s·∂ℓ/∂z / N      (s = scale: 1 for the mean; m/2 for mse makes
#                                                 the textbook's C = 1/2B Σ_i ‖r_i‖²)
#   sample weights w (B,), w_i ≥ 0, W = Σ_i w_i: the weighted mean replaces the mean,
#       cross-entropy   L = Σ_i w_i ℓ_i / W,                 ∂L/∂Z_ij = w_i ∂ℓ_i/∂Z_ij / W
#       elementwise     L = s Σ_i w_i Σ_j ℓ_ij / (m·W),      ∂L/∂Z_ij = s w_i ∂ℓ_ij/∂z / (m·W)
#       (a row's weight applies to each of its m elements); W = 0 gives L = 0 and ∂L/∂Z = 0.
#       w = None is the unweighted code path, unchanged; w of ones gives bitwise its results.
# Threads: the rows are cut into chunks (chunk_rows: their count depends on B alone),
# one task per chunk; each chunk's sum lands in its own slot and the slots are added
# in order (sum_in_order), so the value is the same for any thread count. delta is
# elementwise. W is one sequential sum over w before the chunks run.
# uses: scalar_math (f_exp, f_log, f_log1p, f_abs, sigmoid), reduce (chunk_rows,
# sum_in_order, row_max, sum_exp_shifted), threads, checks.

cdef enum:
    LOSS_BCE = 1
    LOSS_MSE = 2
    LOSS_MAE = 3
    LOSS_HUBER = 4

WEIGHTS_ERROR = "w: expected sample weights that are finite and >= 0"

POINTWISE_LOSSES = {"binary_cross_entropy": LOSS_BCE, "mse": LOSS_MSE, "mae": LOSS_MAE,
                    "huber": LOSS_HUBER}


cdef double weight_sum(const floating *w, Py_ssize_t B, int *bad) noexcept nogil:
    """W = Σ_i w_i, in order (one thread: B adds are nothing next to the loss); a negative
    or non-finite w_i sets *bad."""
    cdef Py_ssize_t i
    cdef double W = 0
    for i in range(B):
        if not (w[i] >= 0 and w[i] - w[i] == 0):   # NaN fails both, ±inf the second
            bad[0] = 1
        W += w[i]
    return W


cdef double ce_label_rows(const floating *Z, const int64_t *y, const floating *w, floating *delta,
                          Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t C, floating inv_b,
                          int *bad) noexcept nogil:
    """Σ_{i0≤i<i1} w_i (lse(Z_i) − Z_{i,y_i}); delta rows = w_i (softmax − onehot) · inv_b
    (inv_b = 1/B, or 1/W with weights; w NULL: every w_i = 1). Bad labels set *bad."""
    cdef Py_ssize_t i, j
    cdef int64_t yi
    cdef floating zmax, s, lse, g = inv_b
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
        if w == NULL:
            total += lse - z[yi]
        else:
            g = w[i] * inv_b
            total += w[i] * (lse - z[yi])
        if delta != NULL:
            s = 1 / s
            for j in range(C):
                delta[i * C + j] = f_exp(z[j] - zmax) * s * g
            delta[i * C + yi] -= g
    return total


cdef double ce_prob_rows(const floating *Z, const floating *T, const floating *w, floating *delta,
                         Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t C, floating inv_b) noexcept nogil:
    """Σ_i w_i Σ_j T_ij (lse(Z_i) − Z_ij); delta rows = w_i (softmax·ΣT − T) · inv_b."""
    cdef Py_ssize_t i, j
    cdef floating zmax, s, lse, tsum, wi = 1, g = inv_b
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
        if w != NULL:
            wi = w[i]
            g = wi * inv_b
        for j in range(C):
            if t[j] != 0:
                total += wi * t[j] * (lse - z[j])
        if delta != NULL:
            s = tsum / s
            for j in range(C):
                delta[i * C + j] = (f_exp(z[j] - zmax) * s - t[j]) * g
    return total


cdef inline floating pointwise_elem(int kind, floating huber_delta, floating z, floating y,
                                    const floating *pw, Py_ssize_t j, floating *g) noexcept nogil:
    """ℓ(z, y) of one element (output j; pw: BCE's pos_weight per output or NULL); *g = ∂ℓ/∂z."""
    cdef floating r, p, lw
    if kind == LOSS_BCE:
        if pw == NULL:
            g[0] = sigmoid(z) - y
            return (z if z > 0 else 0) - z * y + f_log1p(f_exp(-f_abs(z)))
        p = pw[j]
        lw = 1 + (p - 1) * y
        g[0] = lw * sigmoid(z) - p * y
        return (1 - y) * z + lw * (f_log1p(f_exp(-f_abs(z))) + (-z if z < 0 else 0))
    r = z - y
    if kind == LOSS_MSE:
        g[0] = 2 * r
        return r * r
    if kind == LOSS_MAE:
        g[0] = (r > 0) - (r < 0)
        return f_abs(r)
    if f_abs(r) <= huber_delta:
        g[0] = r
        return <floating>0.5 * r * r
    g[0] = huber_delta if r > 0 else -huber_delta
    return huber_delta * (f_abs(r) - <floating>0.5 * huber_delta)


cdef double pointwise_rows(int kind, floating huber_delta, const floating *Z, const floating *Y,
                           const floating *w, const floating *pw, floating *delta, Py_ssize_t i0,
                           Py_ssize_t i1, Py_ssize_t m, floating inv_n) noexcept nogil:
    """Σ_i w_i Σ_j ℓ(Z_ij, Y_ij) over rows i0..i1, and delta_ij = w_i ∂ℓ/∂z · inv_n
    (inv_n = s/N, or s/(m·W) with weights; w NULL: every w_i = 1)."""
    cdef Py_ssize_t i, j, e
    cdef floating ell, g, c = inv_n, wi = 1
    cdef double total = 0
    for i in range(i0, i1):
        if w != NULL:
            wi = w[i]
            c = wi * inv_n
        for j in range(m):
            e = i * m + j
            ell = pointwise_elem(kind, huber_delta, Z[e], Y[e], pw, j, &g)
            if w == NULL:
                total += ell
            else:
                total += wi * ell
            if delta != NULL:
                delta[e] = g * c
    return total


cdef double _ce_labels(const floating[:, ::1] Z, const int64_t[::1] y, floating[:, ::1] delta,
                       const floating[::1] w) except? -1:
    cdef Py_ssize_t B = Z.shape[0], C = Z.shape[1], chunk = chunk_rows(B), c
    cdef Py_ssize_t nchunks = (B + chunk - 1) // chunk
    cdef double partial[MAX_CHUNKS]
    cdef double W = B
    cdef int bad = 0, bad_w = 0, nt = _nthreads_for(B * C)
    cdef floating *pdelta = &delta[0, 0] if delta is not None else NULL
    cdef const floating *pw = &w[0] if w is not None else NULL
    cdef floating inv = <floating>1 / B
    with nogil:
        if pw != NULL:
            W = weight_sum(pw, B, &bad_w)
            inv = <floating>1 / <floating>W if W > 0 else 0
        if not bad_w:
            for c in prange(nchunks, num_threads=nt, schedule="static"):
                partial[c] = ce_label_rows(&Z[0, 0], &y[0], pw, pdelta, c * chunk,
                                           min(B, (c + 1) * chunk), C, inv, &bad)
    if bad_w:
        raise ValueError(WEIGHTS_ERROR)
    if bad:
        lo, hi = np.min(y), np.max(y)
        raise ValueError(f"y: cross_entropy labels must lie in [0, {C - 1}] for {C} classes, "
                         f"got values in [{lo}, {hi}]")
    return sum_in_order(partial, nchunks) / W if W > 0 else 0.0


cdef double _ce_probs(const floating[:, ::1] Z, const floating[:, ::1] T, floating[:, ::1] delta,
                      const floating[::1] w) except? -1:
    cdef Py_ssize_t B = Z.shape[0], C = Z.shape[1], chunk = chunk_rows(B), c
    cdef Py_ssize_t nchunks = (B + chunk - 1) // chunk
    cdef double partial[MAX_CHUNKS]
    cdef double W = B
    cdef int bad = 0, nt = _nthreads_for(B * C)
    cdef floating *pdelta = &delta[0, 0] if delta is not None else NULL
    cdef const floating *pw = &w[0] if w is not None else NULL
    cdef floating inv = <floating>1 / B
    with nogil:
        if pw != NULL:
            W = weight_sum(pw, B, &bad)
            inv = <floating>1 / <floating>W if W > 0 else 0
        if not bad:
            for c in prange(nchunks, num_threads=nt, schedule="static"):
                partial[c] = ce_prob_rows(&Z[0, 0], &T[0, 0], pw, pdelta, c * chunk,
                                          min(B, (c + 1) * chunk), C, inv)
    if bad:
        raise ValueError(WEIGHTS_ERROR)
    return sum_in_order(partial, nchunks) / W if W > 0 else 0.0


cdef double _pointwise(int kind, floating huber_delta, const floating[:, ::1] Z,
                       const floating[:, ::1] Y, floating[:, ::1] delta, double scale,
                       const floating[::1] w, const floating[::1] pos_weight) except? -1:
    cdef Py_ssize_t B = Z.shape[0], m = Z.shape[1], chunk = chunk_rows(B), c
    cdef Py_ssize_t nchunks = (B + chunk - 1) // chunk
    cdef double partial[MAX_CHUNKS]
    cdef double W = B
    cdef int bad = 0, nt = _nthreads_for(B * m)
    cdef floating *pdelta = &delta[0, 0] if delta is not None else NULL
    cdef const floating *pw = &w[0] if w is not None else NULL
    cdef const floating *ppos = &pos_weight[0] if pos_weight is not None else NULL
    cdef floating inv_n = <floating>scale / (B * m)
    with nogil:
        if pw != NULL:
            W = weight_sum(pw, B, &bad)
            inv_n = <floating>scale / <floating>(m * W) if W > 0 else 0
        if not bad:
            for c in prange(nchunks, num_threads=nt, schedule="static"):
                partial[c] = pointwise_rows(kind, huber_delta, &Z[0, 0], &Y[0, 0], pw, ppos, pdelta,
                                            c * chunk, min(B, (c + 1) * chunk), m, inv_n)
    if bad:
        raise ValueError(WEIGHTS_ERROR)
    return scale * sum_in_order(partial, nchunks) / (m * W) if W > 0 else 0.0


cdef _check_loss_args(str where, Z, delta):
    _float_array("Z", Z, 2)
    if Z.shape[0] == 0 or Z.shape[1] == 0:
        raise ValueError(f"{where}: expected a non-empty batch, got Z of shape {Z.shape}")
    if delta is not None:
        _float_array("delta", delta, 2, True)
        _same_dtype(where, ["Z", "delta"], [Z, delta])
        _shape("delta", delta, Z.shape)


cdef _check_weights(str where, w, Z):
    """w: None, or sample weights (B,) of Z's dtype (finite, >= 0: checked by the kernel)."""
    if w is not None:
        _float_array("w", w, 1)
        _same_dtype(where, ["Z", "w"], [Z, w])
        _shape("w", w, (Z.shape[0],))


def softmax_cross_entropy(Z, y, delta=None, w=None):
    """Softmax cross-entropy of logits Z (B, C) against integer labels y (B,) int64 or target
    probabilities y (B, C): the mean over rows, or with sample weights w (B,) (Z's dtype,
    finite, >= 0) the weighted mean L = Σ_i w_i ℓ_i / Σ_i w_i (0 when Σ_i w_i = 0).
    Writes ∂L/∂Z into delta when given. Returns L."""
    _check_loss_args("softmax_cross_entropy", Z, delta)
    _check_weights("softmax_cross_entropy", w, Z)
    if not isinstance(y, np.ndarray):
        raise TypeError(f"y: expected a numpy.ndarray, got {type(y).__name__}")
    if y.ndim == 1:
        if y.dtype != I64:
            raise TypeError(f"y: expected int64 class labels, got dtype {y.dtype}")
        if not y.flags.c_contiguous:
            raise ValueError(f"y: expected a C-contiguous array, got strides {y.strides}")
        _shape("y", y, (Z.shape[0],))
        if Z.dtype == F32:
            return _ce_labels[float](Z, y, delta, w)
        return _ce_labels[double](Z, y, delta, w)
    _float_array("y", y, 2)
    _same_dtype("softmax_cross_entropy", ["Z", "y"], [Z, y])
    _shape("y", y, Z.shape)
    if Z.dtype == F32:
        return _ce_probs[float](Z, y, delta, w)
    return _ce_probs[double](Z, y, delta, w)


def pointwise_loss(str kind, Z, Y, delta=None, double huber_delta=1.0, double scale=1.0, w=None,
                   pos_weight=None):
    """scale × the mean of an elementwise loss over all elements of Z (B, m) against targets
    Y (B, m): kind in 'binary_cross_entropy' (Z are logits), 'mse', 'mae', 'huber'
    (δ = huber_delta). With sample weights w (B,) (Z's dtype, finite, >= 0) the weighted mean
    L = scale Σ_i w_i Σ_j ℓ_ij / (m Σ_i w_i) (0 when Σ_i w_i = 0). pos_weight (m,) (Z's dtype,
    finite, >= 0; binary_cross_entropy only) weighs each output's positive term:
    ℓ = −[p_j y log σ(z) + (1 − y) log(1 − σ(z))]. Writes ∂L/∂Z into delta when given.
    Returns L."""
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
    _check_weights(kind, w, Z)
    if pos_weight is not None:
        if kind != "binary_cross_entropy":
            raise ValueError(f"{kind}: pos_weight applies to binary_cross_entropy only")
        _float_array("pos_weight", pos_weight, 1)
        _same_dtype(kind, ["Z", "pos_weight"], [Z, pos_weight])
        _shape("pos_weight", pos_weight, (Z.shape[1],))
        if not (np.isfinite(pos_weight).all() and (pos_weight >= 0).all()):
            raise ValueError(f"pos_weight: expected finite values >= 0, got {pos_weight}")
    if Z.dtype == F32:
        return _pointwise[float](POINTWISE_LOSSES[kind], <float>huber_delta, Z, Y, delta, scale, w,
                                 pos_weight)
    return _pointwise[double](POINTWISE_LOSSES[kind], huber_delta, Z, Y, delta, scale, w, pos_weight)
