/* gemm_microkernel.h — the register-blocked heart of the GEMM.
 *
 *   acc[i][j] = Σ_{p<k} a[p·lda + i] · b[p·ldb + j]      0 ≤ i < MR, 0 ≤ j < NR
 *   C[i][j]   = α·acc[i][j] + β·C[i][j]                   (β = 0: C is not read)
 *
 * a is an MR-row panel of op(A) (k × MR, packed: lda = MR), b an NR-column panel
 * of op(B) (k × NR, packed: ldb = NR); both can also be read in place where op(X)
 * already has that layout with a longer stride. C is a tile of the output with
 * row stride ldc: MR × NR, or fewer rows / one vector of columns at the edges.
 * The reduction over p runs in one fixed order, so a tile's value never depends
 * on which thread computed it.
 *
 * One source, two element types, three instruction sets: GCC vector extensions
 * (two vectors per tile row, 12 accumulators in registers) compiled with AVX2+FMA
 * enabled, for the baseline ISA, and with AVX-512 (64-byte vectors, one per panel);
 * which one runs is cpu_dispatch.h's choice (it includes this file). With VPP vectors
 * of L elements to a panel, vector h of a tile row p is read at
 * b + p·ldb + (h mod VPP)·L + ⌊h / VPP⌋·hstep: within a panel, then the next panel
 * hstep elements on. The FMA probe runs the same instruction mix without
 * memory traffic, to measure the machine's peak on the ISA in use.
 *
 * Defined here, per element type and ISA, SUF = f32_generic, f64_generic, f32_avx2, f64_avx2:
 *   pn_tiles_SUF[VECS − 1][ROWS]   the tile kernels, ROWS = 1..MR, VECS = 1, 2
 *   pn_row_SUF                     one row of a product, n columns at once
 *   pn_row_tail_SUF                its last n < NR columns' sums, B read in place
 *   pn_fma_probe_SUF               the FMA probe
 * (the last two also for SUF = f32_avx512, f64_avx512)
 * and ROWS × two whole panels: pn_pairs_f32_avx512[ROWS], pn_pairs_f64_avx512[ROWS], and
 * for a last row panel of ROWS ≤ PN_PAIR_ROWS, pn_edge_pairs_f32_avx2, pn_edge_pairs_f64_avx2.
 */
#ifndef PYNEURO_GEMM_MICROKERNEL_H
#define PYNEURO_GEMM_MICROKERNEL_H

#ifndef PN_HAVE_AVX2_KERNEL
#error "include cpu_dispatch.h: it says which instruction sets to build the kernels for"
#endif

#include <string.h>

#define PN_MR 6                          /* rows of a register tile                */
#define PN_PAIR_ROWS 3                   /* rows ≤ this: an AVX2 edge tile spans two panels */
#define PN_NR_F32 16                     /* columns: two 8-float vectors            */
#define PN_NR_F64 8                      /* columns: two 4-double vectors           */
#define PN_ROW_CHUNK 512                 /* columns whose sums pn_row keeps in L1 at once */
#define PN_ROW_STEP 8                    /* rows of B pn_row reads per pass over its sums */

#define PN_DEFINE_MICROKERNEL(NAME, T, ATTR, ROWS, VECS, VB, VPP)                   \
    ATTR static void NAME(long k, const T *restrict a, long lda, const T *restrict b, \
                          long ldb, long hstep, T *restrict c, long ldc, T alpha, T beta) { \
        typedef T vec __attribute__((vector_size(VB)));                             \
        enum { L = VB / sizeof(T) };                                                \
        vec acc[ROWS][VECS];                                                        \
        for (int i = 0; i < ROWS; i++) {                                            \
            for (int h = 0; h < VECS; h++) acc[i][h] = (vec){0};                    \
            __builtin_prefetch(c + i * ldc, 1);                                     \
            __builtin_prefetch(c + i * ldc + VECS * L - 1, 1);                      \
        }                                                                           \
        for (long p = 0; p < k; p++) {                                              \
            vec bv[VECS];                                                           \
            _Pragma("GCC unroll 8")                                                 \
            for (int h = 0; h < VECS; h++)                                          \
                memcpy(&bv[h], b + p * ldb + h % VPP * L + h / VPP * hstep, sizeof(vec)); \
            /* a[·] − 0 splats the scalar exactly (−0, NaN kept): one broadcast */  \
            _Pragma("GCC unroll 6")                                                 \
            for (int i = 0; i < ROWS; i++) {                                        \
                vec ai = a[p * lda + i] - (vec){0};                                 \
                _Pragma("GCC unroll 8")                                             \
                for (int h = 0; h < VECS; h++) acc[i][h] += ai * bv[h];             \
            }                                                                       \
        }                                                                           \
        vec va = alpha - (vec){0}, vb = beta - (vec){0};                            \
        _Pragma("GCC unroll 6")                                                     \
        for (int i = 0; i < ROWS; i++) {                                            \
            _Pragma("GCC unroll 8")                                                 \
            for (int h = 0; h < VECS; h++) {                                        \
                vec r = va * acc[i][h], old;                                        \
                if (beta != 0) {                                                    \
                    memcpy(&old, c + i * ldc + h * L, sizeof old);                  \
                    r += vb * old;                                                  \
                }                                                                   \
                memcpy(c + i * ldc + h * L, &r, sizeof r);                          \
            }                                                                       \
        }                                                                           \
    }

/* Every tile shape a product needs: ROWS = 1..MR (the last row panel of M) times
 * VECS = 1, 2 (a last column panel of at most NR/2 needs one vector), gathered in
 * a table pn_tiles_SUF[VECS − 1][ROWS]. A short tile does only the arithmetic it keeps.
 * VB: the vector's bytes (32, or 64 for AVX-512). */
#define PN_DEFINE_KERNEL_ROWS(NAME, T, ATTR, V, VB, VPP)                            \
    PN_DEFINE_MICROKERNEL(NAME##_1x##V, T, ATTR, 1, V, VB, VPP)                     \
    PN_DEFINE_MICROKERNEL(NAME##_2x##V, T, ATTR, 2, V, VB, VPP)                     \
    PN_DEFINE_MICROKERNEL(NAME##_3x##V, T, ATTR, 3, V, VB, VPP)                     \
    PN_DEFINE_MICROKERNEL(NAME##_4x##V, T, ATTR, 4, V, VB, VPP)                     \
    PN_DEFINE_MICROKERNEL(NAME##_5x##V, T, ATTR, 5, V, VB, VPP)                     \
    PN_DEFINE_MICROKERNEL(NAME##_6x##V, T, ATTR, 6, V, VB, VPP)
#define PN_KERNEL_ROWS(NAME, V) \
    {0, NAME##_1x##V, NAME##_2x##V, NAME##_3x##V, NAME##_4x##V, NAME##_5x##V, NAME##_6x##V}
/* One row of a product (a single sample through a layer), n columns (a multiple of L):
 *   c[j] = α·Σ_{p<k} a[p·lda]·b[p·ldb + j] + β·c[j]
 * every column the tiles' FMA chain over p in order, so the same bits as a row of a tile;
 * but B is read a whole row at a time (PN_ROW_STEP rows per pass over PN_ROW_CHUNK columns'
 * sums, which stay in L1): long contiguous runs the prefetcher streams, where a tile's strip
 * of columns would jump a row stride at every p. */
#define PN_ROW_PASS(R)                    /* acc[v] += Σ_{i<R} a_p+i · b[p+i, v], i in order */ \
    {                                                                               \
        vec ap[R];                                                                  \
        for (int i = 0; i < R; i++) ap[i] = a[(p + i) * lda] - (vec){0};             \
        __typeof__(b) bp = b + p * ldb + j0;                                        \
        for (long v = 0; v < m; v++) {                                              \
            vec s = acc[v], w;                                                      \
            _Pragma("GCC unroll 8")                                                 \
            for (int i = 0; i < R; i++) {                                           \
                memcpy(&w, bp + i * ldb + v * L, sizeof w);                         \
                s += ap[i] * w;                                                     \
            }                                                                       \
            acc[v] = s;                                                             \
        }                                                                           \
    }
#define PN_DEFINE_ROW_KERNEL(NAME, T, ATTR, VB)                                     \
    ATTR static void NAME(long k, long n, const T *restrict a, long lda,            \
                          const T *restrict b, long ldb, T *restrict c, T alpha, T beta) { \
        typedef T vec __attribute__((vector_size(VB)));                             \
        enum { L = VB / sizeof(T) };                                                \
        vec acc[PN_ROW_CHUNK / L];                                                  \
        for (long j0 = 0; j0 < n; j0 += PN_ROW_CHUNK) {                             \
            long m = (n - j0 < PN_ROW_CHUNK ? n - j0 : PN_ROW_CHUNK) / L, p = 0;    \
            for (long v = 0; v < m; v++) acc[v] = (vec){0};                         \
            for (; p + PN_ROW_STEP <= k; p += PN_ROW_STEP) PN_ROW_PASS(PN_ROW_STEP) \
            for (; p < k; p++) PN_ROW_PASS(1)                                       \
            vec va = alpha - (vec){0}, vb = beta - (vec){0};                        \
            for (long v = 0; v < m; v++) {                                          \
                vec q = va * acc[v], old;                                           \
                if (beta != 0) {                                                    \
                    memcpy(&old, c + j0 + v * L, sizeof old);                       \
                    q += vb * old;                                                  \
                }                                                                   \
                memcpy(c + j0 + v * L, &q, sizeof q);                               \
            }                                                                       \
        }                                                                           \
    }
/* The last n < NR columns of one row, as sums (the caller scales and adds as for an edge
 * tile): s[j] = Σ_{p<k} a[p·lda]·b[p·ldb + j], each the tiles' FMA chain over p in order
 * (FMA(x, y, z): one rounding where the tiles fuse, x·y + z where they cannot), read in
 * place: no panel packed for a few columns of a single row. */
#define PN_DEFINE_ROW_TAIL(NAME, T, ATTR, FMA)                                      \
    ATTR static void NAME(long k, long n, const T *restrict a, long lda,            \
                          const T *restrict b, long ldb, T *restrict s) {           \
        for (long j = 0; j < n; j++) s[j] = 0;                                      \
        for (long p = 0; p < k; p++) {                                              \
            const T ap = a[p * lda];                                                \
            for (long j = 0; j < n; j++) s[j] = FMA(ap, b[p * ldb + j], s[j]);      \
        }                                                                           \
    }
#define PN_MUL_ADD(x, y, z) ((x) * (y) + (z))
#define PN_DEFINE_KERNEL_TABLE(SUF, T, ATTR, FMA)                                   \
    PN_DEFINE_ROW_KERNEL(pn_row_##SUF, T, ATTR, 32)                                  \
    PN_DEFINE_ROW_TAIL(pn_row_tail_##SUF, T, ATTR, FMA)                             \
    PN_DEFINE_KERNEL_ROWS(pn_tile_##SUF, T, ATTR, 1, 32, 2)                         \
    PN_DEFINE_KERNEL_ROWS(pn_tile_##SUF, T, ATTR, 2, 32, 2)                         \
    static __typeof__(&pn_tile_##SUF##_1x1) const pn_tiles_##SUF[2][PN_MR + 1] = {  \
        PN_KERNEL_ROWS(pn_tile_##SUF, 1), PN_KERNEL_ROWS(pn_tile_##SUF, 2)};

/* n iterations of 12 independent FMA chains of VB-byte vectors, as in the micro-kernel;
 * returns a value that depends on all of them (IEEE rounding forbids folding the loop). */
#define PN_DEFINE_FMA_PROBE(SUF, T, ATTR, VB)                                       \
    ATTR static T pn_fma_probe_##SUF(long n, T x) {                                 \
        typedef T vec __attribute__((vector_size(VB)));                             \
        vec acc[12], m = x - (vec){0}, s = (vec){0};                                \
        for (int i = 0; i < 12; i++) acc[i] = (x + i) - (vec){0};                   \
        for (long p = 0; p < n; p++) {                                              \
            _Pragma("GCC unroll 12")                                                \
            for (int i = 0; i < 12; i++) acc[i] = acc[i] * m + m;                   \
        }                                                                           \
        for (int i = 0; i < 12; i++) s += acc[i];                                   \
        return s[0];                                                                \
    }

PN_DEFINE_KERNEL_TABLE(f32_generic, float, , PN_MUL_ADD)
PN_DEFINE_KERNEL_TABLE(f64_generic, double, , PN_MUL_ADD)
PN_DEFINE_FMA_PROBE(f32_generic, float, , 32)
PN_DEFINE_FMA_PROBE(f64_generic, double, , 32)
#if PN_HAVE_AVX2_KERNEL
PN_DEFINE_KERNEL_TABLE(f32_avx2, float, PN_AVX2, __builtin_fmaf)
PN_DEFINE_KERNEL_TABLE(f64_avx2, double, PN_AVX2, __builtin_fma)
PN_DEFINE_FMA_PROBE(f32_avx2, float, PN_AVX2, 32)
PN_DEFINE_FMA_PROBE(f64_avx2, double, PN_AVX2, 32)
/* AVX2 edge pairs: a last row panel of rows ≤ PN_PAIR_ROWS (M = 6q + 1..3, as a batch of 32,
 * 128 or 512) keeps only 2·rows FMA chains on one panel, too few to hide the FMA's latency;
 * it takes two adjacent whole panels at once instead (four vectors a row, the second panel
 * hstep elements after the first): pn_edge_pairs_SUF[ROWS], at most 12 accumulators. */
#define PN_DEFINE_EDGE_PAIRS(SUF, T)                                                \
    PN_DEFINE_MICROKERNEL(pn_edge_pair_##SUF##_1x4, T, PN_AVX2, 1, 4, 32, 2)        \
    PN_DEFINE_MICROKERNEL(pn_edge_pair_##SUF##_2x4, T, PN_AVX2, 2, 4, 32, 2)        \
    PN_DEFINE_MICROKERNEL(pn_edge_pair_##SUF##_3x4, T, PN_AVX2, 3, 4, 32, 2)        \
    static __typeof__(&pn_edge_pair_##SUF##_1x4) const pn_edge_pairs_##SUF[PN_PAIR_ROWS + 1] = { \
        0, pn_edge_pair_##SUF##_1x4, pn_edge_pair_##SUF##_2x4, pn_edge_pair_##SUF##_3x4};
PN_DEFINE_EDGE_PAIRS(f32_avx2, float)
PN_DEFINE_EDGE_PAIRS(f64_avx2, double)
/* AVX-512: one 64-byte vector is a whole NR-column panel, so a 6 × 2-vector tile spans two
 * adjacent panels (the second hstep elements after the first): pn_pairs_SUF[ROWS]; pn_row
 * with 64-byte vectors. Every element of every tile above is the same FMA chain over p, so
 * all give the same bits. */
PN_DEFINE_KERNEL_ROWS(pn_pair_f32_avx512, float, PN_AVX512, 2, 64, 1)
PN_DEFINE_KERNEL_ROWS(pn_pair_f64_avx512, double, PN_AVX512, 2, 64, 1)
static __typeof__(&pn_pair_f32_avx512_1x2) const pn_pairs_f32_avx512[PN_MR + 1] =
    PN_KERNEL_ROWS(pn_pair_f32_avx512, 2);
static __typeof__(&pn_pair_f64_avx512_1x2) const pn_pairs_f64_avx512[PN_MR + 1] =
    PN_KERNEL_ROWS(pn_pair_f64_avx512, 2);
PN_DEFINE_ROW_KERNEL(pn_row_f32_avx512, float, PN_AVX512, 64)
PN_DEFINE_ROW_KERNEL(pn_row_f64_avx512, double, PN_AVX512, 64)
PN_DEFINE_FMA_PROBE(f32_avx512, float, PN_AVX512, 64)
PN_DEFINE_FMA_PROBE(f64_avx512, double, PN_AVX512, 64)
#endif

#endif
