# inference_chain.pxi — the compiled prediction pass of a stack of dense, convolution and
# pooling layers in one call (InferenceChain).
#
#   A₀ = X,   A_l = step_l(A_{l−1})   for l = 1..L,   out = A_L,   each step one of
#     dense  A = f(A_{l−1}·W + b)                  (dense_layer: one GEMM, fused epilogue)
#     conv   A = f(conv(A_{l−1}, W) + b)           (conv_forward: per-sample implicit GEMM)
#     pool   A = maxpool / avgpool(A_{l−1})        (_pool_forward, no argmax kept)
#     conv then max pool, f the identity or ReLU:  A = f(maxpool(conv(A_{l−1}, W)) + b)
#            the same bits (pools_first), the epilogue on a window's share of the values
#   X: B × n₀, out: B × n_L, rows of images in NCHW order, one float dtype
#
# Two ways to spread B rows over nt threads, chosen by B alone (never changing a result:
# every output element is computed from its own sample's row by the same arithmetic):
#   B ≥ 2·nt  rows in chunks of `chunk` (a function of the widths), a chunk per task: each
#             thread runs the stack serially on its chunk, the chunk's activations in its
#             own two buffers (runtime.h workspace), small enough to stay in its L2; the
#             dense steps after the last conv/pool step then run on all rows together;
#   B < 2·nt  the stack step by step on all B rows, each step on nt threads (one image:
#             a convolution splits its positions).
# The per-layer Python calls this replaces cost more than a single image's arithmetic, and
# a batch's activations never leave the cache. W of each convolution is packed once per call.
# Determinism: the kernels' own (dense.pxi, conv.pxi, pool.pxi): the result is bitwise that
# of running the layers one by one, on any number of threads.
# uses: dense (dense_layer), conv (ConvPlan, conv_forward, conv_prepack), pool (PoolPlan,
# _pool_forward), activations (_act_code), threads, checks.

from libc.stdlib cimport calloc, free, malloc

cdef enum:
    STEP_DENSE = 0
    STEP_CONV = 1
    STEP_POOL = 2
    CHAIN_KEEP_BYTES = 8 << 20   # a thread keeps an all-rows buffer up to this size between calls

cdef Py_ssize_t _chain_chunk_bytes = 1 << 20   # a chunk's two activation buffers (measured best
                                               # of 256 KiB..4 MiB for LeNet, within 10 %);
                                               # _set_chain_chunk_bytes (benchmarks)


def _set_chain_chunk_bytes(Py_ssize_t n):
    """Set the bytes of a chunk's activation buffers (≥ 1); returns the previous value.
    For benchmarks: results never depend on it."""
    global _chain_chunk_bytes
    if n < 1:
        raise ValueError(f"_set_chain_chunk_bytes: n must be >= 1, got {n}")
    old, _chain_chunk_bytes = _chain_chunk_bytes, n
    return old


cdef struct ChainStep:
    int kind
    Py_ssize_t n_in, n_out
    const void *W         # dense: n_in × n_out; conv: the packed weights (conv_prepack)
    const void *b
    int act
    double alpha
    const ConvGeom *conv
    const PoolGeom *pool
    int pool_kind
    Py_ssize_t planes     # pool: channels per sample


cdef class InferenceChain:
    """The forward pass of a stack of steps in one call (see inference_chain.pxi):

        ("dense", W, b, activation, alpha)          W: (n_in, n_out), b: (n_out,)
        ("conv", plan, W, b, activation, alpha)     plan: ConvPlan, W: (Cout, k), b: (Cout,)
        ("pool", plan)                              plan: PoolPlan

    Arrays are held, not copied (later in-place updates are seen); one float dtype, the
    plans' too; each step's width is the next one's input. Raises TypeError/ValueError
    naming the step that does not fit."""
    cdef list _held
    cdef ChainStep *steps
    cdef int n_steps, head, typenum
    cdef object dtype
    cdef readonly Py_ssize_t n_in, n_out
    cdef Py_ssize_t widest, widest_tail    # the widest activation of all steps, of the dense tail

    def __cinit__(self):
        self.steps = NULL

    def __init__(self, steps):
        steps = list(steps)
        if not steps:
            raise ValueError("InferenceChain: expected at least one step, got none")
        self.steps = <ChainStep *>calloc(len(steps), sizeof(ChainStep))
        if self.steps == NULL:
            raise MemoryError("InferenceChain: out of memory")
        self._held, self.n_steps = [], len(steps)
        width, named = None, []
        for l, step in enumerate(steps):
            n_in, n_out = self._set(l, tuple(step), named)
            if width is not None and n_in != width:
                what = f"step {l} W has {n_in} rows" if step[0] == "dense" else f"step {l} ({step[0]}) takes {n_in} values"
                raise ValueError(f"InferenceChain: {what} but step {l - 1} gives {width} values per row")
            width = n_out
        self.dtype = _same_dtype("InferenceChain", [n for n, _ in named], [a for _, a in named])
        self.typenum = self.dtype.num
        self.n_in, self.n_out = self.steps[0].n_in, width
        self.widest = max([self.steps[l].n_out for l in range(self.n_steps - 1)] + [1])
        self.head = max([l + 1 for l in range(self.n_steps) if self.steps[l].kind != STEP_DENSE] + [0])
        self.widest_tail = max([self.steps[l].n_out for l in range(self.head, self.n_steps - 1)] + [1])

    cdef tuple _set(self, int l, tuple step, list named):
        """Fill steps[l] from one step tuple; returns its (n_in, n_out) and adds its arrays
        and plan, by name, to `named` (their dtypes are checked together)."""
        cdef ChainStep *st = &self.steps[l]
        kind = step[0] if step else None
        where = f"InferenceChain: step {l} ({kind})"
        if kind == "dense" and len(step) == 5:
            _, W, b, act, alpha = step
            _float_array(f"step {l} W", W, 2)
            _float_array(f"step {l} b", b, 1)
            _shape(f"step {l} b", b, (W.shape[1],))
            st.kind, st.n_in, st.n_out = STEP_DENSE, W.shape[0], W.shape[1]
            arrays, own = [W, b], [("W", W), ("b", b)]
        elif kind == "conv" and len(step) == 6 and isinstance(step[1], ConvPlan):
            _, plan, W, b, act, alpha = step
            cp = <ConvPlan>plan
            _float_array(f"step {l} W", W, 2)
            _float_array(f"step {l} b", b, 1)
            _shape(f"step {l} W", W, (cp.out_channels, cp.k))
            _shape(f"step {l} b", b, (cp.out_channels,))
            if _act_code(act) == ACT_SOFTMAX:
                raise ValueError(f"{where}: activation 'softmax' is refused for a convolution")
            st.kind, st.n_in, st.n_out, st.conv = STEP_CONV, cp.in_features, cp.out_features, &cp.g
            arrays, own = [W, b], [("plan", plan), ("W", W), ("b", b)]
        elif kind == "pool" and len(step) == 2 and isinstance(step[1], PoolPlan):
            pp = <PoolPlan>step[1]
            st.kind, st.n_in, st.n_out, st.pool = STEP_POOL, pp.in_features, pp.out_features, &pp.g
            st.pool_kind, st.planes = pp._kind, pp.C
            arrays, own, act, alpha = [], [("plan", pp)], "identity", 0.0
        else:
            raise ValueError(f"{where}: expected ('dense', W, b, activation, alpha), ('conv', ConvPlan, W, "
                             f"b, activation, alpha) or ('pool', PoolPlan), got {step!r:.80}")
        named += [(f"step {l} {name}", a) for name, a in own]
        st.act, st.alpha = _act_code(act), float(alpha)
        if arrays:
            st.W = cnp.PyArray_DATA(<cnp.ndarray>arrays[0])
            st.b = cnp.PyArray_DATA(<cnp.ndarray>arrays[1])
        self._held.append(step)
        return st.n_in, st.n_out

    def __dealloc__(self):
        free(self.steps)

    def forward(self, X, out):
        """out = A_L for the rows of X; X: (B, n_in), out: (B, n_out), the chain's dtype."""
        _float_array("X", X, 2)
        _float_array("out", out, 2, True)
        if cnp.PyArray_TYPE(<cnp.ndarray>X) != self.typenum:
            raise TypeError(f"InferenceChain.forward: the steps are {self.dtype} but X is {X.dtype}")
        if cnp.PyArray_TYPE(<cnp.ndarray>out) != self.typenum:
            raise TypeError(f"InferenceChain.forward: the steps are {self.dtype} but out is {out.dtype}")
        cdef Py_ssize_t B = cnp.PyArray_DIM(<cnp.ndarray>X, 0)
        if cnp.PyArray_DIM(<cnp.ndarray>X, 1) != self.n_in:
            _shape("X", X, (B, self.n_in))
        if cnp.PyArray_DIM(<cnp.ndarray>out, 0) != B or cnp.PyArray_DIM(<cnp.ndarray>out, 1) != self.n_out:
            _shape("out", out, (B, self.n_out))
        if B == 0:
            return out
        cdef bint f32 = self.typenum == cnp.NPY_FLOAT32
        cdef int l, nt = _nthreads(), err
        for l in range(self.n_steps):    # W of each convolution, packed for this call
            if self.steps[l].kind == STEP_CONV:
                plan, W = self._held[l][1], self._held[l][2]
                pw = (<ConvPlan>plan)._packed(False)
                with nogil:
                    if f32:
                        conv_prepack(self.steps[l].conv, <const float *>cnp.PyArray_DATA(<cnp.ndarray>W),
                                     <float *>pw)
                    else:
                        conv_prepack(self.steps[l].conv, <const double *>cnp.PyArray_DATA(<cnp.ndarray>W),
                                     <double *>pw)
                self.steps[l].W = pw
        cdef Py_ssize_t size = 4 if f32 else 8
        cdef Py_ssize_t chunk = max(1, _chain_chunk_bytes // (2 * self.widest * size))
        cdef void *x = cnp.PyArray_DATA(<cnp.ndarray>X)
        cdef void *o = cnp.PyArray_DATA(<cnp.ndarray>out)
        with nogil:
            if f32:
                err = _chain_run(self.steps, self.n_steps, self.head, B, <const float *>x, <float *>o,
                                 self.widest, self.widest_tail, chunk, nt)
            else:
                err = _chain_run(self.steps, self.n_steps, self.head, B, <const double *>x, <double *>o,
                                 self.widest, self.widest_tail, chunk, nt)
        if err:
            raise MemoryError(f"InferenceChain.forward: could not allocate work buffers for {B} rows")
        return out


cdef void *rows_buffer(int slot, size_t nbytes, void **owned) noexcept nogil:
    """A buffer for all of a call's rows: the calling thread's kept one (runtime.h) up to
    CHAIN_KEEP_BYTES, else one made for this call alone (*owned: the caller frees it), so a
    huge batch never leaves its size held by the thread."""
    if nbytes <= CHAIN_KEEP_BYTES:
        owned[0] = NULL
        return pn_workspace(slot, nbytes)
    owned[0] = malloc(nbytes)
    return owned[0]


cdef int _chain_run(const ChainStep *steps, int L, int head, Py_ssize_t B, const floating *X,
                    floating *out, Py_ssize_t widest, Py_ssize_t widest_tail, Py_ssize_t chunk,
                    int nt) noexcept nogil:
    """Chunks of rows a task each (B ≥ 2·nt), else every step on all rows with nt threads.
    In chunks, a tail of dense steps after the last conv/pool step (steps head..L−1) waits
    for all rows (held in the calling thread's buffer) and runs on all of them with nt
    threads: a chunk of a few rows would stream each W for a few products.
    Returns 1 when a work buffer could not be allocated."""
    cdef Py_ssize_t c, r0, n, nchunks, n_in = steps[0].n_in, width
    cdef int err = 0, chunked = L
    cdef floating *work
    cdef floating *dst = out
    cdef void *own_rows = NULL
    cdef void *own_work = NULL
    if B < 2 * nt:
        chunk = B
    if chunk >= B:
        work = <floating *>pn_workspace(PN_WS_CHAIN, 2 * B * widest * sizeof(floating))
        if work == NULL:
            return 1
        return _chain_rows(steps, L, B, X, out, work, B * widest, nt)
    nchunks = (B + chunk - 1) // chunk                # rounded up to a multiple of nt and made
    nchunks = (nchunks + nt - 1) // nt * nt           # equal: every thread gets the same rows
    chunk = (B + nchunks - 1) // nchunks
    if 0 < head < L:
        chunked = head
        dst = <floating *>rows_buffer(PN_WS_CHAIN_ROWS, B * steps[head - 1].n_out * sizeof(floating), &own_rows)
        if dst == NULL:
            return 1
    width = steps[chunked - 1].n_out
    for c in prange(nchunks, num_threads=nt, schedule="dynamic"):
        r0 = c * chunk
        n = min(chunk, B - r0)                   # ≤ 0 for a last chunk past the rows
        work = <floating *>pn_workspace(PN_WS_CHAIN, 2 * chunk * widest * sizeof(floating))
        if work == NULL:
            err += 1
        elif n > 0:
            err += _chain_rows(steps, chunked, n, X + r0 * n_in, dst + r0 * width, work, chunk * widest, 1)
    if not err and chunked < L:
        work = <floating *>rows_buffer(PN_WS_CHAIN, 2 * B * widest_tail * sizeof(floating), &own_work)
        err = 1 if work == NULL else _chain_rows(steps + head, L - head, B, dst, out, work,
                                                 B * widest_tail, nt)
    free(own_rows)
    free(own_work)
    return 1 if err else 0


cdef int _chain_rows(const ChainStep *steps, int L, Py_ssize_t B, const floating *X, floating *out,
                     floating *work, Py_ssize_t stride, int nt) noexcept nogil:
    """A_l of B rows into work[l % 2] (the last into out), each step on nt threads.
    Returns 1 when a work buffer could not be allocated."""
    cdef int l
    cdef const ChainStep *st
    cdef const ChainStep *deferred = NULL    # a convolution whose b and f wait for the pooling
    cdef const floating *src = X
    cdef floating *dst
    for l in range(L):
        st = &steps[l]
        dst = out if l == L - 1 else work + (l % 2) * stride
        if st.kind == STEP_DENSE:
            if dense_layer(B, st.n_in, st.n_out, src, <const floating *>st.W, <const floating *>st.b,
                           st.act, <floating>st.alpha, dst, dst, nt):
                return 1
        elif st.kind == STEP_CONV:
            deferred = st if l + 1 < L and pools_first(st, &steps[l + 1], <const floating *>st.b) else NULL
            if conv_forward(st.conv, B, src, <const floating *>st.W,
                            <const floating *>st.b if deferred == NULL else NULL,
                            st.act if deferred == NULL else ACT_IDENTITY, <floating>st.alpha, dst,
                            dst if deferred == NULL and st.act != ACT_IDENTITY else NULL, nt):
                return 1
        else:
            _pool_forward(st.pool_kind, src, dst, <int32_t *>NULL, B * st.planes, st.pool, nt)
            if deferred != NULL:
                pooled_epilogue(deferred, B, st.planes, st.n_out // st.planes, dst)
                deferred = NULL
        src = dst
    return 0


cdef bint pools_first(const ChainStep *conv, const ChainStep *pool, const floating *b) noexcept nogil:
    """Whether a max pooling may come before the convolution's bias and f (b: its bias):
        maxpool(f(z + b)) = f(maxpool(z) + b)   bit for bit
    when f is the identity or ReLU and every b is finite: z ↦ f(fl(z + b)) is then
    non-decreasing, so the window's first maximum maps to the first maximum of f(z + b)
    (equal values have equal bits: a zero sum is +0 unless z = b = −0, ReLU's zero is +0),
    and a NaN is NaN on both sides at the same position (the first NaN wins, its bits
    kept). Leaky ReLU is not: α·z can round a tiny negative z to −0 below a later +0.
    The epilogue then reads 1/(window size) of the values."""
    cdef Py_ssize_t o
    if pool.kind != STEP_POOL or pool.pool_kind != POOL_MAX or (conv.act != ACT_IDENTITY and conv.act != ACT_RELU):
        return 0
    for o in range(conv.conv.Cout):
        if b[o] - b[o] != 0:                 # inf − inf and NaN − NaN are NaN
            return 0
    return 1


cdef void pooled_epilogue(const ChainStep *conv, Py_ssize_t B, Py_ssize_t planes, Py_ssize_t n,
                          floating *y) noexcept nogil:
    """y = f(y + b) for B samples of `planes` pooled planes of n values, b one per plane
    (the convolution's epilogue, deferred by pools_first)."""
    cdef Epilogue ep
    cdef Py_ssize_t s
    ep.bias, ep.bias_rows, ep.act, ep.alpha, ep.ldo = conv.b, True, conv.act, conv.alpha, n
    ep.Zf = ep.Af = ep.W = NULL
    for s in range(B):
        ep.out = y + s * planes * n if conv.act != ACT_IDENTITY else NULL
        epilogue_tile(&ep, y + s * planes * n, n, planes, 0, 0, n)
