/* gemm_pack.h — packing the GEMM's operands into the panels the micro-kernel reads.
 *
 *   A block (mc × kc of op(A), element (i, p) at A[i·rs + p·cs]), MR = 6 row panels:
 *     Ap[ir·kc + p·6 + i] = A[(ir + i)·rs + p·cs]     0 ≤ i < min(6, mc − ir), 0 ≤ p < kc
 *     (a last, shorter panel leaves its missing rows unwritten: its kernel never reads them)
 *   B slice (kc × nc of op(B), element (p, j) at B[p·rs + j·cs]), NR = 2·L column panels:
 *     Bp[jr·kc + p·NR + j] = B[p·rs + (jr + j)·cs]    0 ≤ j < NR (0 past nc), 0 ≤ p < kc
 *
 * L = elements of a 32-byte vector (8 floats, 4 doubles). Packing only moves data, so
 * every variant writes the same bits. Each contiguous direction gets its own path:
 *   A, cs = 1 (op(A) = A): a panel is 6 rows read along p: 6 × L blocks are loaded as six
 *     vectors and transposed in registers (shuffles within 16-byte lanes, then one lane
 *     swap) into L consecutive groups of six;
 *   A, rs = 1 (op(A) = Aᵀ): a panel row p is 6 contiguous elements of A: a straight copy;
 *   B, cs = 1 (op(B) = B): a panel row p is NR contiguous elements: two full vectors;
 *   B, rs = 1 (op(B) = Bᵀ): a panel is NR rows of B read along p: L × L blocks transposed
 *     in registers (unpack, shuffle, lane swap).
 * Edges (a short panel, the k mod L tail) are copied element by element.
 *
 * One source, compiled per instruction set by cpu_dispatch.h (which includes this file):
 * with AVX2 the 32-byte vectors are single registers; on the baseline ISA GCC splits
 * them into SSE pairs (all but the lane swap stay within 16 bytes, so that is cheap).
 * Defined here, SUF = f32_generic, f64_generic, f32_avx2, f64_avx2:
 *   pn_pack_a_SUF(mc, kc, A, rs, cs, Ap)     pn_pack_b_SUF(kc, nc, B, rs, cs, Bp)
 */
#ifndef PYNEURO_GEMM_PACK_H
#define PYNEURO_GEMM_PACK_H

#ifndef PN_HAVE_AVX2_KERNEL
#error "include cpu_dispatch.h: it says which instruction sets to build the packing for"
#endif

#include <string.h>

typedef int pn_v8i __attribute__((vector_size(32)));
typedef int pn_v4i __attribute__((vector_size(16)));
typedef long long pn_v4l __attribute__((vector_size(32)));
typedef long long pn_v2l __attribute__((vector_size(16)));
#define PN_CAT_(a, b) a##b
#define PN_CAT(a, b) PN_CAT_(a, b)

/* Shuffle masks written for one 16-byte lane (indices of the pair (x, y): x₀.. then y₀..),
 * widened to W-byte vectors: the same shuffle in every lane. */
#define PN_L0(x, H) ((x) < (H) ? (x) : (x) + (H))          /* lane 0 of a 2-lane pair */
#define PN_L1(x, H) ((x) < (H) ? (x) + (H) : (x) + 2 * (H)) /* lane 1                  */
#define PN_MASK4_16(a, b, c, d) ((pn_v4i){a, b, c, d})
#define PN_MASK4_32(a, b, c, d) ((pn_v8i){PN_L0(a, 4), PN_L0(b, 4), PN_L0(c, 4), PN_L0(d, 4), \
                                          PN_L1(a, 4), PN_L1(b, 4), PN_L1(c, 4), PN_L1(d, 4)})
#define PN_MASK2_16(a, b) ((pn_v2l){a, b})
#define PN_MASK2_32(a, b) ((pn_v4l){PN_L0(a, 2), PN_L0(b, 2), PN_L1(a, 2), PN_L1(b, 2)})
/* g[0..5] → o[0..5] in memory order: W = 16, as they are; W = 32, the low lanes of all six
 * (the first columns of the block), then their high lanes. IV: the mask type. */
#define PN_LANES_16(g, o, IV)                                                               \
    do {                                                                                    \
        for (int j = 0; j < 6; j++) o[j] = g[j];                                            \
    } while (0)
#define PN_LANES_32(g, o, IV)                                                               \
    do {                                                                                    \
        enum { H = sizeof(IV) / sizeof(((IV){0})[0]) / 2 };                                 \
        IV m_lo, m_hi;                                                                      \
        for (int e = 0; e < H; e++) m_lo[e] = e, m_lo[e + H] = e + 2 * H;                   \
        for (int e = 0; e < H; e++) m_hi[e] = e + H, m_hi[e + H] = e + 3 * H;               \
        _Pragma("GCC unroll 3")                                                             \
        for (int j = 0; j < 3; j++) {                                                       \
            o[j] = __builtin_shuffle(g[2 * j], g[2 * j + 1], m_lo);                         \
            o[j + 3] = __builtin_shuffle(g[2 * j], g[2 * j + 1], m_hi);                     \
        }                                                                                   \
    } while (0)

/* 6 rows r[0..5] of L columns (W-byte vectors) → o[0..5]: the L groups of six (panel
 * rows c, c+1, ...) in memory order. In each 16-byte lane: a 4×4 (float) or 2×2 (double)
 * transpose of rows 0..3 / pairs of rows, rows 4, 5 interleaved in; then PN_LANES_W. */
#define PN_A6_BLOCK_F32(r, o, W)                                                            \
    do {                                                                                    \
        vec a = __builtin_shuffle(r[0], r[1], PN_CAT(PN_MASK4_, W)(0, 4, 1, 5));  /* r0a r1a r0b r1b */ \
        vec b = __builtin_shuffle(r[2], r[3], PN_CAT(PN_MASK4_, W)(0, 4, 1, 5));  /* r2a r3a r2b r3b */ \
        vec c = __builtin_shuffle(r[0], r[1], PN_CAT(PN_MASK4_, W)(2, 6, 3, 7));  /* r0c r1c r0d r1d */ \
        vec d = __builtin_shuffle(r[2], r[3], PN_CAT(PN_MASK4_, W)(2, 6, 3, 7));  /* r2c r3c r2d r3d */ \
        vec t0 = __builtin_shuffle(a, b, PN_CAT(PN_MASK4_, W)(0, 1, 4, 5));                 \
        vec t1 = __builtin_shuffle(a, b, PN_CAT(PN_MASK4_, W)(2, 3, 6, 7));                 \
        vec t2 = __builtin_shuffle(c, d, PN_CAT(PN_MASK4_, W)(0, 1, 4, 5));                 \
        vec t3 = __builtin_shuffle(c, d, PN_CAT(PN_MASK4_, W)(2, 3, 6, 7));                 \
        vec ulo = __builtin_shuffle(r[4], r[5], PN_CAT(PN_MASK4_, W)(0, 4, 1, 5)); /* r4a r5a r4b r5b */ \
        vec uhi = __builtin_shuffle(r[4], r[5], PN_CAT(PN_MASK4_, W)(2, 6, 3, 7)); /* r4c r5c r4d r5d */ \
        vec g[6] = {t0, __builtin_shuffle(ulo, t1, PN_CAT(PN_MASK4_, W)(0, 1, 4, 5)),       \
                    __builtin_shuffle(t1, ulo, PN_CAT(PN_MASK4_, W)(2, 3, 6, 7)),           \
                    t2, __builtin_shuffle(uhi, t3, PN_CAT(PN_MASK4_, W)(0, 1, 4, 5)),       \
                    __builtin_shuffle(t3, uhi, PN_CAT(PN_MASK4_, W)(2, 3, 6, 7))};          \
        PN_CAT(PN_LANES_, W)(g, o, __typeof__(PN_CAT(PN_MASK4_, W)(0, 0, 0, 0)));           \
    } while (0)
#define PN_A6_BLOCK_F64(r, o, W)                                                            \
    do {                                                                                    \
        vec g[6];                                                                           \
        _Pragma("GCC unroll 3")                                                             \
        for (int i = 0; i < 3; i++) {                                                       \
            g[i] = __builtin_shuffle(r[2 * i], r[2 * i + 1], PN_CAT(PN_MASK2_, W)(0, 2));     /* column c   */ \
            g[i + 3] = __builtin_shuffle(r[2 * i], r[2 * i + 1], PN_CAT(PN_MASK2_, W)(1, 3)); /* column c+1 */ \
        }                                                                                   \
        PN_CAT(PN_LANES_, W)(g, o, __typeof__(PN_CAT(PN_MASK2_, W)(0, 0)));                 \
    } while (0)

/* L × L transpose: r[i] = row i → o[c] = column c. */
#define PN_TRANSPOSE_F32(r, o)                                                              \
    do {                                                                                    \
        const pn_v8i lo = {0, 8, 1, 9, 4, 12, 5, 13}, hi = {2, 10, 3, 11, 6, 14, 7, 15};    \
        const pn_v8i l2 = {0, 1, 8, 9, 4, 5, 12, 13}, h2 = {2, 3, 10, 11, 6, 7, 14, 15};    \
        const pn_v8i l4 = {0, 1, 2, 3, 8, 9, 10, 11}, h4 = {4, 5, 6, 7, 12, 13, 14, 15};    \
        vec t[8], u[8];                                                                     \
        _Pragma("GCC unroll 4")                                                             \
        for (int i = 0; i < 4; i++) {                                                       \
            t[2 * i] = __builtin_shuffle(r[2 * i], r[2 * i + 1], lo);                       \
            t[2 * i + 1] = __builtin_shuffle(r[2 * i], r[2 * i + 1], hi);                   \
        }                                                                                   \
        _Pragma("GCC unroll 2")                                                             \
        for (int i = 0; i < 2; i++)                                                         \
            _Pragma("GCC unroll 2")                                                         \
            for (int h = 0; h < 2; h++) {                                                   \
                u[4 * i + 2 * h] = __builtin_shuffle(t[4 * i + h], t[4 * i + h + 2], l2);   \
                u[4 * i + 2 * h + 1] = __builtin_shuffle(t[4 * i + h], t[4 * i + h + 2], h2); \
            }                                                                               \
        _Pragma("GCC unroll 4")                                                             \
        for (int c = 0; c < 4; c++) {                                                       \
            o[c] = __builtin_shuffle(u[c], u[c + 4], l4);                                   \
            o[c + 4] = __builtin_shuffle(u[c], u[c + 4], h4);                               \
        }                                                                                   \
    } while (0)
#define PN_TRANSPOSE_F64(r, o)                                                              \
    do {                                                                                    \
        const pn_v4l lo = {0, 4, 2, 6}, hi = {1, 5, 3, 7};                                  \
        const pn_v4l l2 = {0, 1, 4, 5}, h2 = {2, 3, 6, 7};                                  \
        vec t0 = __builtin_shuffle(r[0], r[1], lo), t1 = __builtin_shuffle(r[0], r[1], hi); \
        vec t2 = __builtin_shuffle(r[2], r[3], lo), t3 = __builtin_shuffle(r[2], r[3], hi); \
        o[0] = __builtin_shuffle(t0, t2, l2);                                               \
        o[2] = __builtin_shuffle(t0, t2, h2);                                               \
        o[1] = __builtin_shuffle(t1, t3, l2);                                               \
        o[3] = __builtin_shuffle(t1, t3, h2);                                               \
    } while (0)

#define PN_DEFINE_PACK(SUF, T, ATTR, W, A6_BLOCK, BT, TRANSPOSE)                                 \
    ATTR static void pn_pack_a_##SUF(long mc, long kc, const T *restrict A, long rs, long cs, \
                                     T *restrict Ap) {                                      \
        typedef T vec __attribute__((vector_size(W)));                                      \
        typedef T uvec __attribute__((vector_size(W), aligned(sizeof(T)), may_alias));      \
        enum { L = W / sizeof(T) };                                                         \
        for (long ir = 0; ir < mc; ir += 6) {                                               \
            const T *src = A + ir * rs;                                                     \
            T *dst = Ap + ir * kc;                                                          \
            long m = mc - ir < 6 ? mc - ir : 6, p = 0;                                      \
            if (m == 6 && cs == 1) {           /* rows along p: transpose 6 × L blocks */   \
                for (; p + L <= kc; p += L) {                                               \
                    vec r[6], o[6];                                                         \
                    _Pragma("GCC unroll 6")                                                 \
                    for (int i = 0; i < 6; i++) r[i] = *(const uvec *)(src + i * rs + p);   \
                    A6_BLOCK(r, o, W);                                                         \
                    _Pragma("GCC unroll 6")                                                 \
                    for (int j = 0; j < 6; j++) *(uvec *)(dst + p * 6 + j * L) = o[j];      \
                }                                                                           \
            } else if (m == 6 && rs == 1) {    /* Aᵀ: panel row p is contiguous in A */     \
                for (; p < kc; p++) memcpy(dst + p * 6, src + p * cs, 6 * sizeof(T));       \
            }                                                                               \
            for (; p < kc; p++)                                                             \
                for (long i = 0; i < m; i++) dst[p * 6 + i] = src[i * rs + p * cs];         \
        }                                                                                   \
    }                                                                                       \
    ATTR static void pn_pack_b_##SUF(long kc, long nc, const T *restrict B, long rs, long cs, \
                                     T *restrict Bp) {                                      \
        typedef T vec __attribute__((vector_size(32)));                                     \
        typedef T uvec __attribute__((vector_size(32), aligned(sizeof(T)), may_alias));     \
        enum { L = 32 / sizeof(T), NR = 2 * L };                                            \
        for (long jr = 0; jr < nc; jr += NR) {                                              \
            const T *src = B + jr * cs;                                                     \
            T *dst = Bp + jr * kc;                                                          \
            long n = nc - jr < NR ? nc - jr : NR, p = 0;                                    \
            if (n == NR && cs == 1) {          /* panel row p: NR contiguous elements */    \
                for (; p < kc; p++) {                                                       \
                    vec v0 = *(const uvec *)(src + p * rs), v1 = *(const uvec *)(src + p * rs + L); \
                    *(uvec *)(dst + p * NR) = v0;                                           \
                    *(uvec *)(dst + p * NR + L) = v1;                                       \
                }                                                                           \
            } else if (BT && n == NR && rs == 1) { /* Bᵀ: L × L transposes */ \
                for (; p + L <= kc; p += L)                                                 \
                    _Pragma("GCC unroll 2")                                                 \
                    for (int h = 0; h < 2; h++) {                                           \
                        vec r[L], o[L];                                                     \
                        _Pragma("GCC unroll 8")                                             \
                        for (int i = 0; i < L; i++) r[i] = *(const uvec *)(src + (h * L + i) * cs + p); \
                        TRANSPOSE(r, o);                                                 \
                        _Pragma("GCC unroll 8")                                             \
                        for (int c = 0; c < L; c++) *(uvec *)(dst + (p + c) * NR + h * L) = o[c]; \
                    }                                                                       \
            }                                                                               \
            for (; p < kc; p++) {                                                           \
                for (long j = 0; j < n; j++) dst[p * NR + j] = src[p * rs + j * cs];        \
                for (long j = n; j < NR; j++) dst[p * NR + j] = 0;                          \
            }                                                                               \
        }                                                                                   \
    }

PN_DEFINE_PACK(f32_generic, float, , 16, PN_A6_BLOCK_F32, 0, PN_TRANSPOSE_F32)
PN_DEFINE_PACK(f64_generic, double, , 16, PN_A6_BLOCK_F64, 0, PN_TRANSPOSE_F64)
#if PN_HAVE_AVX2_KERNEL
PN_DEFINE_PACK(f32_avx2, float, PN_AVX2, 32, PN_A6_BLOCK_F32, 1, PN_TRANSPOSE_F32)
PN_DEFINE_PACK(f64_avx2, double, PN_AVX2, 32, PN_A6_BLOCK_F64, 1, PN_TRANSPOSE_F64)
#endif

#endif
