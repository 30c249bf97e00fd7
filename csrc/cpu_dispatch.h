/* cpu_dispatch.h — the CPU-feature choice, in one place: which instruction sets the
 * SIMD kernels are built for, what this CPU supports, and which variant runs.
 *
 * Every SIMD kernel is compiled twice from one source: for the baseline ISA
 * (NAME_T_generic) and, on x86-64 with GCC or Clang, for AVX2+FMA through a target
 * attribute (NAME_T_avx2), so no -march flag is needed and a wheel runs on any
 * x86-64. One process-wide setting, pn_isa, picks the variant of all of them at
 * once: the GEMM's register tiles and its FMA probe (gemm_microkernel.h), its
 * operand packing (gemm_pack.h), the
 * optimizer updates (optim_kernels.h) and the piecewise-linear activations (act_kernels.h). pn_select_isa sets it (cpu_dispatch.pxi:
 * set_gemm_kernel, PYNEURO_GEMM_KERNEL at import). Last here: the entry points the
 * Cython code calls (pn_tile_T, pn_update_T), each running the variant in use.
 */
#ifndef PYNEURO_CPU_DISPATCH_H
#define PYNEURO_CPU_DISPATCH_H

/* ---- the instruction sets a kernel is built for ------------------------------ */
#if defined(__GNUC__) && defined(__x86_64__)
#define PN_HAVE_AVX2_KERNEL 1
#define PN_AVX2 __attribute__((target("avx2,fma")))
#else
#define PN_HAVE_AVX2_KERNEL 0
#endif

/* ---- the kernels, each defined once per instruction set ---------------------- */
#include "gemm_microkernel.h"
#include "gemm_pack.h"
#include "optim_kernels.h"
#include "act_kernels.h"

/* ---- what this CPU supports --------------------------------------------------- */
static int pn_cpu_has_avx2_fma(void) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* ---- the choice: 0 = generic, 1 = AVX2+FMA (only where it was built) ----------- */
static int pn_isa = 0;

static void pn_select_isa(int isa) { pn_isa = (isa == 1 && PN_HAVE_AVX2_KERNEL) ? 1 : 0; }

#if PN_HAVE_AVX2_KERNEL
#define PN_PICK(NAME, T) (pn_isa ? NAME##_##T##_avx2 : NAME##_##T##_generic)
#else
#define PN_PICK(NAME, T) NAME##_##T##_generic
#endif

/* The variants in use, under the names the Cython code calls. */
#define pn_wide_f32 PN_PICK(pn_wide, f32)
#define pn_wide_f64 PN_PICK(pn_wide, f64)
#define pn_pack_a_f32 PN_PICK(pn_pack_a, f32)
#define pn_pack_a_f64 PN_PICK(pn_pack_a, f64)
#define pn_pack_b_f32 PN_PICK(pn_pack_b, f32)
#define pn_pack_b_f64 PN_PICK(pn_pack_b, f64)
#define pn_fma_probe_f32 PN_PICK(pn_fma_probe, f32)
#define pn_fma_probe_f64 PN_PICK(pn_fma_probe, f64)
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

/* One register tile: rows ≤ MR rows of the panel a, vecs ∈ {1, 2} vectors of the panel b. */
static inline void pn_tile_f32(int rows, int vecs, long k, const float *a, long lda,
                               const float *b, long ldb, float *c, long ldc, float alpha, float beta) {
    PN_PICK(pn_tiles, f32)[vecs - 1][rows](k, a, lda, b, ldb, c, ldc, alpha, beta);
}
static inline void pn_tile_f64(int rows, int vecs, long k, const double *a, long lda,
                               const double *b, long ldb, double *c, long ldc, double alpha, double beta) {
    PN_PICK(pn_tiles, f64)[vecs - 1][rows](k, a, lda, b, ldb, c, ldc, alpha, beta);
}

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
