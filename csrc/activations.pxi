# activations.pxi — f and f' for every activation.
#
#   forward   A = f(Z)                         (elementwise, softmax row-wise)
#   backward  delta = dA ⊙ f'(Z)              (dA = ∂L/∂A, delta = ∂L/∂Z;
#                                               softmax: delta = A ⊙ (dA − ⟨dA, A⟩_row))
#   Z, A, dA, delta: B×n, one float dtype.
#
#   identity    f(z) = z                                f' = 1
#   relu        f(z) = max(z, 0)                        f' = [z > 0]
#   leaky_relu  f(z) = z if z > 0 else α·z              f' = 1 or α
#   elu         f(z) = z if z > 0 else α·(eᶻ − 1)       f' = 1 or α·eᶻ
#   sigmoid     f(z) = σ(z) = 1 / (1 + e⁻ᶻ)  (scalar_math.pxi: no overflow)   f' = f·(1 − f)
#   tanh        f(z) = tanh z                           f' = 1 − f²
#   gelu        f(z) = z·Φ(z) = ½ z (1 + erf(z/√2))     (exact erf form, not the tanh approximation)
#               f' = Φ(z) + z·φ(z),  φ(z) = e^{−z²/2}/√(2π)
#   softmax     f(z)_j = e^{z_j − max z} / Σ_k e^{z_k − max z}   (row-wise)
#
# Threads: rows are split over threads (static schedule). Each element is computed by one
# thread from its own row only, softmax's sums run over the row in order, so the result
# does not depend on the thread count.
# uses: scalar_math (f_exp …, sigmoid), reduce (row_max, sum_exp_shifted), threads, checks.

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

cdef extern from "cpu_dispatch.h" nogil:   # act_kernels.h: identity, relu, leaky relu and bias rows, the variant in use
    void pn_bias_f32(long n, float *z, const float *b)
    void pn_bias_f64(long n, double *z, const double *b)
    void pn_act_fwd_f32(int act, long n, float alpha, const float *z, float *a)
    void pn_act_fwd_f64(int act, long n, double alpha, const double *z, double *a)
    void pn_act_bwd_f32(int act, long n, float alpha, const float *z, const float *da, float *d)
    void pn_act_bwd_f64(int act, long n, double alpha, const double *z, const double *da, double *d)
    void pn_bias_act_f32(int act, long rows, long n, float alpha, float *z, long ldz, const float *b,
                         int by_row, float *a, long lda)
    void pn_bias_act_f64(int act, long rows, long n, double alpha, double *z, long ldz, const double *b,
                         int by_row, double *a, long lda)


cdef inline void add_bias_row(floating *Z, const floating *b, Py_ssize_t n) noexcept nogil:
    """Z[j] += b[j] for j < n."""
    if floating is float:
        pn_bias_f32(n, Z, b)
    else:
        pn_bias_f64(n, Z, b)


cdef double INV_SQRT2 = 0.70710678118654752440
cdef double INV_SQRT_2PI = 0.39894228040143267794


cdef inline void softmax_row(const floating *Z, floating *A, Py_ssize_t n) noexcept nogil:
    """A = exp(Z − max Z) / Σ exp(Z − max Z) for one row of n (n = 0: nothing; A may be Z)."""
    cdef Py_ssize_t j
    cdef floating s
    if n <= 0:
        return
    s = 1 / sum_exp_shifted(Z, row_max(Z, n), A, n)
    for j in range(n):
        A[j] *= s


cdef inline void act_forward(int act, floating alpha, const floating *Z, floating *A,
                             Py_ssize_t n) noexcept nogil:
    """A[j] = f(Z[j]) for j < n (one row; A may alias Z)."""
    cdef Py_ssize_t j
    cdef floating z
    if act <= ACT_LEAKY_RELU:    # branch-free (act_kernels.h); relu keeps a NaN a NaN
        if floating is float:
            pn_act_fwd_f32(act, n, alpha, Z, A)
        else:
            pn_act_fwd_f64(act, n, alpha, Z, A)
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
                              const floating *dA, floating *delta, Py_ssize_t n) noexcept nogil:
    """delta[j] = dA[j] · f'(Z[j]) for one row of n (A = f(Z); delta may alias dA)."""
    cdef Py_ssize_t j
    cdef floating z, s
    if act <= ACT_LEAKY_RELU:    # branch-free (act_kernels.h)
        if floating is float:
            pn_act_bwd_f32(act, n, alpha, Z, dA, delta)
        else:
            pn_act_bwd_f64(act, n, alpha, Z, dA, delta)
    elif act == ACT_ELU:
        for j in range(n):
            delta[j] = dA[j] if Z[j] > 0 else dA[j] * alpha * f_exp(Z[j])
    elif act == ACT_SIGMOID:
        for j in range(n):
            delta[j] = dA[j] * A[j] * (1 - A[j])
    elif act == ACT_TANH:
        for j in range(n):
            delta[j] = dA[j] * (1 - A[j] * A[j])
    elif act == ACT_GELU:
        for j in range(n):
            z = Z[j]
            delta[j] = dA[j] * (<floating>0.5 * (1 + f_erf(z * <floating>INV_SQRT2))
                                + z * <floating>INV_SQRT_2PI * f_exp(<floating>-0.5 * z * z))
    elif act == ACT_SOFTMAX:
        s = 0
        for j in range(n):
            s += dA[j] * A[j]
        for j in range(n):
            delta[j] = A[j] * (dA[j] - s)


cdef void _activation_forward(int act, floating alpha, const floating[:, ::1] Z,
                              floating[:, ::1] A, int nt):
    cdef Py_ssize_t i, n = Z.shape[1]
    with nogil:
        for i in prange(Z.shape[0], num_threads=nt, schedule="static"):
            act_forward(act, alpha, &Z[i, 0], &A[i, 0], n)


cdef void _activation_backward(int act, floating alpha, const floating[:, ::1] Z,
                               const floating[:, ::1] A, const floating[:, ::1] dA,
                               floating[:, ::1] delta, int nt):
    cdef Py_ssize_t i, n = Z.shape[1]
    with nogil:
        for i in prange(Z.shape[0], num_threads=nt, schedule="static"):
            act_backward(act, alpha, &Z[i, 0], &A[i, 0], &dA[i, 0], &delta[i, 0], n)


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


def activation_backward(act, double alpha, Z, A, dA, delta):
    """delta = dA ⊙ f'(Z) row by row, given A = f(Z); all (B, n) of one dtype (delta may be dA)."""
    cdef int code = _act_code(act)
    for name, a, w in (("Z", Z, False), ("A", A, False), ("dA", dA, False), ("delta", delta, True)):
        _float_array(name, a, 2, w)
    _same_dtype("activation_backward", ["Z", "A", "dA", "delta"], [Z, A, dA, delta])
    for name, a in (("A", A), ("dA", dA), ("delta", delta)):
        _shape(name, a, Z.shape)
    if Z.shape[0] == 0 or Z.shape[1] == 0:
        return
    if Z.dtype == F32:
        _activation_backward[float](code, <float>alpha, Z, A, dA, delta, _nthreads_for(Z.size))
    else:
        _activation_backward[double](code, alpha, Z, A, dA, delta, _nthreads_for(Z.size))
