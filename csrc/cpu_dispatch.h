/* cpu_dispatch.h — the CPU-feature choice, in one place: which instruction sets the
 * SIMD kernels are built for, what this CPU supports, and which variant runs.
 *
 * Every SIMD kernel is compiled twice from one source: for the baseline ISA
 * (NAME_T_generic) and, on x86-64 with GCC or Clang, for AVX2+FMA through a target
 * attribute (NAME_T_avx2), so no -march flag is needed and a wheel runs on any
 * x86-64; the GEMM's full tiles, one-row kernel and FMA probe also for AVX-512
 * (NAME_T_avx512). One process-wide setting, pn_isa, picks the variant of all of them at
 * once: the GEMM's register tiles and its FMA probe (gemm_microkernel.h), its operand
 * packing (gemm_pack.h), the optimizer updates (optim_kernels.h), the piecewise-linear
 * activations (act_kernels.h), 2×2 max pooling (pool_kernels.h) and the convolution's
 * tile from the image (conv_kernels.h). pn_select_isa sets it (cpu_dispatch.pxi:
 * set_gemm_kernel, PYNEURO_GEMM_KERNEL at import). Last here: the entry points the
 * Cython code calls (pn_tile_T, pn_update_T), each running the variant in use.
 */
#ifndef PYNEURO_CPU_DISPATCH_H
#define PYNEURO_CPU_DISPATCH_H

/* ---- the instruction sets a kernel is built for ------------------------------ */
#if defined(__GNUC__) && defined(__x86_64__)
#define PN_HAVE_AVX2_KERNEL 1            /* and the AVX-512 tiles and probe */
#define PN_AVX2 __attribute__((target("avx2,fma")))
#define PN_AVX512 __attribute__((target("avx512f,avx2,fma")))
#else
#define PN_HAVE_AVX2_KERNEL 0
#endif

/* ---- the kernels, each defined once per instruction set ---------------------- */
#include "gemm_microkernel.h"
#include "gemm_pack.h"
#include "optim_kernels.h"
#include "act_kernels.h"
#include "pool_kernels.h"
#include "conv_kernels.h"

/* ---- what this CPU supports --------------------------------------------------- */
static int pn_cpu_has_avx2_fma(void) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static int pn_cpu_has_avx512(void) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    return pn_cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

/* ---- the choice: 0 = generic, 1 = AVX2+FMA, 2 = AVX-512 (only where built) ---------
 * With AVX-512 the GEMM's full tiles run on 64-byte vectors (pn_pair_T); its edge tiles,
 * packing and every other kernel run their AVX2 variants, so all results are those of 1. */
static int pn_isa = 0;

static void pn_select_isa(int isa) { pn_isa = PN_HAVE_AVX2_KERNEL && isa >= 1 && isa <= 2 ? isa : 0; }

#if PN_HAVE_AVX2_KERNEL
#define PN_PICK(NAME, T) (pn_isa ? NAME##_##T##_avx2 : NAME##_##T##_generic)
#define PN_PICK_WIDEST(NAME, T) (pn_isa == 2 ? NAME##_##T##_avx512 : PN_PICK(NAME, T))
#else
#define PN_PICK(NAME, T) NAME##_##T##_generic
#define PN_PICK_WIDEST(NAME, T) NAME##_##T##_generic
#endif

/* The variants in use, under the names the Cython code calls. */
#define pn_fma_probe_f32 PN_PICK_WIDEST(pn_fma_probe, f32)
#define pn_fma_probe_f64 PN_PICK_WIDEST(pn_fma_probe, f64)
/* lanes of the widest vectors in use (the probe's): float32 (f64 = 0) or float64 */
static inline int pn_probe_lanes(int f64) { return (pn_isa == 2 ? 64 : 32) / (f64 ? 8 : 4); }
#define pn_row_tail_f32 PN_PICK(pn_row_tail, f32)
#define pn_row_tail_f64 PN_PICK(pn_row_tail, f64)
#define pn_pack_a_f32 PN_PICK(pn_pack_a, f32)
#define pn_pack_a_f64 PN_PICK(pn_pack_a, f64)
#define pn_pack_b_f32 PN_PICK(pn_pack_b, f32)
#define pn_pack_b_f64 PN_PICK(pn_pack_b, f64)
#define pn_sgd_f32 PN_PICK(pn_sgd, f32)
#define pn_sgd_f64 PN_PICK(pn_sgd, f64)
#define pn_adam_f32 PN_PICK(pn_adam, f32)
#define pn_adam_f64 PN_PICK(pn_adam, f64)
#define pn_rmsprop_f32 PN_PICK(pn_rmsprop, f32)
#define pn_rmsprop_f64 PN_PICK(pn_rmsprop, f64)
#define pn_bias_f32 PN_PICK(pn_bias, f32)
#define pn_bias_f64 PN_PICK(pn_bias, f64)
#define pn_act_fwd_f32 PN_PICK(pn_act_fwd, f32)
#define pn_act_fwd_f64 PN_PICK(pn_act_fwd, f64)
#define pn_act_bwd_f32 PN_PICK(pn_act_bwd, f32)
#define pn_act_bwd_f64 PN_PICK(pn_act_bwd, f64)
#define pn_bias_act_f32 PN_PICK(pn_bias_act, f32)
#define pn_bias_act_f64 PN_PICK(pn_bias_act, f64)
#define pn_maxpool2x2_f32 PN_PICK(pn_maxpool2x2, f32)
#define pn_maxpool2x2_f64 PN_PICK(pn_maxpool2x2, f64)

/* One register tile: rows ≤ MR rows of the panel a, vecs ∈ {1, 2} 32-byte vectors of the
 * panel b; pn_pair_T (pn_isa == 2, or pn_isa == 1 with rows ≤ PN_PAIR_ROWS): rows × two
 * whole panels, b and b + hstep;
 * pn_row_T: one row, n columns (a multiple of the widest vectors' lanes). */
#define PN_DEFINE_TILE_CALLS(SUF, T)                                                                \
    static inline void pn_tile_##SUF(int rows, int vecs, long k, const T *a, long lda, const T *b, \
                                     long ldb, T *c, long ldc, T alpha, T beta) {                  \
        PN_PICK(pn_tiles, SUF)[vecs - 1][rows](k, a, lda, b, ldb, 32 / sizeof(T), c, ldc, alpha, beta); \
    }                                                                                              \
    static inline void pn_pair_##SUF(int rows, long k, const T *a, long lda, const T *b, long ldb, \
                                     long hstep, T *c, long ldc, T alpha, T beta) {                \
        PN_PICK_PAIRS(SUF)[rows](k, a, lda, b, ldb, hstep, c, ldc, alpha, beta);                   \
    }                                                                                              \
    static inline void pn_row_##SUF(long k, long n, const T *a, long lda, const T *b, long ldb,    \
                                    T *c, T alpha, T beta) {                                       \
        PN_PICK_WIDEST(pn_row, SUF)(k, n, a, lda, b, ldb, c, alpha, beta);                         \
    }
#if PN_HAVE_AVX2_KERNEL
#define PN_PICK_PAIRS(SUF) (pn_isa == 2 ? pn_pairs_##SUF##_avx512 : pn_edge_pairs_##SUF##_avx2)
#else
#define PN_PICK_PAIRS(SUF) pn_tiles_##SUF##_generic[1]   /* never called: pn_isa == 0 */
#endif
PN_DEFINE_TILE_CALLS(f32, float)
PN_DEFINE_TILE_CALLS(f64, double)

/* The convolution's tile from the image (conv_kernels.h), rows = 1..PN_MR positions: the
 * AVX2 tile of that height, or the baseline ISA's one-row tile once per row (c's rows are NR =
 * 64/sizeof(T) values apart). */
#if PN_HAVE_AVX2_KERNEL
#define PN_CONV_TILE_AVX2(SUF)                                                                     \
    if (pn_isa) {                                                                                  \
        pn_conv_tiles_##SUF##_avx2[rows](k, x, koff, base, w, c, add);                             \
        return;                                                                                    \
    }
#else
#define PN_CONV_TILE_AVX2(SUF)
#endif
#define PN_DEFINE_CONV_TILE_CALL(SUF, T)                                                           \
    static inline void pn_conv_tile_##SUF(int rows, long k, const T *x, const int64_t *koff,      \
                                          const int64_t *base, const T *w, T *c, int add) {       \
        PN_CONV_TILE_AVX2(SUF)                                                                     \
        for (int i = 0; i < rows; i++)                                                             \
            pn_conv_tile_##SUF##_generic_1(k, x, koff, base + i, w, c + i * 64 / sizeof(T), add);  \
    }
PN_DEFINE_CONV_TILE_CALL(f32, float)
PN_DEFINE_CONV_TILE_CALL(f64, double)

/* One optimizer update over n elements: rule PN_SGD (s1 = v, NULL without momentum),
 * PN_ADAM (s1 = m, s2 = v) or PN_RMSPROP (s1 = v). h holds the kernel's scalar
 * arguments in double, in the kernel's own order (optim_kernels.h), each rounded
 * once to T here. */
enum { PN_SGD, PN_ADAM, PN_RMSPROP };
#define PN_DEFINE_UPDATE(SUF, T)                                                                   \
    static void pn_update_##SUF(int rule, long n, T *w, const T *g, T *s1, T *s2, const double *h) { \
        if (rule == PN_SGD)                                                                        \
            pn_sgd_##SUF(n, w, g, s1, (T)h[0], (T)h[1], (int)h[2], (T)h[3], (T)h[4]);              \
        else if (rule == PN_ADAM)                                                                  \
            pn_adam_##SUF(n, w, g, s1, s2, (T)h[0], (T)h[1], (T)h[2], (T)h[3], (T)h[4], (T)h[5],   \
                          (T)h[6], (int)h[7], (T)h[8], (T)h[9], (T)h[10]);                        \
        else                                                                                       \
            pn_rmsprop_##SUF(n, w, g, s1, (T)h[0], (T)h[1], (T)h[2], (T)h[3], (T)h[4], (T)h[5]);   \
    }
PN_DEFINE_UPDATE(f32, float)
PN_DEFINE_UPDATE(f64, double)

#endif
