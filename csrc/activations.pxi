# activations.pxi — f and f' for every activation.
#
#   forward   A = f(Z)                         (elementwise, softmax row-wise)
#   backward  dZ = G ⊙ f'(Z)                   (G = ∂L/∂A; softmax: dZ = A ⊙ (G − ⟨G, A⟩_row))
#
#   identity    f(z) = z                                f' = 1
#   relu        f(z) = max(z, 0)                        f' = [z > 0]
#   leaky_relu  f(z) = z if z > 0 else α·z              f' = 1 or α
#   elu         f(z) = z if z > 0 else α·(eᶻ − 1)       f' = 1 or α·eᶻ
#   sigmoid     f(z) = 1 / (1 + e⁻ᶻ)  (via e^{−|z|}: no overflow for |z| ≫ 0)   f' = f·(1 − f)
#   tanh        f(z) = tanh z                           f' = 1 − f²
#   gelu        f(z) = z·Φ(z) = ½ z (1 + erf(z/√2))     (exact erf form, not the tanh approximation)
#               f' = Φ(z) + z·φ(z),  φ(z) = e^{−z²/2}/√(2π)
#   softmax     f(z)_j = e^{z_j − max z} / Σ_k e^{z_k − max z}   (row-wise)

cdef enum:
    ACT_IDENTITY = 0
    ACT_RELU = 1
    ACT_LEAKY_RELU = 2
    ACT_ELU = 3
    ACT_SIGMOID = 4
    ACT_TANH = 5
    ACT_GELU = 6
    ACT_SOFTMAX = 7

ACTIVATIONS = {"identity": ACT_IDENTITY, "relu": ACT_RELU, "leaky_relu": ACT_LEAKY_RELU,
               "elu": ACT_ELU, "sigmoid": ACT_SIGMOID, "tanh": ACT_TANH, "gelu": ACT_GELU,
               "softmax": ACT_SOFTMAX}

cdef double INV_SQRT2 = 0.70710678118654752440
cdef double INV_SQRT_2PI = 0.39894228040143267794


cdef inline floating sigmoid(floating z) noexcept nogil:
    cdef floating e
    if z >= 0:
        return 1 / (1 + f_exp(-z))
    e = f_exp(z)
    return e / (1 + e)


cdef inline void softmax_row(const floating *Z, floating *A, Py_ssize_t n) noexcept nogil:
    """A = exp(Z − max Z) / Σ exp(Z − max Z) for one row of n (n = 0: nothing)."""
    cdef Py_ssize_t j
    cdef floating zmax, s = 0
    if n <= 0:
        return
    zmax = Z[0]
    for j in range(1, n):
        if Z[j] > zmax:
            zmax = Z[j]
    for j in range(n):
        A[j] = f_exp(Z[j] - zmax)
        s += A[j]
    s = 1 / s
    for j in range(n):
        A[j] *= s


cdef inline void act_forward(int act, floating alpha, const floating *Z, floating *A,
                             Py_ssize_t n) noexcept nogil:
    """A[j] = f(Z[j]) for j < n (one row; A may alias Z)."""
    cdef Py_ssize_t j
    cdef floating z
    if act == ACT_IDENTITY:
        if A != Z:
            for j in range(n):
                A[j] = Z[j]
    elif act == ACT_RELU:
        for j in range(n):
            A[j] = 0 if Z[j] <= 0 else Z[j]  # NaN stays NaN (a diverged value is never hidden)
    elif act == ACT_LEAKY_RELU:
        for j in range(n):
            A[j] = Z[j] if Z[j] > 0 else alpha * Z[j]
    elif act == ACT_ELU:
        for j in range(n):
            A[j] = Z[j] if Z[j] > 0 else alpha * f_expm1(Z[j])
    elif act == ACT_SIGMOID:
        for j in range(n):
            A[j] = sigmoid(Z[j])
    elif act == ACT_TANH:
        for j in range(n):
            A[j] = f_tanh(Z[j])
    elif act == ACT_GELU:
        for j in range(n):
            z = Z[j]
            A[j] = <floating>0.5 * z * (1 + f_erf(z * <floating>INV_SQRT2))
    elif act == ACT_SOFTMAX:
        softmax_row(Z, A, n)


cdef inline void act_backward(int act, floating alpha, const floating *Z, const floating *A,
                              const floating *G, floating *dZ, Py_ssize_t n) noexcept nogil:
    """dZ[j] = G[j] · f'(Z[j]) for one row of n (A = f(Z); dZ may alias G)."""
    cdef Py_ssize_t j
    cdef floating z, s
    if act == ACT_IDENTITY:
        if dZ != G:
            for j in range(n):
                dZ[j] = G[j]
    elif act == ACT_RELU:
        for j in range(n):
            dZ[j] = G[j] if Z[j] > 0 else 0
    elif act == ACT_LEAKY_RELU:
        for j in range(n):
            dZ[j] = G[j] if Z[j] > 0 else alpha * G[j]
    elif act == ACT_ELU:
        for j in range(n):
            dZ[j] = G[j] if Z[j] > 0 else G[j] * alpha * f_exp(Z[j])
    elif act == ACT_SIGMOID:
        for j in range(n):
            dZ[j] = G[j] * A[j] * (1 - A[j])
    elif act == ACT_TANH:
        for j in range(n):
            dZ[j] = G[j] * (1 - A[j] * A[j])
    elif act == ACT_GELU:
        for j in range(n):
            z = Z[j]
            dZ[j] = G[j] * (<floating>0.5 * (1 + f_erf(z * <floating>INV_SQRT2))
                            + z * <floating>INV_SQRT_2PI * f_exp(<floating>-0.5 * z * z))
    elif act == ACT_SOFTMAX:
        s = 0
        for j in range(n):
            s += G[j] * A[j]
        for j in range(n):
            dZ[j] = A[j] * (G[j] - s)


cdef void _activation_forward(int act, floating alpha, const floating[:, ::1] Z,
                              floating[:, ::1] A, int nt) noexcept nogil:
    cdef Py_ssize_t i, n = Z.shape[1]
    for i in prange(Z.shape[0], num_threads=nt, schedule="static"):
        act_forward(act, alpha, &Z[i, 0], &A[i, 0], n)


cdef void _activation_backward(int act, floating alpha, const floating[:, ::1] Z,
                               const floating[:, ::1] A, const floating[:, ::1] G,
                               floating[:, ::1] dZ, int nt) noexcept nogil:
    cdef Py_ssize_t i, n = Z.shape[1]
    for i in prange(Z.shape[0], num_threads=nt, schedule="static"):
        act_backward(act, alpha, &Z[i, 0], &A[i, 0], &G[i, 0], &dZ[i, 0], n)


cdef int _act_code(object act) except -1:
    if isinstance(act, str):
        if act not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {act!r}")
        return ACTIVATIONS[act]
    if not 0 <= act <= ACT_SOFTMAX:
        raise ValueError(f"activation: expected a code 0..{ACT_SOFTMAX}, got {act!r}")
    return act


def activation_forward(act, double alpha, Z, A):
    """A = f(Z) row by row; Z, A: (B, n) of one float dtype (A may be Z)."""
    cdef int code = _act_code(act)
    _float_array("Z", Z, 2)
    _float_array("A", A, 2, True)
    _same_dtype("activation_forward", ["Z", "A"], [Z, A])
    _shape("A", A, Z.shape)
    if Z.shape[0] == 0 or Z.shape[1] == 0:
        return
    if Z.dtype == F32:
        _activation_forward[float](code, <float>alpha, Z, A, _nthreads_for(Z.size))
    else:
        _activation_forward[double](code, alpha, Z, A, _nthreads_for(Z.size))


def activation_backward(act, double alpha, Z, A, G, dZ):
    """dZ = G ⊙ f'(Z) row by row, given A = f(Z); all (B, n) of one dtype (dZ may be G)."""
    cdef int code = _act_code(act)
    for name, a, w in (("Z", Z, False), ("A", A, False), ("G", G, False), ("dZ", dZ, True)):
        _float_array(name, a, 2, w)
    _same_dtype("activation_backward", ["Z", "A", "G", "dZ"], [Z, A, G, dZ])
    for name, a in (("A", A), ("G", G), ("dZ", dZ)):
        _shape(name, a, Z.shape)
    if Z.shape[0] == 0 or Z.shape[1] == 0:
        return
    if Z.dtype == F32:
        _activation_backward[float](code, <float>alpha, Z, A, G, dZ, _nthreads_for(Z.size))
    else:
        _activation_backward[double](code, alpha, Z, A, G, dZ, _nthreads_for(Z.size))
