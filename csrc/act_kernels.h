/* act_kernels.h — the piecewise-linear activations and the bias add over one row of n,
 * branch-free, per instruction set (the GEMM runs them on every tile row of its epilogue,
 * where a branch per element on the sign of z mispredicts half the time):
 *   pn_bias_SUF(n, z, b)                 z[k] += b[k]
 *   pn_act_fwd_SUF(act, n, α, z, a)      a[k] = f(z[k])              (a may alias z)
 *   pn_act_bwd_SUF(act, n, α, z, da, d)  d[k] = da[k]·f′(z[k])       (d may alias da)
 *   pn_bias_act_SUF(act, rows, n, α, z, ldz, b, by_row, a, lda)   a GEMM tile's epilogue in
 *        one call: z[i, k] += b[k], or b[i] when by_row (none when b is NULL), then
 *        a[i, k] = f(z[i, k]) (none when a is NULL); z and a with row strides ldz, lda
 *     act 0 identity  f = z                f′ = 1
 *     act 1 relu      f = z > 0 ? z : 0    f′ = [z > 0]   (a NaN z stays NaN forward)
 *     act 2 leaky     f = z > 0 ? z : α·z  f′ = 1 or α
 * (the codes of activations.pxi's ACT_IDENTITY, ACT_RELU, ACT_LEAKY_RELU). Each element
 * is the same expression as the scalar loop it replaces, evaluated once, so every variant
 * gives the same bits. A row may be written in place, element k only after reading
 * element k, so the loops carry no dependence (ivdep) and vectorize without alias checks.
 * SUF = f32_generic, f64_generic, f32_avx2, f64_avx2; cpu_dispatch.h picks the variant.
 */
#ifndef PYNEURO_ACT_KERNELS_H
#define PYNEURO_ACT_KERNELS_H

#ifndef PN_HAVE_AVX2_KERNEL
#error "include cpu_dispatch.h: it says which instruction sets to build the kernels for"
#endif

#if defined(__clang__)
#define PN_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define PN_IVDEP _Pragma("GCC ivdep")
#else
#define PN_IVDEP
#endif

#define PN_DEFINE_ACT(SUF, T, ATTR)                                                           \
    ATTR static void pn_bias_##SUF(long n, T *z, const T *b) {                                \
        PN_IVDEP for (long k = 0; k < n; k++) z[k] += b[k];                                  \
    }                                                                                         \
    ATTR static void pn_act_fwd_##SUF(int act, long n, T alpha, const T *z, T *a) {          \
        if (act == 0) {                                                                       \
            if (a != z) PN_IVDEP for (long k = 0; k < n; k++) a[k] = z[k];                    \
        } else if (act == 1) {                                                                \
            PN_IVDEP for (long k = 0; k < n; k++) a[k] = z[k] <= 0 ? (T)0 : z[k];             \
        } else {                                                                              \
            PN_IVDEP for (long k = 0; k < n; k++) a[k] = z[k] > 0 ? z[k] : alpha * z[k];      \
        }                                                                                     \
    }                                                                                         \
    ATTR static void pn_act_bwd_##SUF(int act, long n, T alpha, const T *z, const T *da,     \
                                      T *d) {                                                 \
        if (act == 0) {                                                                       \
            if (d != da) PN_IVDEP for (long k = 0; k < n; k++) d[k] = da[k];                  \
        } else if (act == 1) {                                                                \
            PN_IVDEP for (long k = 0; k < n; k++) d[k] = z[k] > 0 ? da[k] : (T)0;             \
        } else {                                                                              \
            PN_IVDEP for (long k = 0; k < n; k++) d[k] = z[k] > 0 ? da[k] : alpha * da[k];    \
        }                                                                                     \
    }                                                                                         \
    ATTR static void pn_bias_act_##SUF(int act, long rows, long n, T alpha, T *z, long ldz,   \
                                       const T *b, int by_row, T *a, long lda) {              \
        typedef T vec __attribute__((vector_size(32)));                                       \
        enum { L = 32 / sizeof(T) };                                                          \
        const vec zero = {0}, va = alpha - zero;                                              \
        for (long i = 0; i < rows; i++) {                                                     \
            T *zi = z + i * ldz, *ai = a ? a + i * lda : 0;                                   \
            const vec bi = (b && by_row ? b[i] : 0) - zero;                                   \
            long k = 0;                                                                       \
            for (; k + L <= n; k += L) {        /* whole vectors: pn_act_fwd's formulas */ \
                vec v, w = bi;                                                                \
                memcpy(&v, zi + k, sizeof v);                                                 \
                if (b) {                                                                      \
                    if (!by_row) memcpy(&w, b + k, sizeof w);                                 \
                    v += w;                                                                   \
                    memcpy(zi + k, &v, sizeof v);                                             \
                }                                                                             \
                if (!ai) continue;                                                            \
                __typeof__(v > v) pos = v > zero;            /* lanes: −1 where z > 0 */      \
                if (act == 1)                                /* z ≤ 0 → 0; NaN stays NaN */   \
                    v = (vec)((__typeof__(pos))v & ~(__typeof__(pos))(v <= zero));            \
                else if (act == 2)                                                            \
                    v = (vec)(((__typeof__(pos))v & pos) | ((__typeof__(pos))(va * v) & ~pos)); \
                memcpy(ai + k, &v, sizeof v);                                                 \
            }                                                                                 \
            if (k == n) continue;                    /* the tail: the row kernels above */    \
            if (b && by_row) for (long t = k; t < n; t++) zi[t] += b[i];                      \
            else if (b) pn_bias_##SUF(n - k, zi + k, b + k);                                  \
            if (ai) pn_act_fwd_##SUF(act, n - k, alpha, zi + k, ai + k);                      \
        }                                                                                     \
    }

PN_DEFINE_ACT(f32_generic, float, )
PN_DEFINE_ACT(f64_generic, double, )
#if PN_HAVE_AVX2_KERNEL
PN_DEFINE_ACT(f32_avx2, float, PN_AVX2)
PN_DEFINE_ACT(f64_avx2, double, PN_AVX2)
#endif

#endif
