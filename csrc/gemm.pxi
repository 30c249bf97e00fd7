# gemm.pxi — general matrix multiply, BLIS-style.
#
#   C = α·op(A)·op(B) + β·C        op(A): M×K, op(B): K×N, C: M×N (row stride ldc)
#   op(X) = X or Xᵀ, taken by strides while packing: no transposed copy is ever made.
#
# Loops, outermost first (the five loops around the micro-kernel):
#   jc  over N in NC-column slabs      B slab packed once:   KC × NC in NR-wide panels
#   pc  over K in KC-deep slices       (fixed order: C's sum over k never depends on threads)
#   ic  over M in MC-row blocks   ┐    A block packed per task: MC × KC in MR-tall panels
#   jr  over NR-column panels     ┘    tasks = (ic block, group of panels), spread over threads
#   ir  over MR-row panels             micro-kernel: MR × NR tile in registers
# Every element of C is computed by exactly one task in one fixed order, so the
# result is bitwise the same for any thread count.
#
# Epilogue: on the last KC slice a tile is still in L1 when it is finished, so the
# Dense forward adds the bias and applies the activation there:
#   Z = C + b (row-broadcast),  Aout = f(Z).
#
# Blocking for this machine (L1d 32 KiB, L2 512 KiB per core, shared L3), one place:
#   KC = 256: an MR×KC A panel (6 KiB f32) and an NR×KC B panel (16 KiB) fit L1 together
#   MC = 96:  the packed A block MC×KC is 96 KiB (f32) / 192 KiB (f64), inside L2
#   NC = 4096: the packed B slab KC×NC is 4 MiB (f32) / 8 MiB (f64), in L3

cdef extern from "gemm_microkernel.h" nogil:
    enum:
        PN_MR
        PN_NR_F32
        PN_NR_F64
    void pn_ukernel_f32(long k, const float *a, const float *b, float *c)
    void pn_ukernel_f64(long k, const double *a, const double *b, double *c)
    int pn_gemm_isa
    void pn_gemm_select(int isa)

cdef enum:
    MR = PN_MR
    KC = 256
    MC = 96
    NC = 4096
    TILE_MAX = PN_MR * PN_NR_F32


def gemm_kernel():
    """The micro-kernel in use: 'avx2' (AVX2+FMA) or 'generic' (any CPU)."""
    return "avx2" if pn_gemm_isa == 1 else "generic"


def set_gemm_kernel(name):
    """Choose the GEMM micro-kernel: 'auto' (best this CPU supports), 'avx2' or 'generic'.
    'avx2' on a CPU without AVX2+FMA raises ValueError."""
    if name == "auto":
        pn_gemm_select(1 if pn_cpu_has_avx2_fma() else 0)
    elif name == "avx2":
        if not pn_cpu_has_avx2_fma():
            raise ValueError("set_gemm_kernel: 'avx2' asked for, but this CPU lacks AVX2+FMA")
        pn_gemm_select(1)
    elif name == "generic":
        pn_gemm_select(0)
    else:
        raise ValueError(f"set_gemm_kernel: expected 'auto', 'avx2' or 'generic', got {name!r}")


cdef inline void pack_A(Py_ssize_t mc, Py_ssize_t kc, const floating *A, Py_ssize_t rs,
                        Py_ssize_t cs, floating *Ap) noexcept nogil:
    """Ap[ir·kc + p·MR + i] = A[(ir+i)·rs + p·cs]: MR-tall panels, rows past mc are 0."""
    cdef Py_ssize_t q, ir, i, p, m
    cdef floating *dst
    for q in range((mc + MR - 1) // MR):
        ir = q * MR
        m = min(<Py_ssize_t>MR, mc - ir)
        dst = Ap + ir * kc
        for i in range(m):
            for p in range(kc):
                dst[p * MR + i] = A[(ir + i) * rs + p * cs]
        for i in range(m, MR):
            for p in range(kc):
                dst[p * MR + i] = 0


cdef inline void pack_B(Py_ssize_t kc, Py_ssize_t n, Py_ssize_t nr, const floating *B,
                        Py_ssize_t rs, Py_ssize_t cs, floating *Bp) noexcept nogil:
    """Bp[p·nr + j] = B[p·rs + j·cs] for one nr-wide panel; columns past n are 0."""
    cdef Py_ssize_t j, p
    for p in range(kc):
        for j in range(n):
            Bp[p * nr + j] = B[p * rs + j * cs]
        for j in range(n, nr):
            Bp[p * nr + j] = 0


cdef inline void epilogue_row(floating *Z, const floating *bias, int act, floating act_alpha,
                              floating *Aout, Py_ssize_t n) noexcept nogil:
    """Z += b, then Aout = f(Z), for one row segment of n (bias/Aout may be NULL)."""
    cdef Py_ssize_t j
    if bias != NULL:
        for j in range(n):
            Z[j] += bias[j]
    if Aout != NULL:
        act_forward(act, act_alpha, Z, Aout, n)


cdef int gemm_task(Py_ssize_t i0, Py_ssize_t mc, Py_ssize_t jp0, Py_ssize_t jp1, Py_ssize_t jc,
                   Py_ssize_t nc, Py_ssize_t kc, floating alpha, const floating *A,
                   Py_ssize_t rsa, Py_ssize_t csa, const floating *Bp, floating beta,
                   floating *C, Py_ssize_t ldc, bint last, const floating *bias, int act,
                   floating act_alpha, floating *Aout, Py_ssize_t ldo) noexcept nogil:
    """One task: pack the A block (rows i0..i0+mc) and update C's tiles in panels jp0..jp1."""
    cdef Py_ssize_t nr = PN_NR_F32 if floating is float else PN_NR_F64
    cdef Py_ssize_t jp, q, ir, i, j, j0, m, n
    cdef floating tile[TILE_MAX]
    cdef floating *c
    cdef floating *Ap = <floating *>pn_workspace(0, MC * KC * sizeof(floating))
    if Ap == NULL:
        return 1
    pack_A(mc, kc, A, rsa, csa, Ap)
    for jp in range(jp0, jp1):
        j0 = jp * nr
        n = min(nr, nc - j0)
        for q in range((mc + MR - 1) // MR):
            ir = q * MR
            m = min(<Py_ssize_t>MR, mc - ir)
            if floating is float:
                pn_ukernel_f32(kc, Ap + ir * kc, Bp + j0 * kc, tile)
            else:
                pn_ukernel_f64(kc, Ap + ir * kc, Bp + j0 * kc, tile)
            for i in range(m):
                c = C + (i0 + ir + i) * ldc + jc + j0
                if beta == 0:
                    for j in range(n):
                        c[j] = alpha * tile[i * nr + j]
                else:
                    for j in range(n):
                        c[j] = alpha * tile[i * nr + j] + beta * c[j]
                if last:
                    epilogue_row(c, bias + jc + j0 if bias != NULL else NULL, act, act_alpha,
                                 Aout + (i0 + ir + i) * ldo + jc + j0 if Aout != NULL else NULL, n)
    return 0


cdef int gemm(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
              floating alpha, const floating *A, Py_ssize_t lda, const floating *B,
              Py_ssize_t ldb, floating beta, floating *C, Py_ssize_t ldc,
              const floating *bias, int act, floating act_alpha, floating *Aout,
              Py_ssize_t ldo, int nt) noexcept nogil:
    """C = α·op(A)·op(B) + β·C, then the epilogue (bias, activation) if asked.
    Returns 0, or 1 when a work buffer could not be allocated."""
    cdef Py_ssize_t nr = PN_NR_F32 if floating is float else PN_NR_F64
    cdef Py_ssize_t rsa = 1 if trans_a else lda, csa = lda if trans_a else 1
    cdef Py_ssize_t rsb = 1 if trans_b else ldb, csb = ldb if trans_b else 1
    cdef Py_ssize_t qj, qp, jc, pc, nc, kc, npan, jp, n_ic, ngroups, per_group, ntasks, t, ic, g, i, j
    cdef int err = 0
    cdef floating *Bp
    if M == 0 or N == 0:
        return 0
    if K == 0:  # op(A)·op(B) is all zeros: C = β·C
        for i in prange(M, num_threads=nt, schedule="static"):
            for j in range(N):
                C[i * ldc + j] = beta * C[i * ldc + j] if beta != 0 else 0
            epilogue_row(C + i * ldc, bias, act, act_alpha, Aout + i * ldo if Aout != NULL else NULL, N)
        return 0
    Bp = <floating *>pn_workspace(1, KC * NC * sizeof(floating))
    if Bp == NULL:
        return 1
    n_ic = (M + MC - 1) // MC
    for qj in range((N + NC - 1) // NC):
        jc = qj * NC
        nc = min(<Py_ssize_t>NC, N - jc)
        npan = (nc + nr - 1) // nr
        # enough tasks for every thread: split the panels when there are few row blocks
        ngroups = 1 if nt == 1 or n_ic >= 2 * nt else min(npan, (2 * nt + n_ic - 1) // n_ic)
        per_group = (npan + ngroups - 1) // ngroups
        ngroups = (npan + per_group - 1) // per_group
        ntasks = n_ic * ngroups
        for qp in range((K + KC - 1) // KC):
            pc = qp * KC
            kc = min(<Py_ssize_t>KC, K - pc)
            for jp in prange(npan, num_threads=nt, schedule="static"):
                pack_B(kc, min(nr, nc - jp * nr), nr, B + pc * rsb + (jc + jp * nr) * csb,
                       rsb, csb, Bp + jp * nr * kc)
            for t in prange(ntasks, num_threads=nt, schedule="static"):
                ic = t // ngroups
                g = t % ngroups
                err += gemm_task(ic * MC, min(<Py_ssize_t>MC, M - ic * MC), g * per_group,
                                 min(npan, (g + 1) * per_group), jc, nc, kc, alpha,
                                 A + ic * MC * rsa + pc * csa, rsa, csa, Bp,
                                 beta if pc == 0 else 1, C, ldc, pc + kc >= K,
                                 bias, act, act_alpha, Aout, ldo)
    return 1 if err else 0


cdef void _gemm_arrays(bint ta, bint tb, floating alpha, const floating[:, ::1] A,
                       const floating[:, ::1] B, floating beta, floating[:, ::1] C) except *:
    cdef Py_ssize_t K = A.shape[0] if ta else A.shape[1]
    cdef int err, nt = _nthreads()
    cdef const floating *pA = &A[0, 0] if A.shape[0] and A.shape[1] else NULL
    cdef const floating *pB = &B[0, 0] if B.shape[0] and B.shape[1] else NULL
    with nogil:
        err = gemm(ta, tb, C.shape[0], C.shape[1], K, alpha, pA, A.shape[1], pB, B.shape[1],
                   beta, &C[0, 0], C.shape[1], <const floating *>NULL, ACT_IDENTITY, 0,
                   <floating *>NULL, 0, nt)
    if err:
        raise MemoryError("gemm: could not allocate its packing buffers")


def gemm_into(A, B, C, bint trans_a=False, bint trans_b=False, double alpha=1.0, double beta=0.0):
    """C = α·op(A)·op(B) + β·C in place; op(X) = Xᵀ when trans_x. A, B, C: C-contiguous
    2-d arrays of one float dtype; C is written (with β = 0 it is not read)."""
    _float_array("A", A, 2)
    _float_array("B", B, 2)
    _float_array("C", C, 2, True)
    _same_dtype("gemm", ["A", "B", "C"], [A, B, C])
    M, KA = (A.shape[1], A.shape[0]) if trans_a else A.shape
    KB, N = (B.shape[1], B.shape[0]) if trans_b else B.shape
    if KA != KB:
        raise ValueError(f"gemm: inner dimensions differ: op(A) is {M}x{KA}, op(B) is {KB}x{N}")
    _shape("C", C, (M, N))
    if M == 0 or N == 0:
        return C
    if C.dtype == F32:
        _gemm_arrays[float](trans_a, trans_b, <float>alpha, A, B, <float>beta, C)
    else:
        _gemm_arrays[double](trans_a, trans_b, alpha, A, B, beta, C)
    return C


pn_gemm_select(1 if pn_cpu_has_avx2_fma() else 0)
