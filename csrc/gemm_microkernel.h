/* gemm_microkernel.h — the register-blocked heart of the GEMM.
 *
 *   c[i][j] = Σ_{p<k} a[p·MR + i] · b[p·NR + j]      0 ≤ i < MR, 0 ≤ j < NR
 *
 * a is an MR-row panel of packed op(A) (k × MR, column of the tile per p),
 * b an NR-column panel of packed op(B) (k × NR), c a dense MR × NR tile
 * (row stride NR) that the caller scales into C. The reduction over p runs in
 * one fixed order, so a tile's result never depends on which thread made it.
 *
 * One source, two element types, two instruction sets: GCC vector extensions
 * (2 × 32-byte vectors per tile row) compiled once with AVX2+FMA enabled and
 * once for the baseline ISA. The caller picks one at run time.
 */
#ifndef PYNEURO_GEMM_MICROKERNEL_H
#define PYNEURO_GEMM_MICROKERNEL_H

#include <string.h>

#define PN_MR 6                          /* rows of a register tile                */
#define PN_NR_F32 16                     /* columns: two 8-float vectors            */
#define PN_NR_F64 8                      /* columns: two 4-double vectors           */

#define PN_DEFINE_MICROKERNEL(NAME, T, ATTR)                                        \
    ATTR static void NAME(long k, const T *restrict a, const T *restrict b,         \
                          T *restrict c) {                                          \
        typedef T vec __attribute__((vector_size(32)));                             \
        enum { L = 32 / sizeof(T), NR = 2 * L };                                    \
        vec acc[PN_MR][2];                                                          \
        /* a[·] − 0 splats the scalar exactly (−0 and NaN kept), folded to one broadcast */ \
        for (int i = 0; i < PN_MR; i++) acc[i][0] = acc[i][1] = (vec){0};           \
        for (long p = 0; p < k; p++) {                                              \
            vec b0, b1;                                                             \
            memcpy(&b0, b + p * NR, sizeof b0);                                     \
            memcpy(&b1, b + p * NR + L, sizeof b1);                                 \
            _Pragma("GCC unroll 6")                                                 \
            for (int i = 0; i < PN_MR; i++) {                                       \
                vec ai = a[p * PN_MR + i] - (vec){0};                               \
                acc[i][0] += ai * b0;                                               \
                acc[i][1] += ai * b1;                                               \
            }                                                                       \
        }                                                                           \
        for (int i = 0; i < PN_MR; i++) {                                           \
            memcpy(c + i * NR, &acc[i][0], sizeof acc[i][0]);                       \
            memcpy(c + i * NR + L, &acc[i][1], sizeof acc[i][1]);                   \
        }                                                                           \
    }

PN_DEFINE_MICROKERNEL(pn_ukernel_f32_generic, float, )
PN_DEFINE_MICROKERNEL(pn_ukernel_f64_generic, double, )

#if defined(__GNUC__) && defined(__x86_64__)
#define PN_HAVE_AVX2_KERNEL 1
PN_DEFINE_MICROKERNEL(pn_ukernel_f32_avx2, float, __attribute__((target("avx2,fma"))))
PN_DEFINE_MICROKERNEL(pn_ukernel_f64_avx2, double, __attribute__((target("avx2,fma"))))
#else
#define PN_HAVE_AVX2_KERNEL 0
#define pn_ukernel_f32_avx2 pn_ukernel_f32_generic
#define pn_ukernel_f64_avx2 pn_ukernel_f64_generic
#endif

typedef void (*pn_ukernel_f32_t)(long, const float *, const float *, float *);
typedef void (*pn_ukernel_f64_t)(long, const double *, const double *, double *);

/* The kernels in use: chosen by pn_gemm_select (0 = generic, 1 = AVX2+FMA). */
static pn_ukernel_f32_t pn_ukernel_f32 = pn_ukernel_f32_generic;
static pn_ukernel_f64_t pn_ukernel_f64 = pn_ukernel_f64_generic;
static int pn_gemm_isa = 0;

static void pn_gemm_select(int isa) {
    pn_gemm_isa = (isa == 1 && PN_HAVE_AVX2_KERNEL) ? 1 : 0;
    pn_ukernel_f32 = pn_gemm_isa ? pn_ukernel_f32_avx2 : pn_ukernel_f32_generic;
    pn_ukernel_f64 = pn_gemm_isa ? pn_ukernel_f64_avx2 : pn_ukernel_f64_generic;
}

#endif
