# gemm.pxi — general matrix multiply, BLIS-style.
#
#   C = α·op(A)·op(B) + β·C        op(A): M×K, op(B): K×N, C: M×N (row stride ldc)
#   op(X) = X or Xᵀ, taken by strides while packing: no transposed copy is ever made.
#
# Threads: C is cut into a grid of tm × tn rectangles, one per thread (gemm_grid
# picks the grid that keeps the work even and packs least), and each thread runs
# the serial five loops below on its rectangle with its own packing buffers: one
# parallel region per call, no barriers. Rectangle edges fall on multiples of
# MR and NR, so a tile is the same tile for any thread count. One row (α = 1, β = 0, the
# prediction of one sample), and in a training team a few rows times a wide weight matrix,
# are cut along K instead: a thread per run of KC slices, their products added in slice
# order after a barrier (gemm_k_slices: gemm_block's sum, bits and all). In a training
# team a grid of row bands runs as row blocks the threads take as they come, each its own
# band's first, then the rest of a slower thread's from the back (runtime.h's block ranges,
# a barrier after each KC slice): a core slowed by other work holds no one up.
#
# The five loops around the micro-kernel, outermost first (gemm_block):
#   jc  over N in NC-column slabs
#   pc  over K in KC-deep slices       op(B) slice packed: kc × nc in NR-wide panels
#                                      (fixed order: C's sum over k never depends on threads)
#   ic  over M in MC-row blocks        op(A) block packed: mc × kc in MR-tall panels
#   jr  over NR-column panels          the B panel stays in L1 ...
#   ir  over MR-row panels             ... while A panels stream from L2: MR × NR tile in registers
# K, M and N are cut into equal slices (KC, MC, NC are upper bounds), so no thin
# remainder slice pays a whole pass over C.
#
# Two other sources of packed operands (the convolution's, conv.pxi):
#   Apre  op(A) packed once, ahead of the call (prepack_A), block (pc, ic) at
#         Apre + (pc_·n_ic + ic_)·MCS·KCS: a weight matrix shared by many calls is not repacked;
#   uf    op(B) as a convolution's unfolded image, packed straight from the image
#         (pack_B_unfold): op(B)[p, q] = X[koff[p] + pbase[q]], no column matrix in between.
#
# Epilogue: on the last KC slice a tile is still in L1 when it is finished, so the
# Dense forward adds the bias and applies the activation there:
#   Z = C + b (row-broadcast),  Aout = f(Z);
# a convolution's bias is one value per row of C (an output channel): bias_rows; and the
# backward pass makes the layer below's δ from its dA = δ·Wᵀ there: out = C ⊙ f′(Z_below).
# And while op(B) = δ is packed for dW = Xᵀ·δ, its columns are summed: db = Σ_rows δ (bsum).
#
# Threads inside a team (gemm_team): a whole training run is one parallel region
# (train_loop.pxi); each thread takes its rectangle of the same grid, no region of its own.
#
# Blocking for this machine (L1d 32 KiB, L2 512 KiB – 1 MiB per core, shared L3), one place:
#   KC = 256: an NR×KC B panel (16 KiB) and an MR×KC A panel (6 / 12 KiB) fit L1 together
#   MC = 144 (f32) / 72 (f64): the packed A block MC×KC is 144 KiB, inside L2 (as BLIS's zen3
#        config; MC only groups tiles, so it never changes a result)
#   NC = 4080: the packed B slice KC×NC is 4 MiB (f32) / 8 MiB (f64), in L3
#
# uses: activations (act_forward, ACT_*), threads (work buffers), cpu_dispatch (the
# micro-kernels and packing in use), checks; C headers gemm_microkernel.h, gemm_pack.h (both via
# cpu_dispatch.h).

from libc.string cimport memcpy, memset
from posix.unistd cimport usleep

cdef extern from "cpu_dispatch.h" nogil:   # gemm_microkernel.h's kernels and gemm_pack.h's packing, the variant in use
    enum:
        PN_MR
        PN_NR_F32
        PN_NR_F64
        PN_PAIR_ROWS
    void pn_tile_f32(int rows, int vecs, long k, const float *a, long lda, const float *b,
                     long ldb, float *c, long ldc, float alpha, float beta)
    void pn_tile_f64(int rows, int vecs, long k, const double *a, long lda, const double *b,
                     long ldb, double *c, long ldc, double alpha, double beta)
    void pn_row_f32(long k, long n, const float *a, long lda, const float *b, long ldb, float *c,
                    float alpha, float beta)
    void pn_row_f64(long k, long n, const double *a, long lda, const double *b, long ldb, double *c,
                    double alpha, double beta)
    void pn_pair_f32(int rows, long k, const float *a, long lda, const float *b, long ldb,
                     long hstep, float *c, long ldc, float alpha, float beta)
    void pn_pair_f64(int rows, long k, const double *a, long lda, const double *b, long ldb,
                     long hstep, double *c, long ldc, double alpha, double beta)
    float pn_fma_probe_f32(long n, float x)
    double pn_fma_probe_f64(long n, double x)
    int pn_probe_lanes(int f64)

    void pn_row_tail_f32(long k, long n, const float *a, long lda, const float *b, long ldb, float *s)
    void pn_row_tail_f64(long k, long n, const double *a, long lda, const double *b, long ldb, double *s)
    void pn_pack_a_f32(long mc, long kc, const float *A, long rs, long cs, float *Ap)
    void pn_pack_a_f64(long mc, long kc, const double *A, long rs, long cs, double *Ap)
    void pn_pack_b_f32(long kc, long nc, const float *B, long rs, long cs, float *Bp)
    void pn_pack_b_f64(long kc, long nc, const double *B, long rs, long cs, double *Bp)

cdef enum:
    MR = PN_MR
    KC = 256
    MC = 144                     # float32; float64 takes MC // 2 (the same bytes)
    NC = 4080                    # a multiple of both NR
    TILE_MAX = PN_MR * PN_NR_F32
    PACK_COST = 24               # packing one element costs about 24 multiply-adds of the kernel
                                 # (a transposing pack: ~1.5 cycles, the kernel: 16 per cycle)
    MIN_TASK_FMA = 1 << 15       # below this many multiply-adds per thread, fewer threads win
    INPLACE_PANELS = 8           # an operand whose panels serve at most this many tiles is not packed
    TEAM_BLOCKS = 8              # a team's shared row blocks: about this many a thread (gemm_team)
    ROW_SLICES_MAX = 1 << 18     # elements of one row's slice products (row_k_slices) a thread keeps


cdef double _probe_sink = 0


def fma_probe(long n, dtype=np.float32):
    """Run n rounds of the micro-kernel's FMA mix (12 independent vector FMAs, on the widest
    vectors of the kernels in use: AVX-512's where they run) on every kernel thread, without
    touching memory; returns the floating-point operations done.
    Timing it measures the machine's peak: bench/gemm.py reports % of it."""
    cdef int t, nt = _nthreads()
    cdef bint f32 = np.dtype(dtype) == F32
    cdef double sink = 0
    global _probe_sink
    if n < 0:
        raise ValueError(f"fma_probe: n must be >= 0, got {n}")
    with nogil:
        for t in prange(nt, num_threads=nt, schedule="static"):
            if f32:
                sink += pn_fma_probe_f32(n, <float>1.0000001)
            else:
                sink += pn_fma_probe_f64(n, 1.0000001)
    _probe_sink = sink   # kept, so the probe's work is not optimised away
    return 2.0 * 12 * pn_probe_lanes(not f32) * n * nt   # 12 vector FMAs a round


cdef inline Py_ssize_t even_slice(Py_ssize_t n, Py_ssize_t most, Py_ssize_t unit) noexcept nogil:
    """The slice length that cuts n into the fewest equal pieces of at most `most`,
    rounded up to a multiple of unit (most is one)."""
    cdef Py_ssize_t pieces = (n + most - 1) // most
    cdef Py_ssize_t s = (n + pieces - 1) // pieces
    return (s + unit - 1) // unit * unit


cdef inline void tile_kernel(Py_ssize_t rows, int vecs, Py_ssize_t k, const floating *a,
                             Py_ssize_t lda, const floating *b, Py_ssize_t ldb, floating *c,
                             Py_ssize_t ldc, floating alpha, floating beta) noexcept nogil:
    if floating is float:
        pn_tile_f32(<int>rows, vecs, k, a, lda, b, ldb, c, ldc, alpha, beta)
    else:
        pn_tile_f64(<int>rows, vecs, k, a, lda, b, ldb, c, ldc, alpha, beta)


cdef inline void pack_A(Py_ssize_t mc, Py_ssize_t kc, const floating *A, Py_ssize_t rs,
                        Py_ssize_t cs, floating *Ap) noexcept nogil:
    """Ap[ir·kc + p·MR + i] = A[(ir+i)·rs + p·cs]: MR-tall panels (a last, shorter one
    leaves its missing rows unwritten: its kernel never reads them). SIMD along whichever
    of A's directions is contiguous, for the ISA in use (gemm_pack.h via cpu_dispatch.h)."""
    if floating is float:
        pn_pack_a_f32(mc, kc, A, rs, cs, Ap)
    else:
        pn_pack_a_f64(mc, kc, A, rs, cs, Ap)


cdef inline void pack_B(Py_ssize_t kc, Py_ssize_t nc, const floating *B, Py_ssize_t rs,
                        Py_ssize_t cs, floating *Bp) noexcept nogil:
    """Bp[jr·kc + p·nr + j] = B[p·rs + (jr+j)·cs]: nr-wide panels, columns past nc are 0.
    SIMD along whichever of B's directions is contiguous, for the ISA in use."""
    if floating is float:
        pn_pack_b_f32(kc, nc, B, rs, cs, Bp)
    else:
        pn_pack_b_f64(kc, nc, B, rs, cs, Bp)


cdef struct Unfold:
    # op(B) of a convolution, element (p, q) = X[koff[p] + pbase[q]]: tap p = (c, i, j) of
    # output position q of one (padded) image X (conv.pxi's ConvGeom holds the tables)
    const void *X
    const int64_t *koff
    const int64_t *pbase


cdef void pack_B_unfold(Py_ssize_t kc, Py_ssize_t nc, const Unfold *uf, Py_ssize_t pc,
                        Py_ssize_t jc, floating *Bp) noexcept nogil:
    """Bp[jr·kc + p·nr + j] = X[koff[pc + p] + pbase[jc + jr + j]] (0 past nc): pack_B's
    panels read from the image itself. A half panel (nr/2 columns) whose positions are
    consecutive in the image (stride 1, one output row) is copied as a block, the rest
    element by element."""
    cdef Py_ssize_t nr = PN_NR_F32 if floating is float else PN_NR_F64
    cdef Py_ssize_t h = nr // 2, jr_, jr, p, j, n, half
    cdef const floating *X = <const floating *>uf.X
    cdef const int64_t *koff = uf.koff + pc
    cdef const int64_t *base
    cdef const floating *src
    cdef floating *dst
    for jr_ in range((nc + nr - 1) // nr):
        jr = jr_ * nr
        n = min(nr, nc - jr)
        base = uf.pbase + jc + jr
        dst = Bp + jr * kc
        for half in range(2):
            if half * h + h <= n and base[half * h + h - 1] - base[half * h] == h - 1:
                for p in range(kc):    # a fixed size: inlined as vector moves
                    memcpy(dst + p * nr + half * h, X + koff[p] + base[half * h], h * sizeof(floating))
            else:
                for p in range(kc):
                    src = X + koff[p]
                    for j in range(half * h, half * h + h):
                        dst[p * nr + j] = src[base[j]] if j < n else 0


cdef Py_ssize_t prepacked_A_size(Py_ssize_t M, Py_ssize_t K, bint f32) noexcept nogil:
    """Elements prepack_A writes for an M × K op(A) of float32 (f32) or float64."""
    cdef Py_ssize_t kcs = even_slice(K, KC, 1)
    cdef Py_ssize_t mcs = even_slice(M, MC if f32 else MC // 2, MR)
    return ((K + kcs - 1) // kcs) * ((M + mcs - 1) // mcs) * mcs * kcs


cdef void prepack_A(Py_ssize_t M, Py_ssize_t K, const floating *A, Py_ssize_t rsa, Py_ssize_t csa,
                    floating *Apre) noexcept nogil:
    """op(A) (M × K, element (i, p) at A[i·rsa + p·csa]) packed as gemm_block packs it, block
    (pc, ic) at Apre + (pc_·n_ic + ic_)·mcs·kcs, for gemm_block(..., Apre, ...)."""
    cdef Py_ssize_t kcs = even_slice(K, KC, 1)
    cdef Py_ssize_t mcs = even_slice(M, MC if floating is float else MC // 2, MR)
    cdef Py_ssize_t nic = (M + mcs - 1) // mcs, pc_, ic_, pc, ic
    for pc_ in range((K + kcs - 1) // kcs):
        pc = pc_ * kcs
        for ic_ in range(nic):
            ic = ic_ * mcs
            pack_A(min(mcs, M - ic), min(kcs, K - pc), A + ic * rsa + pc * csa, rsa, csa,
                   Apre + (pc_ * nic + ic_) * mcs * kcs)


cdef struct Epilogue:
    # What happens to a row segment C[i, j : j+n] once it is final (i, j: C's coordinates):
    #   forward   Z = C + b (b[j] over columns, or with bias_rows b[i]: one per row);
    #             out = f(Z)                      (bias, out may be NULL; out may be C)
    #   backward  out = C ⊙ f′(Zf)                (when Zf is set: act_backward, Af = f(Zf))
    #   update    C is ∂L/∂W: W and its state s1, s2 updated by `rule` with scalars h
    #             (when W is set: update_slice; by gemm_block a whole block at a time)
    # out, Zf, Af, W, s1 and s2 have row stride ldo.
    const void *bias
    bint bias_rows
    int act
    double alpha
    void *out
    Py_ssize_t ldo
    const void *Zf
    const void *Af
    void *W
    void *s1
    void *s2
    const double *h
    int rule


cdef inline void epilogue_row(const Epilogue *ep, floating *Z, Py_ssize_t i, Py_ssize_t j,
                              Py_ssize_t n) noexcept nogil:
    """The epilogue (above) of the segment Z = C[i, j : j+n]."""
    cdef Py_ssize_t k, o = i * ep.ldo + j
    cdef floating b0
    cdef floating *Aout = <floating *>ep.out + o if ep.out != NULL else NULL
    cdef const floating *bias = <const floating *>ep.bias
    if ep.W != NULL:
        update_slice(ep.rule, 0, n, <floating *>ep.W + o, Z, <floating *>ep.s1 + o if ep.s1 != NULL else NULL,
                     <floating *>ep.s2 + o if ep.s2 != NULL else NULL, ep.h)
        return
    if ep.Zf != NULL:
        act_backward(ep.act, <floating>ep.alpha, <const floating *>ep.Zf + o,
                     <const floating *>ep.Af + o, Z, Aout, n)
        return
    if bias != NULL and ep.bias_rows:
        b0 = bias[i]
        for k in range(n):
            Z[k] += b0
    elif bias != NULL:
        add_bias_row(Z, bias + j, n)
    if Aout != NULL:
        act_forward(ep.act, <floating>ep.alpha, Z, Aout, n)


cdef inline void epilogue_tile(const Epilogue *ep, floating *Z, Py_ssize_t ldz, Py_ssize_t m,
                               Py_ssize_t i, Py_ssize_t j, Py_ssize_t n) noexcept nogil:
    """The epilogue of the m × n block Z = C[i : i+m, j : j+n] (row stride ldz): a forward
    with a piecewise-linear f in one call (act_kernels.h's pn_bias_act), else row by row."""
    cdef Py_ssize_t r, o = i * ep.ldo + j
    cdef const floating *bias = <const floating *>ep.bias
    if ep.Zf != NULL or ep.W != NULL or ep.act > ACT_LEAKY_RELU:
        for r in range(m):
            epilogue_row(ep, Z + r * ldz, i + r, j, n)
        return
    if bias != NULL:
        bias = bias + (i if ep.bias_rows else j)
    if floating is float:
        pn_bias_act_f32(ep.act, m, n, <float>ep.alpha, Z, ldz, bias, ep.bias_rows,
                        <float *>ep.out + o if ep.out != NULL else NULL, ep.ldo)
    else:
        pn_bias_act_f64(ep.act, m, n, ep.alpha, Z, ldz, bias, ep.bias_rows,
                        <double *>ep.out + o if ep.out != NULL else NULL, ep.ldo)


cdef inline void add_column_sums(Py_ssize_t kc, Py_ssize_t nc, const floating *B, Py_ssize_t rsb,
                                 Py_ssize_t csb, floating *s) noexcept nogil:
    """s[j] += B[p, j] for p = 0, 1, … kc−1 in order (B[p, j] at B[p·rsb + j·csb])."""
    cdef Py_ssize_t p, j
    for p in range(kc):
        for j in range(nc):
            s[j] += B[p * rsb + j * csb]


cdef inline void pair_tile(Py_ssize_t rows, Py_ssize_t k, const floating *a, Py_ssize_t lda,
                           const floating *b, Py_ssize_t ldb, Py_ssize_t hstep, floating *c,
                           Py_ssize_t ldc, floating alpha, floating beta) noexcept nogil:
    """rows × two whole panels of B (b and b + hstep), C in place: the AVX-512 tile, and
    the AVX2 tile of a last row panel of rows ≤ PN_PAIR_ROWS."""
    if floating is float:
        pn_pair_f32(<int>rows, k, a, lda, b, ldb, hstep, c, ldc, alpha, beta)
    else:
        pn_pair_f64(<int>rows, k, a, lda, b, ldb, hstep, c, ldc, alpha, beta)


cdef inline void finish_tile(Py_ssize_t m, Py_ssize_t n, const floating *tile, Py_ssize_t ldt,
                             floating *c, Py_ssize_t ldc, floating alpha, floating beta) noexcept nogil:
    """c[i, j] = α·tile[i, j] + β·c[i, j] (β = 0: c not read) for an m × n edge of C whose
    sums a kernel left in a buffer."""
    cdef Py_ssize_t i, j
    for i in range(m):
        for j in range(n):
            if beta == 0:
                c[i * ldc + j] = alpha * tile[i * ldt + j]
            else:
                c[i * ldc + j] = alpha * tile[i * ldt + j] + beta * c[i * ldc + j]


cdef void macro_kernel(Py_ssize_t mc, Py_ssize_t nc, Py_ssize_t kc, floating alpha,
                       const floating *Ap, Py_ssize_t a_step, Py_ssize_t lda,
                       const floating *Bp, Py_ssize_t b_step, Py_ssize_t ldb,
                       const floating *Bedge, floating beta, floating *C, Py_ssize_t ldc,
                       const Epilogue *ep, Py_ssize_t ei, Py_ssize_t ej) noexcept nogil:
    """C[mc × nc] = α·op(A)·op(B) + β·C over panels: A's panel for row ir starts at
    Ap + ir·a_step (p-stride lda), B's for column jr at Bp + jr·b_step (p-stride ldb);
    a last, narrower B panel comes packed from Bedge when B is read in place.
    A tile has m ≤ MR rows and one or two vectors of columns (with AVX-512 two whole
    panels while they last, and so with AVX2 a last row panel of m ≤ PN_PAIR_ROWS rows);
    when those cover its n columns exactly the kernel writes C in place, otherwise through
    a small buffer. One row with B in place (a single sample)
    takes its whole panels in one pn_row call, reading B row by row, and the columns
    past them as sums from pn_row_tail, B in place too.
    With ep (the last KC slice) each finished tile gets the epilogue; this block's C[0, 0]
    is element (ei, ej) of the whole product."""
    cdef Py_ssize_t nr = PN_NR_F32 if floating is float else PN_NR_F64
    cdef Py_ssize_t ir_, jr, ir, m, n, w, ldb_j, j0
    cdef int vecs
    cdef bint pair, edge, paired
    cdef floating tile[TILE_MAX]
    cdef floating *c
    cdef const floating *b
    if mc == 1 and b_step == 1:  # one row, B in place: its whole panels in one pass (pn_row),
        j0 = nc // nr * nr       # the rest as sums (pn_row_tail) finished as an edge tile's
        if floating is float:
            pn_row_f32(kc, j0, Ap, lda, Bp, ldb, C, alpha, beta)
            pn_row_tail_f32(kc, nc - j0, Ap, lda, Bp + j0, ldb, tile)
        else:
            pn_row_f64(kc, j0, Ap, lda, Bp, ldb, C, alpha, beta)
            pn_row_tail_f64(kc, nc - j0, Ap, lda, Bp + j0, ldb, tile)
        finish_tile(1, nc - j0, tile, nr, C + j0, ldc, alpha, beta)
        if ep != NULL:
            epilogue_row(ep, C, ei, ej, nc)
        return
    jr = 0
    while jr < nc:
        pair = pn_isa == 2 and jr + 2 * nr <= nc    # AVX-512: a tile of two whole panels
        n = 2 * nr if pair else min(nr, nc - jr)
        vecs = 1 if 2 * n <= nr else 2
        b, ldb_j = (Bedge, nr) if n < nr and Bedge != NULL else (Bp + jr * b_step, ldb)
        # AVX2, a last row panel of m ≤ PN_PAIR_ROWS rows: whole panels 2i and 2i+1 in one
        # tile, made at panel 2i (edge); panel 2i+1 (paired) has no tile of its own for them
        edge = pn_isa == 1 and jr // nr % 2 == 0 and jr + 2 * nr <= nc
        paired = pn_isa == 1 and jr // nr % 2 == 1 and jr + nr <= nc
        for ir_ in range((mc + MR - 1) // MR):
            ir = ir_ * MR
            m = min(<Py_ssize_t>MR, mc - ir)
            c = C + ir * ldc + jr
            w = n
            if pair or (edge and m <= PN_PAIR_ROWS):
                w = 2 * nr
                pair_tile(m, kc, Ap + ir * a_step, lda, b, ldb_j, nr * b_step, c, ldc, alpha, beta)
            elif paired and m <= PN_PAIR_ROWS:
                continue
            elif 2 * n == vecs * nr:
                tile_kernel(m, vecs, kc, Ap + ir * a_step, lda, b, ldb_j, c, ldc, alpha, beta)
            else:
                tile_kernel(m, vecs, kc, Ap + ir * a_step, lda, b, ldb_j, tile, nr, 1, 0)
                finish_tile(m, n, tile, nr, c, ldc, alpha, beta)
            if ep != NULL:
                epilogue_tile(ep, c, ldc, m, ei + ir, ej + jr, w)
        jr += n


cdef int gemm_block(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, floating alpha,
                    const floating *A, Py_ssize_t rsa, Py_ssize_t csa,
                    const floating *B, Py_ssize_t rsb, Py_ssize_t csb, floating beta,
                    floating *C, Py_ssize_t ldc, const Epilogue *ep, Py_ssize_t ei, Py_ssize_t ej,
                    const floating *Apre, const Unfold *uf, floating *bsum, uint64_t *team) noexcept nogil:
    """One thread's rectangle, C[M × N] = α·op(A)·op(B) + β·C then the epilogue ep (may be
    NULL; C[0, 0] is its element (ei, ej); a tile at a time, an update a block at a time:
    its row calls stay long): the five loops with this thread's packing buffers. Returns 1
    if they could not be allocated. With Apre, op(A) comes prepacked (A, rsa, csa unused);
    with uf, op(B) is that unfolded image (B, rsb, csb unused). With bsum, bsum[j] +=
    Σ_p op(B)[p, j] in order of p, each slice while it is being packed (the bias gradient
    Σ_rows δ of dW = Xᵀ·δ; not with uf).
    With team (the team's block ranges, runtime.h), every thread of the team calls this for
    the whole C and the row blocks are shared as they come: each K slice, every thread
    packs op(B) and takes blocks, its own range's then the others' (pn_team_next), until
    none is left, then a barrier (C's slices stay in order); blocks of about
    M/(TEAM_BLOCKS·nt) rows, so a slower core does fewer. A block is the same tiles on any
    thread, so the same bits. A thread whose buffers could not be allocated takes no
    blocks (the others take its range) but keeps to the barriers, and returns 1.
    Packing pays when a panel is reused many times. A B panel serves ⌈M/MR⌉ tiles and
    an A panel ⌈N/NR⌉, so for few of them an operand already laid out as panels with a
    longer stride (op(B) row-major, op(A) column-major) is read in place; so is a
    single row of A, whose one panel is that row with p-stride csa."""
    cdef Py_ssize_t nr = PN_NR_F32 if floating is float else PN_NR_F64
    cdef Py_ssize_t kcs = even_slice(K, KC, 1)
    cdef Py_ssize_t mcs = even_slice(M, (MC if floating is float else MC // 2) if team == NULL else
                                     max(<Py_ssize_t>MR, M // (TEAM_BLOCKS * pn_team_size())), MR)
    cdef Py_ssize_t ncs = even_slice(N, NC, nr)
    cdef bint a_inplace = Apre == NULL and ((rsa == 1 and N <= INPLACE_PANELS * nr) or M == 1)   # one row: a vector
    cdef bint b_inplace = uf == NULL and csb == 1 and M <= INPLACE_PANELS * MR
    cdef Py_ssize_t jc_, pc_, ic_, jc, pc, ic, nc, kc, mc, jedge, nic = (M + mcs - 1) // mcs
    cdef floating *Ap = <floating *>pn_workspace(PN_WS_PACK_A, mcs * kcs * sizeof(floating)) if Apre == NULL else NULL
    cdef floating *Bp = <floating *>pn_workspace(PN_WS_PACK_B, kcs * ncs * sizeof(floating))
    cdef const floating *Bedge = NULL
    cdef bint by_block = ep != NULL and ep.W != NULL     # an update: a block at a time, not a tile
    cdef bint last, ok = (Ap != NULL or Apre != NULL) and Bp != NULL
    if not ok and team == NULL:
        return 1
    for jc_ in range((N + ncs - 1) // ncs):
        jc = jc_ * ncs
        nc = min(ncs, N - jc)
        jedge = nc // nr * nr
        for pc_ in range((K + kcs - 1) // kcs):
            pc = pc_ * kcs
            kc = min(kcs, K - pc)
            if ok:
                if uf != NULL:
                    pack_B_unfold(kc, nc, uf, pc, jc, Bp)
                elif not b_inplace:
                    pack_B(kc, nc, B + pc * rsb + jc * csb, rsb, csb, Bp)
                elif jedge < nc and M > 1:      # (one row reads its last columns in place)
                    pack_B(kc, nc - jedge, B + pc * rsb + (jc + jedge) * csb, rsb, csb, Bp)
                    Bedge = Bp
                if bsum != NULL:
                    add_column_sums(kc, nc, B + pc * rsb + jc * csb, rsb, csb, bsum + jc)
            if team != NULL:
                pn_team_own(team, nic)
            ic_ = -1 if not ok else (0 if team == NULL else pn_team_next(team))
            while 0 <= ic_ < nic:
                ic = ic_ * mcs
                mc = min(mcs, M - ic)
                if Apre != NULL:
                    Ap = <floating *>Apre + (pc_ * nic + ic_) * mcs * kcs
                elif not a_inplace:
                    pack_A(mc, kc, A + ic * rsa + pc * csa, rsa, csa, Ap)
                last = pc + kc >= K
                macro_kernel(mc, nc, kc, alpha,
                             A + ic * rsa + pc * csa if a_inplace else Ap,
                             1 if a_inplace else kc, csa if a_inplace else MR,
                             B + pc * rsb + jc * csb if b_inplace else Bp,
                             1 if b_inplace else kc, rsb if b_inplace else nr, Bedge,
                             beta if pc == 0 else 1, C + ic * ldc + jc, ldc,
                             ep if last and not by_block else NULL, ei + ic, ej + jc)
                if last and by_block:
                    epilogue_tile(ep, C + ic * ldc + jc, ldc, mc, ei + ic, ej + jc, nc)
                ic_ = ic_ + 1 if team == NULL else pn_team_next(team)
            if team != NULL:
                pn_barrier()
    return 0 if ok else 1


cdef int gemm_grid(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, int nt, Py_ssize_t nr,
                   int *tn) noexcept nogil:
    """The grid gemm and gemm_team cut a K ≥ 1 product into: C (M × N, mu MR-row panels ×
    nu nr-column panels) in tm × tn rectangles for at most nt threads; returns tm. Cost of
    a grid, in multiply-adds of its busiest thread: the kernel's share bm·bn·K (bm = min(M,
    ⌈mu/tm⌉·MR) rows, bn likewise: one row of prediction is one row of work, not a panel's)
    plus PACK_COST per element it packs."""
    cdef Py_ssize_t mu = (M + MR - 1) // MR, nu = (N + nr - 1) // nr
    cdef int tm, cols, best_tm = 1
    cdef double bm, bn, cost, best = -1
    tn[0] = 1
    for tm in range(1, nt + 1):
        cols = nt // tm
        if tm > mu or cols > nu:
            continue
        bm = <double>min(M, (mu + tm - 1) // tm * MR)
        bn = <double>min(N, (nu + cols - 1) // cols * nr)
        if tm * cols > 1 and bm * bn * K < MIN_TASK_FMA:
            continue
        cost = bm * bn * K + PACK_COST * (bm + bn) * K
        if best < 0 or cost < best * 0.98:
            best, best_tm, tn[0] = cost, tm, cols
    return best_tm


cdef struct Rect:
    Py_ssize_t m0, m1, n0, n1     # rows [m0, m1) and columns [n0, n1) of C


cdef inline Rect grid_rect(int t, int tm, int tn, Py_ssize_t M, Py_ssize_t N, Py_ssize_t nr) noexcept nogil:
    """Rectangle t (row-major) of the tm × tn grid over C (M × N), edges on MR and nr."""
    cdef Py_ssize_t mu = (M + MR - 1) // MR, nu = (N + nr - 1) // nr
    cdef Rect q
    q.m0, q.m1 = min(M, t // tn * mu // tm * MR), min(M, (t // tn + 1) * mu // tm * MR)
    q.n0, q.n1 = min(N, t % tn * nu // tn * nr), min(N, (t % tn + 1) * nu // tn * nr)
    return q


cdef void gemm_no_k(Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t N, floating beta, floating *C,
                    Py_ssize_t ldc, const Epilogue *ep) noexcept nogil:
    """Rows [i0, i1) of C = β·C then the epilogue: the product of an empty sum (K = 0)."""
    cdef Py_ssize_t i, j
    for i in range(i0, i1):
        for j in range(N):
            C[i * ldc + j] = beta * C[i * ldc + j] if beta != 0 else 0
        if ep != NULL:
            epilogue_row(ep, C + i * ldc, i, 0, N)


cdef int gemm_team(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                   floating alpha, const floating *A, Py_ssize_t lda, const floating *B,
                   Py_ssize_t ldb, floating beta, floating *C, Py_ssize_t ldc,
                   const Epilogue *ep, floating *bsum, uint64_t *team, int tid, int nt) noexcept nogil:
    """Thread tid's share, as one of nt threads, of C = α·op(A)·op(B) + β·C and the epilogue
    ep (NULL: none): its rectangle of the grid gemm_grid cuts C into (with K = 0, its rows).
    In a team (team: its block ranges, runtime.h), a grid of nt row bands over at least
    TEAM_BLOCKS·MR rows a thread is run as row blocks taken as they come (gemm_block), so a
    core slowed by other work does less of it; bsum is then made by thread 0 alone.
    With bsum (M ≥ 1, K ≥ 1), bsum[j] = Σ_p op(B)[p, j] in order of p: the rectangles of the
    grid's first row zero and sum their columns. gemm runs the shares in a parallel region of
    its own; a thread team already running (train_loop.pxi) calls it from each of its
    threads and puts a barrier before C is read. A tile is the same tile in any share, so
    the result never depends on nt. Returns 1 when a work buffer could not be allocated."""
    cdef Py_ssize_t nr = PN_NR_F32 if floating is float else PN_NR_F64, j
    cdef Py_ssize_t rsa = 1 if trans_a else lda, csa = lda if trans_a else 1
    cdef Py_ssize_t rsb = 1 if trans_b else ldb, csb = ldb if trans_b else 1
    cdef int tm, tn
    cdef Share sh
    cdef Rect q
    if M == 0 or N == 0:
        return 0
    if K == 0:
        sh = team_share(M, tid, nt)
        gemm_no_k(sh.a, sh.b, N, beta, C, ldc, ep)
        return 0
    tm = gemm_grid(M, N, K, nt, nr, &tn)
    if team != NULL and 1 < nt <= PN_TEAM_MAX and tm == nt and tn == 1 and M >= TEAM_BLOCKS * MR * nt:
        if bsum != NULL and tid == 0:
            for j in range(N):
                bsum[j] = 0
        return gemm_block(M, N, K, alpha, A, rsa, csa, B, rsb, csb, beta, C, ldc, ep, 0, 0,
                          <const floating *>NULL, <const Unfold *>NULL, bsum if tid == 0 else NULL, team)
    if tid >= tm * tn:
        return 0
    q = grid_rect(tid, tm, tn, M, N, nr)
    if q.m1 <= q.m0 or q.n1 <= q.n0:
        return 0
    if bsum != NULL and q.m0 == 0:
        for j in range(q.n0, q.n1):
            bsum[j] = 0
    return gemm_block(q.m1 - q.m0, q.n1 - q.n0, K, alpha, A + q.m0 * rsa, rsa, csa, B + q.n0 * csb,
                      rsb, csb, beta, C + q.m0 * ldc + q.n0, ldc, ep, q.m0, q.n0, <const floating *>NULL,
                      <const Unfold *>NULL, bsum + q.n0 if bsum != NULL and q.m0 == 0 else NULL, NULL)


cdef inline Py_ssize_t k_slices(Py_ssize_t K) noexcept nogil:
    """How many KC slices gemm_block cuts K into."""
    cdef Py_ssize_t kcs = even_slice(K, KC, 1)
    return (K + kcs - 1) // kcs


cdef inline bint team_cuts_k(Py_ssize_t M, Py_ssize_t K, int nt) noexcept nogil:
    """Whether a team of nt threads runs C = A·B (M × K times K × N) as gemm_k_slices: at
    least two slices, and their products (S·M rows of N) far smaller than B (K rows of N), so
    that the pass summing them costs less than what a split of B's columns loses: a share of
    columns reads half of every B row, and the update that writes B's rows afterwards, by
    the grid of dW = Xᵀ·δ (rows of B), then waits on lines the other core holds (4–5× slower
    on the 2-core Zen 1 here; the 784-256-128-10 step at batch 32: 745 → 590 µs)."""
    return nt > 1 and K > KC and 4 * M * k_slices(K) <= K


cdef inline Py_ssize_t k_slices_values(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K) noexcept nogil:
    """The values of P gemm_k_slices needs for every product of at most M rows (times K × N)
    that team_cuts_k accepts; 0 when it accepts none."""
    return k_slices(K) * min(M, K // (4 * k_slices(K))) * N if K > KC else 0


cdef int gemm_k_slices(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating *A,
                       Py_ssize_t rsa, Py_ssize_t csa, const floating *B, Py_ssize_t rsb,
                       Py_ssize_t csb, floating *C, Py_ssize_t ldc, const Epilogue *ep,
                       floating *P, int tid, int nt) noexcept nogil:
    """Thread tid's part, in a team of nt, of C = op(A)·op(B) then ep (α = 1, β = 0), cut along
    gemm_block's K slices s = 0..S−1 (P: S·M·N values shared by the team):
        P_s = op(A)[:, slice s]·op(B)[slice s, :]    a thread's slices are consecutive rows of
                                                     B, so its share stays in its own cache
        C = ((P_0 + P_1) + P_2) + …                  after a barrier, by rows (one row: by
                                                     columns), then ep
    gemm_block forms the same sums in the same order (its β = 1 passes add P_s to C): the
    bits of one thread. Returns 1 when a work buffer could not be allocated."""
    cdef Py_ssize_t kcs = even_slice(K, KC, 1), S = (K + kcs - 1) // kcs, MN = M * N, s, i, j
    cdef floating *c
    cdef const floating *p
    cdef int failed = 0
    cdef Share sh = team_share(S, tid, nt), rows, cols
    for s in range(sh.a, sh.b):
        failed |= gemm_block(M, N, min(kcs, K - s * kcs), 1, A + s * kcs * csa, rsa, csa,
                             B + s * kcs * rsb, rsb, csb, 0, P + s * MN, N, NULL, 0, 0,
                             <const floating *>NULL, <const Unfold *>NULL, <floating *>NULL, NULL)
    pn_barrier()
    rows, cols = team_share(M, tid, nt), team_share(N, 0, 1)
    if M == 1:
        rows, cols = team_share(1, 0, 1), team_share(N, tid, nt)
    for i in range(rows.a, rows.b):
        c, p = C + i * ldc, P + i * N
        for j in range(cols.a, cols.b):
            c[j] = p[j]
        for s in range(1, S):
            for j in range(cols.a, cols.b):
                c[j] = c[j] + p[s * MN + j]
    if ep != NULL and rows.b > rows.a and cols.b > cols.a:
        epilogue_tile(ep, C + rows.a * ldc + cols.a, ldc, rows.b - rows.a, rows.a, cols.a, cols.b - cols.a)
    return failed


cdef int row_k_slices(Py_ssize_t N, Py_ssize_t K, const floating *A, Py_ssize_t csa,
                      const floating *B, Py_ssize_t rsb, Py_ssize_t csb, floating *C,
                      const Epilogue *ep, int nt) noexcept nogil:
    """One row, C = op(A)·op(B) then ep (α = 1, β = 0), as gemm_k_slices in a parallel region
    of its own (≤ nt threads, at most one per slice). Returns 1 when a work buffer could not
    be allocated."""
    cdef Py_ssize_t S = k_slices(K)
    cdef floating *P = <floating *>pn_workspace(PN_WS_ROW_SLICES, S * N * sizeof(floating))
    cdef int tid
    cdef int failed[1]             # set by any thread (a plain local would be thread-private)
    if P == NULL:
        return 1
    failed[0] = 0
    with parallel(num_threads=<int>min(<Py_ssize_t>nt, S)):
        tid = threadid()
        if gemm_k_slices(1, N, K, A, csa, csa, B, rsb, csb, C, N, ep, P, tid, pn_team_size()):
            failed[0] = 1
    return failed[0]


cdef int gemm(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
              floating alpha, const floating *A, Py_ssize_t lda, const floating *B,
              Py_ssize_t ldb, floating beta, floating *C, Py_ssize_t ldc,
              const Epilogue *ep, floating *bsum, int nt) noexcept nogil:
    """C = α·op(A)·op(B) + β·C, then the epilogue ep (NULL: none), and bsum if given
    (gemm_team), on at most nt threads: one parallel region, a share per thread (one row
    with α = 1, β = 0 and at least two K slices whose products fit ROW_SLICES_MAX: a share of
    the slices, row_k_slices).
    Returns 0, or 1 when a work buffer could not be allocated."""
    cdef Py_ssize_t nr = PN_NR_F32 if floating is float else PN_NR_F64, t
    cdef int tn, tasks, err = 0
    if M == 0 or N == 0:
        return 0
    if (M == 1 and nt > 1 and alpha == 1 and beta == 0 and bsum == NULL and K > KC
            and N * K >= 2 * MIN_TASK_FMA and N * ((K + KC - 1) // KC) <= ROW_SLICES_MAX):
        return row_k_slices(N, K, A, lda if trans_a else 1, B, 1 if trans_b else ldb,
                            ldb if trans_b else 1, C, ep, nt)
    tasks = nt if K == 0 else gemm_grid(M, N, K, nt, nr, &tn) * tn
    if tasks == 1:
        return gemm_team(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ep, bsum, NULL, 0, nt)
    for t in prange(tasks, num_threads=tasks, schedule="static"):
        err += gemm_team(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ep, bsum, NULL, <int>t, nt)
    return 1 if err else 0


cdef void _gemm_arrays(bint ta, bint tb, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                       floating alpha, cnp.ndarray A, cnp.ndarray B, floating beta,
                       cnp.ndarray C) except *:
    cdef int err, nt = _nthreads()
    cdef const floating *pA = <const floating *>cnp.PyArray_DATA(A)
    cdef const floating *pB = <const floating *>cnp.PyArray_DATA(B)
    cdef floating *pC = <floating *>cnp.PyArray_DATA(C)
    cdef Py_ssize_t lda = cnp.PyArray_DIM(A, 1), ldb = cnp.PyArray_DIM(B, 1)
    with nogil:
        err = gemm(ta, tb, M, N, K, alpha, pA, lda, pB, ldb, beta, pC, N, NULL, <floating *>NULL, nt)
    if err:
        raise MemoryError("gemm: could not allocate its packing buffers")


def gemm_into(A, B, C, bint trans_a=False, bint trans_b=False, double alpha=1.0, double beta=0.0):
    """C = α·op(A)·op(B) + β·C in place; op(X) = Xᵀ when trans_x. A, B, C: C-contiguous
    2-d arrays of one float dtype; C is written (with β = 0 it is not read)."""
    _float_array("A", A, 2)
    _float_array("B", B, 2)
    _float_array("C", C, 2, True)
    cdef int t = cnp.PyArray_TYPE(<cnp.ndarray>C)
    if cnp.PyArray_TYPE(<cnp.ndarray>A) != t or cnp.PyArray_TYPE(<cnp.ndarray>B) != t:
        _same_dtype("gemm", ["A", "B", "C"], [A, B, C])
    cdef cnp.npy_intp *sa = cnp.PyArray_DIMS(<cnp.ndarray>A)
    cdef cnp.npy_intp *sb = cnp.PyArray_DIMS(<cnp.ndarray>B)
    cdef cnp.npy_intp *sc = cnp.PyArray_DIMS(<cnp.ndarray>C)
    cdef Py_ssize_t M = sa[1] if trans_a else sa[0], KA = sa[0] if trans_a else sa[1]
    cdef Py_ssize_t KB = sb[1] if trans_b else sb[0], N = sb[0] if trans_b else sb[1]
    if KA != KB:
        raise ValueError(f"gemm: inner dimensions differ: op(A) is {M}x{KA}, op(B) is {KB}x{N}")
    if sc[0] != M or sc[1] != N:
        raise ValueError(f"C: expected shape {(M, N)}, got {C.shape}")
    if M == 0 or N == 0:
        return C
    if t == cnp.NPY_FLOAT32:
        _gemm_arrays[float](trans_a, trans_b, M, N, KA, <float>alpha, A, B, <float>beta, C)
    else:
        _gemm_arrays[double](trans_a, trans_b, M, N, KA, alpha, A, B, beta, C)
    return C


def _team_blocks(long blocks, int nt, int slow=-1):
    """For tests: which thread of a team of nt took each of `blocks` row blocks shared as
    gemm_block shares them (runtime.h's pn_team_own, pn_team_next), and when: thread
    `slow` pauses 2 ms after each of its blocks. Returns took (nt × blocks, int32):
    took[t, k] = i when block k was thread t's i-th (from 1), else 0 (a thread the team
    did not get takes none)."""
    if blocks < 0 or blocks >= 1 << 31 or not 1 <= nt <= PN_TEAM_MAX:
        raise ValueError(f"_team_blocks: expected 0 <= blocks < 2**31 and 1 <= nt <= {PN_TEAM_MAX}, "
                         f"got blocks={blocks}, nt={nt}")
    took = np.zeros((nt, blocks), np.int32)
    cdef int32_t[:, ::1] tk = took
    cdef uint64_t ranges[PN_TEAM_MAX]
    cdef long k
    cdef int t, i
    memset(ranges, 0, sizeof(ranges))
    with nogil, parallel(num_threads=nt):
        t = threadid()
        i = 0
        pn_team_own(ranges, blocks)
        pn_barrier()                  # (so a range is set before anyone could steal from it)
        k = pn_team_next(ranges)
        while k >= 0:
            i = i + 1
            tk[t, k] = i
            if t == slow:
                usleep(2000)
            k = pn_team_next(ranges)
    return took
