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
 * which one runs is cpu_dispatch.h's choice (it includes this file). Vector h of a tile
 * row p is read at b + p·ldb + h·hstep: the next 32-byte vector of the panel (hstep = L)
 * or, for AVX-512, the next panel. The FMA probe runs the same instruction mix without
 * memory traffic, to measure the machine's peak on the ISA in use.
 *
 * Defined here, per element type and ISA, SUF = f32_generic, f64_generic, f32_avx2, f64_avx2:
 *   pn_tiles_SUF[VECS − 1][ROWS]   the tile kernels, ROWS = 1..MR, VECS = 1, 2
 *   pn_wide_SUF                    a one-row tile PN_WIDE_VECS vectors wide
 *   pn_fma_probe_SUF               the FMA probe
 * (the last two also for SUF = f32_avx512, f64_avx512)
 * and pn_pairs_f32_avx512[ROWS], pn_pairs_f64_avx512[ROWS]: ROWS × two whole panels.
 */
#ifndef PYNEURO_GEMM_MICROKERNEL_H
#define PYNEURO_GEMM_MICROKERNEL_H

#ifndef PN_HAVE_AVX2_KERNEL
#error "include cpu_dispatch.h: it says which instruction sets to build the kernels for"
#endif

#include <string.h>

#define PN_MR 6                          /* rows of a register tile                */
#define PN_NR_F32 16                     /* columns: two 8-float vectors            */
#define PN_NR_F64 8                      /* columns: two 4-double vectors           */
#define PN_WIDE_VECS 8                   /* vectors of a one-row tile: 4 panels wide */

#define PN_DEFINE_MICROKERNEL(NAME, T, ATTR, ROWS, VECS, VB)                        \
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
            for (int h = 0; h < VECS; h++) memcpy(&bv[h], b + p * ldb + h * hstep, sizeof(vec)); \
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
#define PN_DEFINE_KERNEL_ROWS(NAME, T, ATTR, V, VB)                                 \
    PN_DEFINE_MICROKERNEL(NAME##_1x##V, T, ATTR, 1, V, VB)                          \
    PN_DEFINE_MICROKERNEL(NAME##_2x##V, T, ATTR, 2, V, VB)                          \
    PN_DEFINE_MICROKERNEL(NAME##_3x##V, T, ATTR, 3, V, VB)                          \
    PN_DEFINE_MICROKERNEL(NAME##_4x##V, T, ATTR, 4, V, VB)                          \
    PN_DEFINE_MICROKERNEL(NAME##_5x##V, T, ATTR, 5, V, VB)                          \
    PN_DEFINE_MICROKERNEL(NAME##_6x##V, T, ATTR, 6, V, VB)
#define PN_KERNEL_ROWS(NAME, V) \
    {0, NAME##_1x##V, NAME##_2x##V, NAME##_3x##V, NAME##_4x##V, NAME##_5x##V, NAME##_6x##V}
/* and for a product of one row (a single sample through a layer), a 1-row tile
 * eight vectors wide, so eight FMA chains hide the FMA latency: pn_wide_SUF. */
#define PN_DEFINE_KERNEL_TABLE(SUF, T, ATTR)                                        \
    PN_DEFINE_MICROKERNEL(pn_wide_##SUF, T, ATTR, 1, PN_WIDE_VECS, 32)              \
    PN_DEFINE_KERNEL_ROWS(pn_tile_##SUF, T, ATTR, 1, 32)                            \
    PN_DEFINE_KERNEL_ROWS(pn_tile_##SUF, T, ATTR, 2, 32)                            \
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

PN_DEFINE_KERNEL_TABLE(f32_generic, float, )
PN_DEFINE_KERNEL_TABLE(f64_generic, double, )
PN_DEFINE_FMA_PROBE(f32_generic, float, , 32)
PN_DEFINE_FMA_PROBE(f64_generic, double, , 32)
#if PN_HAVE_AVX2_KERNEL
PN_DEFINE_KERNEL_TABLE(f32_avx2, float, PN_AVX2)
PN_DEFINE_KERNEL_TABLE(f64_avx2, double, PN_AVX2)
PN_DEFINE_FMA_PROBE(f32_avx2, float, PN_AVX2, 32)
PN_DEFINE_FMA_PROBE(f64_avx2, double, PN_AVX2, 32)
/* AVX-512: one 64-byte vector is a whole NR-column panel, so a 6 × 2-vector tile spans two
 * adjacent panels (the second hstep elements after the first): pn_pairs_SUF[ROWS]; the
 * one-row tile is twice as wide, a row of B read as one contiguous run. Every element is
 * the same FMA chain over p as in the AVX2 tiles, so all give the same bits. */
PN_DEFINE_KERNEL_ROWS(pn_pair_f32_avx512, float, PN_AVX512, 2, 64)
PN_DEFINE_KERNEL_ROWS(pn_pair_f64_avx512, double, PN_AVX512, 2, 64)
static __typeof__(&pn_pair_f32_avx512_1x2) const pn_pairs_f32_avx512[PN_MR + 1] =
    PN_KERNEL_ROWS(pn_pair_f32_avx512, 2);
static __typeof__(&pn_pair_f64_avx512_1x2) const pn_pairs_f64_avx512[PN_MR + 1] =
    PN_KERNEL_ROWS(pn_pair_f64_avx512, 2);
PN_DEFINE_MICROKERNEL(pn_wide_f32_avx512, float, PN_AVX512, 1, PN_WIDE_VECS, 64)
PN_DEFINE_MICROKERNEL(pn_wide_f64_avx512, double, PN_AVX512, 1, PN_WIDE_VECS, 64)
PN_DEFINE_FMA_PROBE(f32_avx512, float, PN_AVX512, 64)
PN_DEFINE_FMA_PROBE(f64_avx512, double, PN_AVX512, 64)
#endif

#endif
