# dense_chain.pxi — the compiled prediction chain: the forward pass of L dense layers
# in one call (DenseChain).
#
#   A₀ = X,   A_l = f_l(A_{l−1}·W_l + b_l)   for l = 1..L,   out = A_L
#   X: B×n₀, W_l: n_{l−1}×n_l, b_l: n_l, out: B×n_L, one float dtype
#
# Prediction runs the whole chain inside one nogil call: the per-layer Python
# calls (checks, buffer lookups) would otherwise cost more than a single
# sample's arithmetic. Each layer is one GEMM whose epilogue adds b_l and applies
# f_l in place; two work buffers take turns holding A_l (softmax needs whole rows
# and runs as a second pass). The buffers are the calling thread's workspace
# (runtime.h, up to CHAIN_WORKSPACE_MAX), reused from call to call, so one chain
# can serve several Python threads at once and a warm call allocates nothing.
# Threads and determinism are dense_layer's: the arithmetic is exactly
# dense_forward's, so the result is bitwise the same as running the layers one by
# one, on any number of threads.
# uses: dense (dense_layer), activations (_act_code), threads, checks.

from libc.stdlib cimport malloc, free

cdef enum:
    CHAIN_WORKSPACE_MAX = 8 << 20   # bytes of work buffers a thread keeps between calls


cdef class DenseChain:
    """The forward pass of L dense layers, A_l = f_l(A_{l−1}·W_l + b_l), in one call.

    Ws, bs: the layers' weights (n_{l−1} × n_l) and biases (n_l), one float dtype,
    C-contiguous; they are held, not copied, so later in-place updates are seen.
    acts: activation names, alphas: their parameters."""
    cdef list _arrays
    cdef int n_layers
    cdef Py_ssize_t *widths
    cdef void **W
    cdef void **b
    cdef int *act
    cdef double *alpha
    cdef object dtype
    cdef readonly Py_ssize_t widest
    cdef readonly Py_ssize_t n_in, n_out

    def __cinit__(self):
        self.widths = NULL
        self.W = self.b = NULL
        self.act = NULL
        self.alpha = NULL

    def __init__(self, Ws, bs, acts, alphas):
        cdef int l, L = len(Ws)
        if L == 0 or not (len(bs) == len(acts) == len(alphas) == L):
            raise ValueError(f"DenseChain: expected equal, non-zero numbers of Ws, bs, acts, alphas, "
                             f"got {len(Ws)}, {len(bs)}, {len(acts)}, {len(alphas)}")
        for l in range(L):
            _float_array(f"Ws[{l}]", Ws[l], 2)
            _float_array(f"bs[{l}]", bs[l], 1)
        _same_dtype("DenseChain", [f"Ws[{l}]" for l in range(L)] + [f"bs[{l}]" for l in range(L)],
                    list(Ws) + list(bs))
        for l in range(L):
            if l and Ws[l].shape[0] != Ws[l - 1].shape[1]:
                raise ValueError(f"DenseChain: Ws[{l}] has {Ws[l].shape[0]} rows but Ws[{l - 1}] "
                                 f"has {Ws[l - 1].shape[1]} columns")
            _shape(f"bs[{l}]", bs[l], (Ws[l].shape[1],))
        codes = [_act_code(a) for a in acts]
        self.n_layers = L
        self.widths = <Py_ssize_t *>malloc((L + 1) * sizeof(Py_ssize_t))
        self.W = <void **>malloc(L * sizeof(void *))
        self.b = <void **>malloc(L * sizeof(void *))
        self.act = <int *>malloc(L * sizeof(int))
        self.alpha = <double *>malloc(L * sizeof(double))
        if not (self.widths and self.W and self.b and self.act and self.alpha):
            raise MemoryError("DenseChain: out of memory")
        self.widths[0] = Ws[0].shape[0]
        for l in range(L):
            self.widths[l + 1] = Ws[l].shape[1]
            self.W[l] = cnp.PyArray_DATA(<cnp.ndarray>Ws[l])
            self.b[l] = cnp.PyArray_DATA(<cnp.ndarray>bs[l])
            self.act[l] = codes[l]
            self.alpha[l] = float(alphas[l])
        self._arrays = list(Ws) + list(bs)
        self.dtype = Ws[0].dtype
        self.n_in, self.n_out = self.widths[0], self.widths[L]
        self.widest = max([self.widths[l] for l in range(1, L)] or [1])

    def __dealloc__(self):
        free(self.widths)
        free(self.W)
        free(self.b)
        free(self.act)
        free(self.alpha)

    def forward(self, X, out):
        """out = A_L for the rows of X; X: (B, n_in), out: (B, n_out), the chain's dtype."""
        _float_array("X", X, 2)
        _float_array("out", out, 2, True)
        _same_dtype("DenseChain.forward", ["X", "out"], [X, out])
        if X.dtype != self.dtype:
            raise TypeError(f"DenseChain.forward: the layers are {self.dtype} but X is {X.dtype}")
        cdef Py_ssize_t B = X.shape[0]
        _shape("X", X, (B, self.n_in))
        _shape("out", out, (B, self.n_out))
        if B == 0:
            return out
        cdef bint f32 = self.dtype == F32
        cdef Py_ssize_t stride = B * self.widest if self.n_layers > 1 else 0
        cdef size_t nbytes = 2 * stride * (4 if f32 else 8)
        cdef void *x = cnp.PyArray_DATA(<cnp.ndarray>X)
        cdef void *o = cnp.PyArray_DATA(<cnp.ndarray>out)
        cdef void *w
        cdef int err
        if nbytes <= CHAIN_WORKSPACE_MAX:   # kept by this thread for its next calls
            w = pn_workspace(PN_WS_CHAIN, max(nbytes, 1))
        else:                               # a huge batch: its buffers go with the call
            big = np.empty(nbytes, dtype=np.uint8)
            w = cnp.PyArray_DATA(<cnp.ndarray>big)
        if w == NULL:
            raise MemoryError(f"DenseChain.forward: could not allocate work buffers for {B} rows")
        with nogil:
            if f32:
                err = _chain_forward(self, B, <const float *>x, <float *>o, <float *>w, stride)
            else:
                err = _chain_forward(self, B, <const double *>x, <double *>o, <double *>w, stride)
        if err:
            raise MemoryError("DenseChain.forward: could not allocate GEMM work buffers")
        return out


cdef int _chain_forward(DenseChain c, Py_ssize_t B, const floating *X, floating *out,
                        floating *work, Py_ssize_t stride) noexcept nogil:
    """A_l into work[l % 2] (the last into out), each layer in place (dense_layer).
    Returns 1 when GEMM buffers could not be allocated."""
    cdef Py_ssize_t l
    cdef int nt = _nthreads()
    cdef const floating *src = X
    cdef floating *dst
    for l in range(c.n_layers):
        dst = out if l == c.n_layers - 1 else work + (l % 2) * stride
        if dense_layer(B, c.widths[l], c.widths[l + 1], src, <const floating *>c.W[l],
                       <const floating *>c.b[l], c.act[l], <floating>c.alpha[l], dst, dst, nt):
            return 1
        src = dst
    return 0
