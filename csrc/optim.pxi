# optim.pxi — in-place parameter updates on flat vectors (all of a model's
# parameters live in one contiguous vector, so one call updates them all).
#
# g ← s·g  (s: gradient-clipping scale, 1 when not clipping)
#   SGD       g ← g + λ·w;  v ← μ·v + g;  w ← w − η·(g + μ·v) (Nesterov) or w − η·v
#             (μ = 0: w ← w − η·g, no velocity)
#   Adam      g ← g + λ·w (L2, coupled);  AdamW: w ← w − η·λ·w (decoupled), then
#             m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;
#             w ← w − η·(m / (1−β₁ᵗ)) / (√(v / (1−β₂ᵗ)) + ε)
#   RMSprop   g ← g + λ·w;  v ← ρv + (1−ρ)g²;  w ← w − η·g / (√v + ε)
# w, g, v, m: flat vectors of one length and float dtype. Threads take chunks of
# UPDATE_CHUNK elements; the updates are elementwise, so any split over threads gives the
# same result. The loops themselves are in optim_kernels.h, built for the baseline ISA and
# for AVX2+FMA (cpu_dispatch.h picks the variant, together with the GEMM's).
#
# Global gradient norm for clipping: ‖g‖₂ = √(Σ g²), summed in float64 over chunks of
# NORM_CHUNK elements (fixed by the length alone), the chunk sums added in order.
# uses: reduce (sum_in_order), threads (work buffers), cpu_dispatch (pn_update_T: the variant
# in use), checks.

cdef enum:
    NORM_CHUNK = 16384
    UPDATE_CHUNK = 8192    # elements per task of an update


cdef extern from "cpu_dispatch.h" nogil:   # optim_kernels.h's updates, the variant in use
    enum:
        PN_SGD
        PN_ADAM
        PN_RMSPROP
    void pn_update_f32(int rule, long n, float *w, const float *g, float *s1, float *s2, const double *h)
    void pn_update_f64(int rule, long n, double *w, const double *g, double *s1, double *s2, const double *h)


cdef inline void update_slice(int rule, Py_ssize_t i0, Py_ssize_t k, floating *w, const floating *g,
                              floating *s1, floating *s2, const double *h) noexcept nogil:
    """Elements [i0, i0 + k) of w (and its state s1, s2, either may be NULL) updated by `rule`;
    h: the kernel's scalars (cpu_dispatch.h)."""
    if floating is float:
        pn_update_f32(rule, k, w + i0, g + i0, s1 + i0 if s1 != NULL else NULL, s2 + i0 if s2 != NULL else NULL, h)
    else:
        pn_update_f64(rule, k, w + i0, g + i0, s1 + i0 if s1 != NULL else NULL, s2 + i0 if s2 != NULL else NULL, h)


cdef inline void update_chunk(int rule, Py_ssize_t c, Py_ssize_t n, floating *w, const floating *g,
                              floating *s1, floating *s2, const double *h) noexcept nogil:
    """Chunk c of an update of n elements: UPDATE_CHUNK of them from c·UPDATE_CHUNK (fewer at
    the end)."""
    update_slice(rule, c * UPDATE_CHUNK, min(<Py_ssize_t>UPDATE_CHUNK, n - c * UPDATE_CHUNK), w, g, s1, s2, h)


cdef void _update(int rule, floating[::1] w, const floating[::1] g, floating[::1] s1, floating[::1] s2,
                  const double *h):
    """w and its state s1 (and s2; either may be None) updated by `rule` in chunks of
    UPDATE_CHUNK elements over the threads; h: the kernel's scalars (cpu_dispatch.h)."""
    cdef Py_ssize_t n = w.shape[0], c
    cdef floating *p1 = &s1[0] if s1 is not None and n else NULL
    cdef floating *p2 = &s2[0] if s2 is not None and n else NULL
    with nogil:
        for c in prange((n + UPDATE_CHUNK - 1) // UPDATE_CHUNK, num_threads=_nthreads_for(n), schedule="static"):
            update_chunk(rule, c, n, &w[0], &g[0], p1, p2, h)


cdef void _step(int rule, w, g, s1, s2, const double *h) except *:
    if w.dtype == F32:
        _update[float](rule, w, g, s1, s2, h)
    else:
        _update[double](rule, w, g, s1, s2, h)


cdef double sumsq_range(const floating *g, Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    cdef Py_ssize_t i
    cdef double s = 0
    for i in range(i0, i1):
        s += <double>g[i] * g[i]
    return s


cdef double _sumsq(const floating[::1] g) except? -1:
    cdef Py_ssize_t n = g.shape[0], c, nchunks = (n + NORM_CHUNK - 1) // NORM_CHUNK
    cdef double *partial
    cdef double total
    cdef int nt = _nthreads()
    if n == 0:
        return 0
    partial = <double *>pn_workspace(PN_WS_NORM, nchunks * sizeof(double))
    if partial == NULL:
        raise MemoryError("global_norm: out of memory")
    with nogil:
        for c in prange(nchunks, num_threads=nt, schedule="static"):
            partial[c] = sumsq_range(&g[0], c * NORM_CHUNK, min(n, (c + 1) * NORM_CHUNK))
        total = sum_in_order(partial, nchunks)
    return total


def sgd_step(w, g, v, double lr, double momentum=0.0, bint nesterov=False,
             double weight_decay=0.0, double grad_scale=1.0):
    """One SGD step in place on w (and velocity v; v may be None when momentum is 0)."""
    _check_hyper("sgd_step", lr=lr, momentum=momentum, weight_decay=weight_decay, grad_scale=grad_scale)
    if momentum != 0:
        _check_vectors("sgd_step", ["w", "g", "v"], [w, g, v])
    else:
        _check_vectors("sgd_step", ["w", "g"], [w, g])
        v = None  # no velocity when μ = 0
    cdef double h[5]
    h[:] = [lr, momentum, nesterov, weight_decay, grad_scale]   # pn_sgd's lr, mu, nesterov, wd, s
    _step(PN_SGD, w, g, v, None, h)


def adam_step(w, g, m, v, long t, double lr, double beta1=0.9, double beta2=0.999,
              double eps=1e-8, double weight_decay=0.0, bint decoupled=False, double grad_scale=1.0):
    """Step t (1, 2, …) of Adam (decoupled=False: L2 in the gradient) or AdamW, in place."""
    _check_hyper("adam_step", lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                 grad_scale=grad_scale)
    if t < 1:
        raise ValueError(f"adam_step: step t counts from 1, got {t}")
    _check_vectors("adam_step", ["w", "g", "m", "v"], [w, g, m, v])
    c1 = 1.0 / (1.0 - beta1 ** t)   # the bias corrections 1/(1−βᵗ); 1 − β formed in double
    c2 = 1.0 / (1.0 - beta2 ** t)   # (1 − float32(0.9999) is 1.7e-4 off 1e-4)
    cdef double h[11]
    h[:] = [lr, beta1, beta2, 1.0 - beta1, 1.0 - beta2, eps, weight_decay, decoupled, c1, c2, grad_scale]
    _step(PN_ADAM, w, g, m, v, h)


def rmsprop_step(w, g, v, double lr, double rho=0.9, double eps=1e-8, double weight_decay=0.0,
                 double grad_scale=1.0):
    """One RMSprop step in place on w and the running mean square v."""
    _check_hyper("rmsprop_step", lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, grad_scale=grad_scale)
    _check_vectors("rmsprop_step", ["w", "g", "v"], [w, g, v])
    cdef double h[6]
    h[:] = [lr, rho, 1.0 - rho, eps, weight_decay, grad_scale]
    _step(PN_RMSPROP, w, g, v, None, h)


def global_norm(g):
    """‖g‖₂ of a flat float vector, summed in float64 over fixed chunks (thread-count independent)."""
    _float_array("g", g, 1)
    if g.dtype == F32:
        return float(np.sqrt(_sumsq[float](g)))
    return float(np.sqrt(_sumsq[double](g)))
