# conv.pxi — the 2-d convolution (cross-correlation, as PyTorch's Conv2d), forward and backward.
#
#   Layout: an image batch is a C-contiguous B × (C·H·W) matrix, each row one sample in
#   C, H, W order (NCHW flattened); weights W: Cout × K, K = C·kh·kw (PyTorch's
#   (Cout, C, kh, kw) reshaped); bias b: Cout; Z, A: B × (Cout·P), P = Ho·Wo.
#
#   Ho = ⌊(H + pt + pb − dh·(kh − 1) − 1) / sh⌋ + 1     Wo likewise with W, pl, pr, dw, kw, sw
#
#   forward   Z[s, o, p] = Σ_{c,i,j} W[o, (c,i,j)] · Xpad[s, c, ho·sh + i·dh, wo·sw + j·dw] + b[o]
#             A = f(Z)                                  (p = ho·Wo + wo; Xpad: X padded by zeros)
#   backward  (δ = ∂L/∂Z, B × Cout·P)
#             dW = Σ_s δ_s · cols_sᵀ       db[o] = Σ_{s,p} δ[s, o, p]       dX = col2im(Wᵀ · δ_s)
#
# As GEMMs (the project's gemm, gemm.pxi), over a chunk of nb samples at a time, q = s·P + p:
#   im2col   cols[(c,i,j), q] = Xpad[s, c, ho·sh + i·dh, wo·sw + j·dw]          K × nb·P
#   forward  Y = W · cols                                 Cout × nb·P   (one GEMM, gemm's threads)
#            Z[s, o, p] = Y[o, q] + b[o],  A = f(Z)       one pass that reorders Y into NCHW and
#                                                         applies bias and f while a row is in cache
#   backward D[q, o] = δ[s, o, p]                         nb·P × Cout   (δ reordered, cheap)
#            dWᵀ += cols · D                              K × Cout      (one GEMM; β = 1 after the
#                                                         first chunk) and dW = (dWᵀ)ᵀ at the end
#            dcols = Wᵀ · Dᵀ                              K × nb·P      (written over cols)
#            dX[s, c, y, x] = Σ dcols[(c,i,j), q] over the (i, j, ho, wo) that read (y, x)
#
# Why im2col into an owned buffer and one GEMM per chunk (not per sample, not implicit GEMM):
# the LeNet shapes have few output channels (Cout = 32, 64) and few positions (P = 576, 64),
# so a GEMM per sample is small and repacks W each time, while one GEMM over the chunk's
# nb·P columns is large enough for gemm's own thread grid and packs W once per thread. The
# unfolded columns cost K·nb·P elements written and read once, against Cout·K·nb·P
# multiply-adds: 1/Cout of the work (bench/conv.py measures the whole). A chunk holds at most
# _conv_cols_max elements of columns (a function of the sizes alone; 1 MiB of float32), so the
# columns im2col writes are still in cache when the GEMM packs them, and a large prediction
# batch never unfolds whole; the plan's buffers grow to the largest chunk seen and are reused.
# Measured on the LeNet shapes (1 thread, batch 64): chunks of 2^18 elements against the
# whole batch unfolded at once (2^22): forward 1.8x (conv1) and 1.8x (conv2) faster,
# backward 1.9x and 1.5x.
#
# The output layout (Cout × nb·P from the GEMM, B × Cout·P wanted) is why bias and f are
# applied in the reordering pass rather than in the GEMM's epilogue: each element of Z and
# A is still written exactly once. dW is computed transposed (K × Cout) so that both GEMM
# operands are read along rows (no transposing pack of the K × nb·P columns).
#
# Threads and determinism: every product is gemm's (each element summed over its K in one
# fixed order on any grid); dW's sum over q = (s, p) is that GEMM's K dimension, chunks added
# in order 0, 1, …; db[o]'s task sums s = 0..B−1, p = 0..P−1 in order; im2col, the
# reordering passes and col2im write each element from one task (col2im's task owns one
# (s, c) plane and adds (i, j, ho, wo) in order). So results are bitwise the same on any
# number of threads.
# uses: gemm (gemm), activations (act_forward, _act_code, ACT_*), threads, checks.

cdef Py_ssize_t _conv_cols_max = 1 << 18   # elements of unfolded columns per chunk (1 MiB
                                           # float32); _set_conv_cols_max changes it (benchmarks)


def _set_conv_cols_max(Py_ssize_t n):
    """Set the most elements of unfolded columns a ConvPlan holds per chunk (≥ 1); returns
    the previous value. For benchmarks: forward results do not depend on it, dW's rounding does."""
    global _conv_cols_max
    if n < 1:
        raise ValueError(f"_set_conv_cols_max: n must be >= 1, got {n}")
    old, _conv_cols_max = _conv_cols_max, n
    return old


cdef struct ConvGeom:
    Py_ssize_t C, H, W, Cout, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo, P, K
    const int64_t *rows    # rows[2i], rows[2i+1]: the output rows [lo, hi) that kernel row i
                           # reads inside the image (not in the padding); cols likewise for j
    const int64_t *cols


cdef inline Py_ssize_t floor_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """⌊a / b⌋ for b > 0 and any sign of a (C's division truncates toward zero)."""
    cdef Py_ssize_t q = a // b
    return q - 1 if (a % b != 0 and a < 0) else q


cdef inline Py_ssize_t out_lo(Py_ssize_t off, Py_ssize_t stride) noexcept nogil:
    """The first output index o ≥ 0 whose input index o·stride + off is ≥ 0."""
    return max(<Py_ssize_t>0, -floor_div(off, stride))


cdef inline Py_ssize_t out_hi(Py_ssize_t off, Py_ssize_t stride, Py_ssize_t n,
                              Py_ssize_t nout) noexcept nogil:
    """One past the last output index o < nout whose input index o·stride + off is < n
    (never below out_lo: an empty range)."""
    return max(out_lo(off, stride), min(nout, floor_div(n - 1 - off, stride) + 1))


cdef void im2col(const ConvGeom *g, const floating *X, Py_ssize_t nb, floating *cols,
                 int nt) noexcept nogil:
    """cols[(c,i,j), s·P + ho·Wo + wo] = Xpad[s, c, ho·sh + i·dh, wo·sw + j·dw] for s < nb
    (zero where the position falls in the padding). X: nb × C·H·W, cols: K × nb·P.
    A task writes one row (c,i,j) of cols, sample after sample."""
    cdef Py_ssize_t k, s, c, i, j, yoff, xoff, ylo, yhi, xlo, xhi
    cdef Py_ssize_t N = nb * g.P, HW = g.H * g.W, khw = g.kh * g.kw
    cdef const floating *src
    for k in prange(g.K, num_threads=nt, schedule="static"):
        c = k // khw
        i = k // g.kw % g.kh
        j = k % g.kw
        yoff = i * g.dh - g.pt
        xoff = j * g.dw - g.pl
        ylo, yhi = g.rows[2 * i], g.rows[2 * i + 1]
        xlo, xhi = g.cols[2 * j], g.cols[2 * j + 1]
        for s in range(nb):
            src = X + (s * g.C + c) * HW
            im2col_plane(g, src, cols + k * N + s * g.P, yoff, xoff, ylo, yhi, xlo, xhi)


cdef inline void im2col_plane(const ConvGeom *g, const floating *src, floating *dst,
                              Py_ssize_t yoff, Py_ssize_t xoff, Py_ssize_t ylo, Py_ssize_t yhi,
                              Py_ssize_t xlo, Py_ssize_t xhi) noexcept nogil:
    """dst[ho·Wo + wo] = src[(ho·sh + yoff)·W + wo·sw + xoff] inside [ylo, yhi) × [xlo, xhi),
    0 outside: one kernel tap (i, j) of one channel plane of one sample."""
    cdef Py_ssize_t ho, wo
    cdef const floating *srow
    cdef floating *row
    for ho in range(g.Ho):
        row = dst + ho * g.Wo
        if ho < ylo or ho >= yhi:
            for wo in range(g.Wo):
                row[wo] = 0
        else:
            srow = src + (ho * g.sh + yoff) * g.W + xoff
            for wo in range(min(xlo, g.Wo)):
                row[wo] = 0
            if g.sw == 1:
                for wo in range(xlo, xhi):
                    row[wo] = srow[wo]
            else:
                for wo in range(xlo, xhi):
                    row[wo] = srow[wo * g.sw]
            for wo in range(xhi, g.Wo):
                row[wo] = 0


cdef void col2im(const ConvGeom *g, const floating *dcols, Py_ssize_t nb, floating *dX,
                 int nt) noexcept nogil:
    """dX[s, c, y, x] = Σ dcols[(c,i,j), s·P + ho·Wo + wo] over the (i, j, ho, wo) with
    y = ho·sh + i·dh − pt, x = wo·sw + j·dw − pl (the adjoint of im2col). dcols: K × nb·P,
    dX: nb × C·H·W, overwritten. A task owns one (s, c) plane and adds in a fixed order."""
    cdef Py_ssize_t t, s, c, i, j, k, ho, wo, yoff, xoff, ylo, yhi, xlo, xhi
    cdef Py_ssize_t N = nb * g.P, HW = g.H * g.W
    cdef floating *plane
    cdef floating *prow
    cdef const floating *src
    cdef const floating *srow
    for t in prange(nb * g.C, num_threads=nt, schedule="static"):
        s = t // g.C
        c = t % g.C
        plane = dX + s * g.C * HW + c * HW
        for k in range(HW):
            plane[k] = 0
        for i in range(g.kh):
            yoff = i * g.dh - g.pt
            ylo, yhi = g.rows[2 * i], g.rows[2 * i + 1]
            for j in range(g.kw):
                xoff = j * g.dw - g.pl
                xlo, xhi = g.cols[2 * j], g.cols[2 * j + 1]
                src = dcols + ((c * g.kh + i) * g.kw + j) * N + s * g.P
                for ho in range(ylo, yhi):
                    prow = plane + (ho * g.sh + yoff) * g.W + xoff
                    srow = src + ho * g.Wo
                    if g.sw == 1:
                        for wo in range(xlo, xhi):
                            prow[wo] += srow[wo]
                    else:
                        for wo in range(xlo, xhi):
                            prow[wo * g.sw] += srow[wo]


cdef void bias_act_nchw(const ConvGeom *g, const floating *Y, Py_ssize_t nb, const floating *b,
                        int act, floating alpha, floating *Z, floating *A, int nt) noexcept nogil:
    """Z[s, o, p] = Y[o, s·P + p] + b[o] and A = f(Z) (A NULL: Z only; b NULL: no bias).
    Y: Cout × nb·P, Z, A: nb × Cout·P. A task does one (s, o) row of P."""
    cdef Py_ssize_t t, s, o, p, N = nb * g.P
    cdef floating *z
    cdef const floating *y
    cdef floating bo
    for t in prange(nb * g.Cout, num_threads=nt, schedule="static"):
        s = t // g.Cout
        o = t % g.Cout
        z = Z + t * g.P
        y = Y + o * N + s * g.P
        if b != NULL:
            bo = b[o]
            for p in range(g.P):
                z[p] = y[p] + bo
        else:
            for p in range(g.P):
                z[p] = y[p]
        if A != NULL:
            act_forward(act, alpha, z, A + t * g.P, g.P)


cdef void delta_rows(const ConvGeom *g, const floating *delta, Py_ssize_t nb, floating *D,
                     int nt) noexcept nogil:
    """D[s·P + p, o] = δ[s, o, p]: δ (nb × Cout·P) as an nb·P × Cout matrix. A task per sample."""
    cdef Py_ssize_t s, o, p
    cdef const floating *d
    cdef floating *r
    for s in prange(nb, num_threads=nt, schedule="static"):
        d = delta + s * g.Cout * g.P
        r = D + s * g.P * g.Cout
        for o in range(g.Cout):
            for p in range(g.P):
                r[p * g.Cout + o] = d[o * g.P + p]


cdef void conv_bias_grad(const ConvGeom *g, const floating *delta, Py_ssize_t B, floating *db,
                         int nt) noexcept nogil:
    """db[o] = Σ_{s,p} δ[s, o, p], s = 0..B−1 and p = 0..P−1 in order (one task per o)."""
    cdef Py_ssize_t o, s, p
    cdef floating acc
    cdef const floating *d
    for o in prange(g.Cout, num_threads=nt, schedule="static"):
        acc = 0
        for s in range(B):
            d = delta + (s * g.Cout + o) * g.P
            for p in range(g.P):
                acc = acc + d[p]
        db[o] = acc


cdef void transpose(const floating *S, Py_ssize_t rows, Py_ssize_t cols, floating *T) noexcept nogil:
    """T[j, i] = S[i, j]; S: rows × cols, T: cols × rows."""
    cdef Py_ssize_t i, j
    for i in range(rows):
        for j in range(cols):
            T[j * rows + i] = S[i * cols + j]


cdef int conv_forward(const ConvGeom *g, Py_ssize_t B, Py_ssize_t chunk, const floating *X,
                      const floating *W, const floating *b, int act, floating alpha, floating *Z,
                      floating *A, floating *cols, floating *Y) noexcept nogil:
    """Z, A of B samples, `chunk` at a time (cols: K × chunk·P, Y: Cout × chunk·P).
    Returns 1 when gemm's buffers could not be allocated."""
    cdef Py_ssize_t q, s0, nb, in_f = g.C * g.H * g.W, out_f = g.Cout * g.P
    cdef int nt = _nthreads()
    for q in range((B + chunk - 1) // chunk):
        s0 = q * chunk
        nb = min(chunk, B - s0)
        im2col(g, X + s0 * in_f, nb, cols, _nthreads_for(g.K * nb * g.P))
        if gemm(False, False, g.Cout, nb * g.P, g.K, <floating>1, W, g.K, cols, nb * g.P,
                <floating>0, Y, nb * g.P, <const floating *>NULL, ACT_IDENTITY, 0,
                <floating *>NULL, 0, nt):
            return 1
        bias_act_nchw(g, Y, nb, b, act, alpha, Z + s0 * out_f,
                      A + s0 * out_f if A != NULL else NULL, _nthreads_for(nb * out_f))
    return 0


cdef int conv_backward(const ConvGeom *g, Py_ssize_t B, Py_ssize_t chunk, const floating *X,
                       const floating *W, const floating *delta, floating *dW, floating *db,
                       floating *dX, floating *cols, floating *D, floating *dWT) noexcept nogil:
    """dW, db (if not NULL) and dX (if not NULL) of B samples, `chunk` at a time
    (cols: K × chunk·P, D: chunk·P × Cout, dWT: K × Cout). Returns 1 when gemm's buffers
    could not be allocated."""
    cdef Py_ssize_t q, s0, nb, in_f = g.C * g.H * g.W, out_f = g.Cout * g.P
    cdef int nt = _nthreads()
    if db != NULL:
        conv_bias_grad(g, delta, B, db, _nthreads_for(B * out_f))
    for q in range((B + chunk - 1) // chunk):
        s0 = q * chunk
        nb = min(chunk, B - s0)
        im2col(g, X + s0 * in_f, nb, cols, _nthreads_for(g.K * nb * g.P))
        delta_rows(g, delta + s0 * out_f, nb, D, _nthreads_for(nb * out_f))
        if gemm(False, False, g.K, g.Cout, nb * g.P, <floating>1, cols, nb * g.P, D, g.Cout,
                <floating>(0 if s0 == 0 else 1), dWT, g.Cout, <const floating *>NULL,
                ACT_IDENTITY, 0, <floating *>NULL, 0, nt):
            return 1
        if dX != NULL:
            if gemm(True, True, g.K, nb * g.P, g.Cout, <floating>1, W, g.K, D, g.Cout,
                    <floating>0, cols, nb * g.P, <const floating *>NULL, ACT_IDENTITY, 0,
                    <floating *>NULL, 0, nt):
                return 1
            col2im(g, cols, nb, dX + s0 * in_f, _nthreads_for(g.K * nb * g.P))
    transpose(dWT, g.K, g.Cout, dW)
    return 0


cdef tuple _conv_pair(str name, object v):
    """An int n → (n, n); a pair of ints → itself. Refuses anything else."""
    t = (v, v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else v
    if (not isinstance(t, (tuple, list)) or len(t) != 2
            or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in t)):
        raise TypeError(f"ConvPlan: {name} must be an int or a pair of ints, got {v!r}")
    return (int(t[0]), int(t[1]))


cdef tuple _conv_padding(object v):
    """n → (n, n, n, n); (ph, pw) → (ph, pw, ph, pw); (pt, pl, pb, pr) → itself."""
    if isinstance(v, (tuple, list)) and len(v) == 4:
        if not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in v):
            raise TypeError(f"ConvPlan: padding must hold ints, got {v!r}")
        return tuple(int(x) for x in v)
    ph, pw = _conv_pair("padding", v)
    return (ph, pw, ph, pw)


cdef class ConvPlan:
    """A 2-d convolution of fixed geometry: its shapes, its compiled forward and backward,
    and the work buffers they reuse from batch to batch.

    forward   Z[s, o, p] = Σ_{c,i,j} W[o, c,i,j] · Xpad[s, c, ho·sh + i·dh, wo·sw + j·dw] + b[o],
              A = f(Z)     (p = ho·Wo + wo; Xpad is X with pt, pl, pb, pr rows/columns of zeros)
    backward  dW = Σ_s δ_s · cols_sᵀ,  db[o] = Σ_{s,p} δ[s, o, p],  dX = col2im(Wᵀ · δ_s)

    Images are rows of a C-contiguous (B, C·H·W) array in C, H, W order (NCHW flattened);
    W is (out_channels, C·kh·kw) (PyTorch's (Cout, C, kh, kw) reshaped), b (out_channels,).

    Parameters
    ----------
    C, H, W : int
        Input channels, height and width (≥ 1).
    out_channels : int
        Output channels Cout (≥ 1).
    kernel : int or (kh, kw)
        Kernel height and width (≥ 1).
    stride : int or (sh, sw), default 1
        Steps between output positions (≥ 1).
    padding : int, (ph, pw) or (pt, pl, pb, pr), default 0
        Zeros added on top, left, bottom, right (≥ 0). "same" with an even kernel pads the
        extra row/column at the bottom/right, as PyTorch does.
    dilation : int or (dh, dw), default 1
        Spacing between kernel taps (≥ 1).
    dtype : float32 or float64, default float32
        The dtype of every array passed to forward and backward.

    Attributes
    ----------
    out_h, out_w : int
        Ho = ⌊(H + pt + pb − dh·(kh − 1) − 1) / sh⌋ + 1, and Wo likewise.
    in_features : int
        C·H·W.
    out_features : int
        out_channels·Ho·Wo.
    k : int
        C·kh·kw, the columns of W.
    work_elements : int
        Elements of work buffers held now (they grow to the largest batch chunk seen).

    Raises
    ------
    ValueError
        A size that is not positive, a negative padding, or an output of size < 1.
    TypeError
        A size that is not an int, or a dtype other than float32/float64.
    """
    cdef ConvGeom g
    cdef readonly Py_ssize_t C, H, W, out_channels, out_h, out_w, in_features, out_features, k
    cdef readonly tuple kernel, stride, padding, dilation
    cdef readonly object dtype
    cdef object _cols, _tmp, _dwt, _bounds

    def __init__(self, C, H, W, out_channels, kernel=(1, 1), stride=(1, 1), padding=(0, 0, 0, 0),
                 dilation=(1, 1), dtype=np.float32):
        cdef ConvGeom *g
        sizes = {"C": C, "H": H, "W": W, "out_channels": out_channels}
        for name, v in sizes.items():
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"ConvPlan: {name} must be an int, got {v!r}")
        kh, kw = _conv_pair("kernel", kernel)
        sh, sw = _conv_pair("stride", stride)
        dh, dw = _conv_pair("dilation", dilation)
        pt, pl, pb, pr = _conv_padding(padding)
        for name, v in (*sizes.items(), ("kernel height", kh), ("kernel width", kw),
                        ("stride height", sh), ("stride width", sw), ("dilation height", dh),
                        ("dilation width", dw)):
            if v < 1:
                raise ValueError(f"ConvPlan: {name} must be >= 1, got {v}")
        if min(pt, pl, pb, pr) < 0:
            raise ValueError(f"ConvPlan: padding must be >= 0, got {(pt, pl, pb, pr)}")
        dt = np.dtype(dtype)
        if dt != np.float32 and dt != np.float64:
            raise TypeError(f"ConvPlan: dtype must be float32 or float64, got {dt}")
        Ho = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
        Wo = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
        if Ho < 1 or Wo < 1:
            raise ValueError(
                f"ConvPlan: the output would be {Ho} x {Wo}: an input of {H} x {W} padded by "
                f"{(pt, pl, pb, pr)} (top, left, bottom, right) is smaller than the kernel "
                f"{kh} x {kw} at dilation {(dh, dw)} (it spans "
                f"{dh * (kh - 1) + 1} x {dw * (kw - 1) + 1})")
        self.C, self.H, self.W, self.out_channels = C, H, W, out_channels
        self.kernel, self.stride, self.padding, self.dilation = (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw)
        self.out_h, self.out_w = Ho, Wo
        self.in_features, self.out_features, self.k = C * H * W, out_channels * Ho * Wo, C * kh * kw
        self.dtype = dt
        bounds = [(out_lo(i * dh - pt, sh), out_hi(i * dh - pt, sh, H, Ho)) for i in range(kh)]
        bounds += [(out_lo(j * dw - pl, sw), out_hi(j * dw - pl, sw, W, Wo)) for j in range(kw)]
        self._bounds = np.array(bounds, np.int64).reshape(-1)
        g = &self.g
        g.C, g.H, g.W, g.Cout, g.kh, g.kw, g.sh, g.sw = C, H, W, out_channels, kh, kw, sh, sw
        g.pt, g.pl, g.dh, g.dw, g.Ho, g.Wo, g.P, g.K = pt, pl, dh, dw, Ho, Wo, Ho * Wo, self.k
        g.rows = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>self._bounds)
        g.cols = g.rows + 2 * g.kh
        self._cols = self._tmp = self._dwt = np.empty(0, dt)   # sized at first use: a plan is free to make

    def __repr__(self):
        return (f"ConvPlan(C={self.C}, H={self.H}, W={self.W}, out_channels={self.out_channels}, "
                f"kernel={self.kernel}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, dtype={self.dtype.name})")

    @property
    def work_elements(self):
        return self._cols.size + self._tmp.size + self._dwt.size

    cdef Py_ssize_t _reserve(self, Py_ssize_t B) except -1:
        """Grow the column buffers to the chunk a batch of B samples uses; returns the chunk."""
        cdef Py_ssize_t P = self.g.P, nb = min(B, max(1, _conv_cols_max // (self.k * P)))
        if self._cols.size < self.k * nb * P:
            self._cols = np.empty(self.k * nb * P, self.dtype)
        if self._tmp.size < self.out_channels * nb * P:
            self._tmp = np.empty(self.out_channels * nb * P, self.dtype)
        return nb

    cdef object _check(self, str where, list names, list arrays, list shapes, list written,
                       tuple optional):
        """Each array is a C-contiguous float array of the plan's dtype with its expected
        shape (those named in `optional` may be None); those in `written` must be writable."""
        present = [(n, a) for n, a in zip(names, arrays) if a is not None or n not in optional]
        for n, a, shape, w in zip(names, arrays, shapes, written):
            if a is not None or n not in optional:
                _float_array(n, a, len(shape), w)
        _same_dtype(where, [n for n, _ in present], [a for _, a in present])
        if present[0][1].dtype != self.dtype:
            raise TypeError(f"{where}: the plan is {self.dtype.name} but {present[0][0]} "
                            f"is {present[0][1].dtype}")
        for n, a, shape in zip(names, arrays, shapes):
            if a is not None:
                _shape(n, a, shape)

    def forward(self, X, W, b, Z, A, activation="identity", double alpha=0.0):
        """Z = conv(X, W) + b and A = f(Z) (see the class docstring for the formula).

        Parameters
        ----------
        X : ndarray, (B, C·H·W)
            The input images, one per row (NCHW flattened).
        W : ndarray, (out_channels, k)
            The weights.
        b : ndarray, (out_channels,) or None
            The bias; None for none.
        Z : ndarray, (B, out_features)
            Receives the pre-activation (overwritten).
        A : ndarray, (B, out_features) or None
            Receives f(Z); None only for the identity (then Z is the output).
        activation : str
            One of ACTIVATIONS except "softmax".
        alpha : float
            The parameter of leaky_relu and elu.

        Raises
        ------
        TypeError, ValueError
            An array of the wrong type, dtype, shape or layout (named), softmax, or a
            non-identity activation without A.
        """
        cdef int code = _act_code(activation)
        if code == ACT_SOFTMAX:
            raise ValueError("ConvPlan.forward: activation 'softmax' is refused (it normalises whole "
                             "rows; a convolution's output is channels x positions)")
        if A is None and code != ACT_IDENTITY:
            raise ValueError(f"ConvPlan.forward: activation {activation!r} needs an output array A, got None")
        _float_array("X", X, 2)
        cdef Py_ssize_t B = X.shape[0], Cout = self.out_channels
        self._check("ConvPlan.forward", ["X", "W", "b", "Z", "A"], [X, W, b, Z, A],
                    [(B, self.in_features), (Cout, self.k), (Cout,), (B, self.out_features),
                     (B, self.out_features)], [False, False, False, True, True], ("b", "A"))
        if B == 0:
            return
        cdef Py_ssize_t chunk = self._reserve(B)
        cdef void *px = cnp.PyArray_DATA(<cnp.ndarray>X)
        cdef void *pw = cnp.PyArray_DATA(<cnp.ndarray>W)
        cdef void *pb = cnp.PyArray_DATA(<cnp.ndarray>b) if b is not None else NULL
        cdef void *pz = cnp.PyArray_DATA(<cnp.ndarray>Z)
        cdef void *pa = cnp.PyArray_DATA(<cnp.ndarray>A) if A is not None else NULL
        cdef void *pc = cnp.PyArray_DATA(<cnp.ndarray>self._cols)
        cdef void *py = cnp.PyArray_DATA(<cnp.ndarray>self._tmp)
        cdef bint f32 = self.dtype == F32
        cdef int err
        with nogil:
            if f32:
                err = conv_forward(&self.g, B, chunk, <const float *>px, <const float *>pw,
                                   <const float *>pb, code, <float>alpha, <float *>pz,
                                   <float *>pa, <float *>pc, <float *>py)
            else:
                err = conv_forward(&self.g, B, chunk, <const double *>px, <const double *>pw,
                                   <const double *>pb, code, alpha, <double *>pz,
                                   <double *>pa, <double *>pc, <double *>py)
        if err:
            raise MemoryError("ConvPlan.forward: could not allocate GEMM work buffers")

    def backward(self, X, W, delta, dW, db, dX=None):
        """The gradients of a convolution given δ = ∂L/∂Z.

        dW = Σ_s δ_s · cols_sᵀ (cols_s: sample s unfolded, k × P),  db[o] = Σ_{s,p} δ[s, o, p],
        dX = col2im(Wᵀ · δ_s): each overwritten, never accumulated.

        Parameters
        ----------
        X : ndarray, (B, C·H·W)
            The input of the forward pass.
        W : ndarray, (out_channels, k)
            The weights.
        delta : ndarray, (B, out_features)
            ∂L/∂Z.
        dW : ndarray, (out_channels, k)
            Receives ∂L/∂W.
        db : ndarray, (out_channels,) or None
            Receives ∂L/∂b; None when the layer has no bias.
        dX : ndarray, (B, C·H·W) or None
            Receives ∂L/∂X; None to skip it (a first layer).

        Raises
        ------
        TypeError, ValueError
            An array of the wrong type, dtype, shape or layout (named).
        """
        _float_array("X", X, 2)
        cdef Py_ssize_t B = X.shape[0], Cout = self.out_channels
        self._check("ConvPlan.backward", ["X", "W", "delta", "dW", "db", "dX"],
                    [X, W, delta, dW, db, dX],
                    [(B, self.in_features), (Cout, self.k), (B, self.out_features), (Cout, self.k),
                     (Cout,), (B, self.in_features)], [False, False, False, True, True, True],
                    ("db", "dX"))
        if B == 0:
            dW[...] = 0
            if db is not None:
                db[...] = 0
            return
        cdef Py_ssize_t chunk = self._reserve(B)
        if self._dwt.size < self.k * self.out_channels:
            self._dwt = np.empty(self.k * self.out_channels, self.dtype)
        cdef void *px = cnp.PyArray_DATA(<cnp.ndarray>X)
        cdef void *pw = cnp.PyArray_DATA(<cnp.ndarray>W)
        cdef void *pd = cnp.PyArray_DATA(<cnp.ndarray>delta)
        cdef void *pdw = cnp.PyArray_DATA(<cnp.ndarray>dW)
        cdef void *pdb = cnp.PyArray_DATA(<cnp.ndarray>db) if db is not None else NULL
        cdef void *pdx = cnp.PyArray_DATA(<cnp.ndarray>dX) if dX is not None else NULL
        cdef void *pc = cnp.PyArray_DATA(<cnp.ndarray>self._cols)
        cdef void *pt = cnp.PyArray_DATA(<cnp.ndarray>self._tmp)
        cdef void *pwt = cnp.PyArray_DATA(<cnp.ndarray>self._dwt)
        cdef bint f32 = self.dtype == F32
        cdef int err
        with nogil:
            if f32:
                err = conv_backward(&self.g, B, chunk, <const float *>px, <const float *>pw,
                                    <const float *>pd, <float *>pdw, <float *>pdb, <float *>pdx,
                                    <float *>pc, <float *>pt, <float *>pwt)
            else:
                err = conv_backward(&self.g, B, chunk, <const double *>px, <const double *>pw,
                                    <const double *>pd, <double *>pdw, <double *>pdb, <double *>pdx,
                                    <double *>pc, <double *>pt, <double *>pwt)
        if err:
            raise MemoryError("ConvPlan.backward: could not allocate GEMM work buffers")
