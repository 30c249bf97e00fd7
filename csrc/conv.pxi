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
# As GEMMs per sample (the project's gemm_block, gemm.pxi), never materialising the
# unfolded input: with the zero-padded image x (C × Hp × Wp) and two tables fixed by the
# geometry,  koff[(c,i,j)] = c·Hp·Wp + i·dh·Wp + j·dw  and  pbase[ho·Wo + wo] = ho·sh·Wp + wo·sw,
#   cols[k, q] = x[koff[k] + pbase[q]]                    K × P, the unfolded image (implicit)
#   forward  Z_s = W · cols_s  (+ b, then f row by row)   Cout × P: already sample s's NCHW rows
#   backward dW  = Σ_s δ_s · cols_sᵀ                      δ_s: Cout × P, read as it lies; the
#                                                         rows of cols_s a task needs unfolded
#                                                         into its buffer (runs of image rows)
#            dcols_s = Wᵀ · δ_s,  dx_s = col2im(dcols_s)  K × P in the thread's buffer
# The GEMM packs its B panels straight from the image (pack_B_unfold: for stride 1 a half
# panel is a run of the image row, copied as a block), so no column matrix is written and
# read back; W (or Wᵀ) is packed once per pass (conv_prepack, prepack_A), not once per sample.
# With many taps (K ≥ DIRECT_MIN_K) the forward copies nothing at all: its tile turns the
# product around, MR positions × NR channels, and broadcasts each x[koff[k] + pbase[q]]
# from the image as the packed tile broadcasts from its panel (conv_kernels.h), Wᵀ packed
# as NR-channel panels, the tile written to Z's channel rows; it runs gemm_block's K slices,
# so Z has the same bits either way (LeNet's conv2: the copy was 6 % of the forward).
# Why per sample: a sample's product (Cout × P × K = 64 × 64 × 800 for LeNet's conv2) is
# large enough to run the micro-kernel near its speed, its operands stay in L2, and its
# output is Z's own layout, so no reordering pass. Measured (1 thread, batch 64, LeNet conv2,
# forward with bias and ReLU): 111 µs/sample (59 GFLOP/s), against 181 µs/sample for the
# chunked im2col + GEMM + reorder this replaced.
#
# Threads and determinism: forward and dX take a sample per task (a share of one sample's
# positions, in whole NR panels, when samples are fewer than threads); every element is a
# gemm sum over its K in one fixed order. dW's task owns a rectangle of rows and taps
# (whole panels) and adds the samples s = 0, 1, … in order (β = 1 after the first); db[o]'s
# task adds the samples in order, each by sum_lanes; col2im adds (i, j, ho, wo) in order within a plane. So
# results are bitwise the same on any number of threads.
# uses: gemm (gemm_block, prepack_A, pack_B, even_slice, Unfold, gemm_grid, grid_rect), activations (act_forward,
# _act_code, ACT_*), reduce (sum_lanes), threads (team_share, pn_barrier), checks.

from libc.string cimport memcpy

cdef extern from "cpu_dispatch.h" nogil:   # conv_kernels.h: the tile read from the image, the variant in use
    void pn_conv_tile_f32(int rows, long k, const float *x, const int64_t *koff, const int64_t *base,
                          const float *w, float *c, int add)
    void pn_conv_tile_f64(int rows, long k, const double *x, const int64_t *koff, const int64_t *base,
                          const double *w, double *c, int add)

cdef enum:
    DIRECT_MIN_K = 128     # from this many taps the tile reads the image itself (conv_direct)


cdef struct ConvGeom:
    Py_ssize_t C, H, W, Cout, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, Ho, Wo, P, K
    Py_ssize_t Hp, Wp          # the padded image: H + pt + pb rows, W + pl + pr columns
    bint padded
    const int64_t *koff        # koff[(c,i,j)] = c·Hp·Wp + i·dh·Wp + j·dw   (K entries)
    const int64_t *pbase       # pbase[ho·Wo + wo] = ho·sh·Wp + wo·sw        (P entries)
    const int64_t *rows        # rows[2i], rows[2i+1]: the output rows [lo, hi) that kernel row i
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


cdef const floating *padded_image(const ConvGeom *g, const floating *x) noexcept nogil:
    """x (C × H × W) as the image the tables index: x itself without padding, else a
    zero-bordered copy (C × Hp × Wp) in the calling thread's buffer; NULL when that
    buffer could not be allocated."""
    cdef Py_ssize_t c, y, j
    cdef floating *xp
    cdef floating *row
    if not g.padded:
        return x
    xp = <floating *>pn_workspace(PN_WS_CONV_IMAGE, g.C * g.Hp * g.Wp * sizeof(floating))
    if xp == NULL:
        return NULL
    for c in range(g.C):
        for y in range(g.Hp):
            row = xp + (c * g.Hp + y) * g.Wp
            if y < g.pt or y >= g.pt + g.H:
                for j in range(g.Wp):
                    row[j] = 0
            else:
                for j in range(g.pl):
                    row[j] = 0
                for j in range(g.W):
                    row[g.pl + j] = x[(c * g.H + y - g.pt) * g.W + j]
                for j in range(g.pl + g.W, g.Wp):
                    row[j] = 0
    return xp


cdef inline bint conv_direct(const ConvGeom *g) noexcept nogil:
    """Whether the forward runs positions × channels tiles straight from the image
    (forward_direct): with many taps, where the unfolded panel's copy is a few per cent
    of the work and a tile's scattered stores are less; else gemm_block with W as A. The
    same bits either way; a property of the geometry alone, so W's packed layout never
    depends on a setting that could change between packing and use."""
    return g.K >= DIRECT_MIN_K


cdef Py_ssize_t conv_prepacked_size(const ConvGeom *g, bint f32) noexcept nogil:
    """Elements conv_prepack writes."""
    cdef Py_ssize_t nr = PN_NR_F32 if f32 else PN_NR_F64
    if conv_direct(g):
        return (g.Cout + nr - 1) // nr * nr * g.K
    return prepacked_A_size(g.Cout, g.K, f32)


cdef void conv_prepack(const ConvGeom *g, const floating *W, floating *Wpre) noexcept nogil:
    """W (Cout × K) packed for forward_positions, once per pass: Wᵀ as K × NR panels of
    output channels (zeros past Cout) for forward_direct, else as gemm_block's A."""
    if conv_direct(g):
        pack_B(g.K, g.Cout, W, 1, g.K, Wpre)
    else:
        prepack_A(g.Cout, g.K, W, g.K, 1, Wpre)


cdef int forward_positions(const ConvGeom *g, const floating *x, const floating *Wpre,
                           const floating *b, int act, floating alpha, floating *z, floating *a,
                           Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    """Output positions [q0, q1) of one sample: z[o, q] = Σ_k W[o, k]·cols[k, q] + b[o] and
    a = f(z), W packed by conv_prepack. x: C·H·W, z, a: Cout × P (a may be NULL, b may be NULL;
    both NULL: z alone, no epilogue). With conv_direct, forward_direct; else gemm_block with
    the columns packed straight from the image (uf) and the epilogue on each tile while it
    is in L1 (b by rows: bias_rows). Returns 1 when a work buffer could not be allocated."""
    cdef Unfold uf
    cdef Epilogue ep
    uf.X = padded_image(g, x)
    if uf.X == NULL:
        return 1
    ep.bias, ep.bias_rows, ep.act, ep.alpha, ep.out, ep.ldo = b, True, act, alpha, a, g.P
    ep.Zf = ep.Af = ep.W = NULL
    if conv_direct(g):
        forward_direct(g, <const floating *>uf.X, Wpre, z, q0, q1)
        if b != NULL or a != NULL:
            epilogue_tile(&ep, z + q0, g.P, g.Cout, 0, q0, q1 - q0)
        return 0
    uf.koff, uf.pbase = g.koff, g.pbase + q0
    return gemm_block(g.Cout, q1 - q0, g.K, <floating>1, <const floating *>NULL, 0, 0,
                      <const floating *>NULL, 0, 0, <floating>0, z + q0, g.P,
                      &ep if b != NULL or a != NULL else NULL, 0, q0, Wpre, &uf, <floating *>NULL, NULL)


cdef void forward_direct(const ConvGeom *g, const floating *x, const floating *Wpre, floating *z,
                         Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    """z[o, q] = Σ_k W[o, k]·x[koff[k] + pbase[q]] for q in [q0, q1), x the padded image: per
    NR channels (a panel of Wpre) and MR positions, conv_kernels.h's tile over gemm_block's
    K slices (each slice's FMA chain, then added in order: gemm_block's bits), the tile then
    written to z's channel rows."""
    cdef Py_ssize_t nr = PN_NR_F32 if floating is float else PN_NR_F64
    cdef Py_ssize_t kcs = even_slice(g.K, KC, 1), jp, t, q, p, s, o, r, rows, n
    cdef floating c[TILE_MAX]
    cdef const floating *w
    for jp in range((g.Cout + nr - 1) // nr):
        w = Wpre + jp * nr * g.K
        n = min(nr, g.Cout - jp * nr)
        for t in range((q1 - q0 + MR - 1) // MR):
            q = q0 + t * MR
            rows = min(<Py_ssize_t>MR, q1 - q)
            for s in range((g.K + kcs - 1) // kcs):
                p = s * kcs
                if floating is float:
                    pn_conv_tile_f32(<int>rows, min(kcs, g.K - p), x, g.koff + p, g.pbase + q,
                                     w + p * nr, c, s > 0)
                else:
                    pn_conv_tile_f64(<int>rows, min(kcs, g.K - p), x, g.koff + p, g.pbase + q,
                                     w + p * nr, c, s > 0)
            for o in range(n):
                for r in range(rows):
                    z[(jp * nr + o) * g.P + q + r] = c[r * nr + o]


cdef int conv_forward(const ConvGeom *g, Py_ssize_t B, const floating *X, const floating *Wpre,
                      const floating *b, int act, floating alpha, floating *Z, floating *A,
                      int nt) noexcept nogil:
    """Z, A of B samples on at most nt threads, W packed in Wpre (prepack_A of Cout × K; A may
    be Z: f in place). A task is one sample, or a share of one sample's positions when there
    are fewer samples than threads (whole NR panels: a position's sum never depends on the
    split). Returns 1 when a work buffer could not be allocated."""
    cdef Py_ssize_t t, parts
    cdef int err = 0
    nt = min(nt, _nthreads_for(B * g.K * g.P))
    parts = forward_parts(g, B, nt, X)
    for t in prange(B * parts, num_threads=min(<Py_ssize_t>nt, B * parts), schedule="static"):
        err += forward_task(g, t, parts, X, Wpre, b, act, alpha, Z, A)
    return 1 if err else 0


cdef inline Py_ssize_t forward_parts(const ConvGeom *g, Py_ssize_t B, int nt, const floating *tag) noexcept nogil:
    """Tasks per sample of a forward pass on nt threads: 1, or with fewer samples than
    threads enough shares of each sample's positions (whole NR panels) to give every
    thread one."""
    cdef Py_ssize_t nr = PN_NR_F32 if floating is float else PN_NR_F64
    return 1 if B >= nt else min((g.P + nr - 1) // nr, (nt + B - 1) // B)


cdef int forward_task(const ConvGeom *g, Py_ssize_t t, Py_ssize_t parts, const floating *X,
                      const floating *Wpre, const floating *b, int act, floating alpha, floating *Z,
                      floating *A) noexcept nogil:
    """Task t of conv_forward's B·parts: share t % parts of sample t // parts's positions."""
    cdef Py_ssize_t nr = PN_NR_F32 if floating is float else PN_NR_F64
    cdef Py_ssize_t pu = (g.P + nr - 1) // nr, s = t // parts, out_f = g.Cout * g.P
    return forward_positions(g, X + s * g.C * g.H * g.W, Wpre, b, act, alpha, Z + s * out_f,
                             A + s * out_f if A != NULL else NULL, min(g.P, t % parts * pu // parts * nr),
                             min(g.P, (t % parts + 1) * pu // parts * nr))


cdef void col2im(const ConvGeom *g, const floating *dcols, floating *dx) noexcept nogil:
    """dx[c, y, x] = Σ dcols[(c,i,j), ho·Wo + wo] over the (i, j, ho, wo) with
    y = ho·sh + i·dh − pt, x = wo·sw + j·dw − pl (the adjoint of the unfolding), for one
    sample: dcols K × P, dx C·H·W, overwritten. Each plane adds (i, j, ho, wo) in order."""
    cdef Py_ssize_t c, i, j, k, ho, wo, yoff, xoff, ylo, yhi, xlo, xhi, HW = g.H * g.W
    cdef floating *plane
    cdef floating *prow
    cdef const floating *src
    cdef const floating *srow
    for c in range(g.C):
        plane = dx + c * HW
        for k in range(HW):
            plane[k] = 0
        for i in range(g.kh):
            yoff = i * g.dh - g.pt
            ylo, yhi = g.rows[2 * i], g.rows[2 * i + 1]
            for j in range(g.kw):
                xoff = j * g.dw - g.pl
                xlo, xhi = g.cols[2 * j], g.cols[2 * j + 1]
                src = dcols + ((c * g.kh + i) * g.kw + j) * g.P
                for ho in range(ylo, yhi):
                    prow = plane + (ho * g.sh + yoff) * g.W + xoff
                    srow = src + ho * g.Wo
                    if g.sw == 1:
                        for wo in range(xlo, xhi):
                            prow[wo] += srow[wo]
                    else:
                        for wo in range(xlo, xhi):
                            prow[wo * g.sw] += srow[wo]


cdef inline floating channel_sum(const ConvGeom *g, const floating *delta, Py_ssize_t B, Py_ssize_t o) noexcept nogil:
    """Σ_s Σ_p δ[s, o, p]: s = 0..B−1 in order, each sample's P positions by sum_lanes."""
    cdef floating acc = 0
    cdef Py_ssize_t s
    for s in range(B):
        acc = acc + sum_lanes(delta + (s * g.Cout + o) * g.P, g.P)
    return acc


cdef void unfold_rows(const ConvGeom *g, const floating *x, Py_ssize_t k0, Py_ssize_t k1,
                      floating *cols) noexcept nogil:
    """cols[k − k0, q] = x[koff[k] + pbase[q]] for the taps k0 ≤ k < k1 of one (padded) image
    x: rows of its unfolded matrix, each output row of Wo positions one run of x when sw = 1."""
    cdef Py_ssize_t k, ho, wo
    cdef const floating *row
    cdef floating *dst
    for k in range(k0, k1):
        for ho in range(g.Ho):
            row = x + g.koff[k] + g.pbase[ho * g.Wo]
            dst = cols + (k - k0) * g.P + ho * g.Wo
            if g.sw == 1:
                memcpy(dst, row, g.Wo * sizeof(floating))
            else:
                for wo in range(g.Wo):
                    dst[wo] = row[wo * g.sw]


cdef int weight_grad_block(const ConvGeom *g, Py_ssize_t B, const floating *X,
                           const floating *delta, floating *dW, Py_ssize_t o0, Py_ssize_t o1,
                           Py_ssize_t k0, Py_ssize_t k1) noexcept nogil:
    """dW[o0:o1, k0:k1] = Σ_s δ_s[o0:o1] · cols_sᵀ[:, k0:k1], samples added in order
    s = 0, 1, …: per sample the taps' rows of cols_s unfolded into the thread's buffer
    (runs of image rows), then a GEMM (o1 − o0) × (k1 − k0) × P reading them transposed
    (gemm's vectorised transposing pack). Returns 1 when a work buffer could not be allocated."""
    cdef Py_ssize_t s, in_f = g.C * g.H * g.W, out_f = g.Cout * g.P
    cdef const floating *x
    cdef floating *cols = <floating *>pn_workspace(PN_WS_CONV_COLS, (k1 - k0) * g.P * sizeof(floating))
    if cols == NULL:
        return 1
    for s in range(B):
        x = padded_image(g, X + s * in_f)
        if x == NULL:
            return 1
        unfold_rows(g, x, k0, k1, cols)
        if gemm_block(o1 - o0, k1 - k0, g.P, <floating>1, delta + s * out_f + o0 * g.P, g.P, 1,
                      cols, 1, g.P, <floating>(0 if s == 0 else 1), dW + o0 * g.K + k0, g.K,
                      NULL, 0, 0, <const floating *>NULL, <const Unfold *>NULL, <floating *>NULL, NULL):
            return 1
    return 0


cdef int input_grad_sample(const ConvGeom *g, const floating *WTpre, const floating *delta,
                           floating *dx) noexcept nogil:
    """dx = col2im(Wᵀ·δ) of one sample (δ: Cout × P), the K × P product in the calling
    thread's buffer. Returns 1 when a work buffer could not be allocated."""
    cdef floating *dcols = <floating *>pn_workspace(PN_WS_CONV_COLS, g.K * g.P * sizeof(floating))
    if dcols == NULL:
        return 1
    if gemm_block(g.K, g.P, g.Cout, <floating>1, <const floating *>NULL, 0, 0, delta, g.P, 1,
                  <floating>0, dcols, g.P, NULL, 0, 0, WTpre, <const Unfold *>NULL, <floating *>NULL, NULL):
        return 1
    col2im(g, dcols, dx)
    return 0


cdef int conv_backward(const ConvGeom *g, Py_ssize_t B, const floating *X, const floating *W,
                       const floating *delta, floating *dW, floating *db, floating *dX,
                       floating *WTpre) noexcept nogil:
    """dW, db (if not NULL) and dX (if not NULL) of B samples: conv_backward_share on each
    thread of one parallel region. Returns 1 when a work buffer could not be allocated."""
    cdef int err = 0
    cdef int *failed = &err
    with parallel(num_threads=_nthreads_for(B * g.K * g.P)):
        if conv_backward_share(g, B, X, W, delta, dW, db, dX, WTpre, threadid(), pn_team_size()):
            failed[0] = 1
    return err


cdef int conv_backward_share(const ConvGeom *g, Py_ssize_t B, const floating *X, const floating *W,
                             const floating *delta, floating *dW, floating *db, floating *dX,
                             floating *WTpre, int tid, int nt) noexcept nogil:
    """Thread tid's share, in a team of nt that all call it, of the gradients of B samples:
    db's channels (channel_sum: samples in order); its rectangle of dW, rows × taps in whole
    MR × NR panels (gemm_grid: the larger operand is not packed twice), the samples added in
    order, so every element is the same sum on any number of threads; then, when dX is
    asked, a barrier (Wᵀ packed into WTpre by the last thread meanwhile: prepacked_A_size(K,
    Cout)) and its samples of dX. Returns 1 when a work buffer could not be allocated."""
    cdef Py_ssize_t nr = PN_NR_F32 if floating is float else PN_NR_F64, i
    cdef int tn, tm = gemm_grid(g.Cout, g.K, B * g.P, nt, nr, &tn), err = 0
    cdef Share sh
    cdef Rect q
    if db != NULL:
        sh = team_share(g.Cout, tid, nt)
        for i in range(sh.a, sh.b):
            db[i] = channel_sum(g, delta, B, i)
    if tid < tm * tn:
        q = grid_rect(tid, tm, tn, g.Cout, g.K, nr)
        if q.m1 > q.m0 and q.n1 > q.n0:
            err = weight_grad_block(g, B, X, delta, dW, q.m0, q.m1, q.n0, q.n1)
    if dX != NULL:
        if tid == nt - 1:
            prepack_A(g.K, g.Cout, W, 1, g.K, WTpre)
        pn_barrier()
        sh = team_share(B, tid, nt)
        for i in range(sh.a, sh.b):
            err |= input_grad_sample(g, WTpre, delta + i * g.Cout * g.P, dX + i * g.C * g.H * g.W)
    return err


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
        Elements of the plan's own buffers (W and Wᵀ packed for the GEMM: sized by the
        geometry, made at first use; per-sample buffers are the threads', runtime.h).

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
    cdef object _wpack, _wtpack, _bounds, _tables

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
        Hp, Wp = H + pt + pb, W + pl + pr
        c, i, j = np.ix_(np.arange(C), np.arange(kh), np.arange(kw))
        ho, wo = np.ix_(np.arange(Ho), np.arange(Wo))
        self._tables = np.concatenate([((c * Hp + i * dh) * Wp + j * dw).reshape(-1),
                                       (ho * sh * Wp + wo * sw).reshape(-1)]).astype(np.int64)
        g = &self.g
        g.C, g.H, g.W, g.Cout, g.kh, g.kw, g.sh, g.sw = C, H, W, out_channels, kh, kw, sh, sw
        g.pt, g.pl, g.pb, g.pr, g.dh, g.dw, g.Ho, g.Wo = pt, pl, pb, pr, dh, dw, Ho, Wo
        g.P, g.K, g.Hp, g.Wp, g.padded = Ho * Wo, self.k, Hp, Wp, max(pt, pl, pb, pr) > 0
        g.koff = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>self._tables)
        g.pbase = g.koff + g.K
        g.rows = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>self._bounds)
        g.cols = g.rows + 2 * g.kh
        self._wpack = self._wtpack = np.empty(0, dt)   # sized at first use: a plan is free to make

    def __repr__(self):
        return (f"ConvPlan(C={self.C}, H={self.H}, W={self.W}, out_channels={self.out_channels}, "
                f"kernel={self.kernel}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, dtype={self.dtype.name})")

    @property
    def work_elements(self):
        return self._wpack.size + self._wtpack.size

    cdef void *_packed(self, bint transposed) except NULL:
        """The buffer W (or Wᵀ) is packed into before each pass: its size is fixed by the
        geometry, so it is made once."""
        cdef Py_ssize_t M = self.k if transposed else self.out_channels
        cdef Py_ssize_t K = self.out_channels if transposed else self.k
        cdef Py_ssize_t n = prepacked_A_size(M, K, self.dtype == F32) if transposed else \
            conv_prepacked_size(&self.g, self.dtype == F32)
        if transposed:
            if self._wtpack.size < n:
                self._wtpack = np.empty(n, self.dtype)
            return cnp.PyArray_DATA(<cnp.ndarray>self._wtpack)
        if self._wpack.size < n:
            self._wpack = np.empty(n, self.dtype)
        return cnp.PyArray_DATA(<cnp.ndarray>self._wpack)

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
        cdef void *pp = self._packed(False)
        cdef void *px = cnp.PyArray_DATA(<cnp.ndarray>X)
        cdef void *pw = cnp.PyArray_DATA(<cnp.ndarray>W)
        cdef void *pb = cnp.PyArray_DATA(<cnp.ndarray>b) if b is not None else NULL
        cdef void *pz = cnp.PyArray_DATA(<cnp.ndarray>Z)
        cdef void *pa = cnp.PyArray_DATA(<cnp.ndarray>A) if A is not None else NULL
        cdef bint f32 = self.dtype == F32
        cdef int err
        with nogil:
            if f32:
                conv_prepack(&self.g, <const float *>pw, <float *>pp)
                err = conv_forward(&self.g, B, <const float *>px, <const float *>pp,
                                   <const float *>pb, code, <float>alpha, <float *>pz,
                                   <float *>pa, _nthreads())
            else:
                conv_prepack(&self.g, <const double *>pw, <double *>pp)
                err = conv_forward(&self.g, B, <const double *>px, <const double *>pp,
                                   <const double *>pb, code, alpha, <double *>pz,
                                   <double *>pa, _nthreads())
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
        cdef void *pp = self._packed(True) if dX is not None else NULL
        cdef void *px = cnp.PyArray_DATA(<cnp.ndarray>X)
        cdef void *pw = cnp.PyArray_DATA(<cnp.ndarray>W)
        cdef void *pd = cnp.PyArray_DATA(<cnp.ndarray>delta)
        cdef void *pdw = cnp.PyArray_DATA(<cnp.ndarray>dW)
        cdef void *pdb = cnp.PyArray_DATA(<cnp.ndarray>db) if db is not None else NULL
        cdef void *pdx = cnp.PyArray_DATA(<cnp.ndarray>dX) if dX is not None else NULL
        cdef bint f32 = self.dtype == F32
        cdef int err
        with nogil:
            if f32:
                err = conv_backward(&self.g, B, <const float *>px, <const float *>pw,
                                    <const float *>pd, <float *>pdw, <float *>pdb, <float *>pdx,
                                    <float *>pp)
            else:
                err = conv_backward(&self.g, B, <const double *>px, <const double *>pw,
                                    <const double *>pd, <double *>pdw, <double *>pdb, <double *>pdx,
                                    <double *>pp)
        if err:
            raise MemoryError("ConvPlan.backward: could not allocate GEMM work buffers")
