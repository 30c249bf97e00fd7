/* optim_kernels.h — the optimizer updates over a slice of the flat parameter vector,
 * built for the baseline ISA and for AVX2+FMA (pn_sgd_SUF, pn_adam_SUF, pn_rmsprop_SUF,
 * SUF = f32_generic, f64_generic, f32_avx2, f64_avx2); cpu_dispatch.h, which includes
 * this file, picks the variant. The formulas (g̃ = s·g, λ weight decay):
 *   SGD      g̃ += λw;  v = μv + g̃;  w −= η·(nesterov ? g̃ + μv : v)      (μ = 0: w −= η·g̃)
 *   Adam     decoupled ? w −= ηλw : g̃ += λw;  m = β₁m + (1−β₁)g̃;  v = β₂v + (1−β₂)g̃²;
 *            w −= η·(m·c₁) / (√(v·c₂) + ε)          c₁, c₂: bias corrections 1/(1−βᵗ)
 *   RMSprop  g̃ += λw;  v = ρv + (1−ρ)g̃²;  w −= η·g̃ / (√v + ε)
 * Elementwise: any split of the vector over threads gives the same result.
 */
#ifndef PYNEURO_OPTIM_KERNELS_H
#define PYNEURO_OPTIM_KERNELS_H

#include <math.h>

#ifndef PN_HAVE_AVX2_KERNEL
#error "include cpu_dispatch.h: it says which instruction sets to build the kernels for"
#endif

#define PN_DEFINE_OPTIM(SUF, T, SQRT, ATTR)                                                   \
    ATTR static void pn_sgd_##SUF(long n, T *restrict w, const T *restrict g, T *restrict v, \
                                  T lr, T mu, int nesterov, T wd, T s) {                      \
        if (mu == 0) {                                                                        \
            for (long i = 0; i < n; i++) w[i] = w[i] - lr * (s * g[i] + wd * w[i]);          \
            return;                                                                           \
        }                                                                                     \
        for (long i = 0; i < n; i++) {                                                        \
            T gi = s * g[i] + wd * w[i];                                                      \
            v[i] = mu * v[i] + gi;                                                            \
            w[i] = w[i] - lr * (nesterov ? gi + mu * v[i] : v[i]);                            \
        }                                                                                     \
    }                                                                                         \
    ATTR static void pn_adam_##SUF(long n, T *restrict w, const T *restrict g, T *restrict m, \
                                   T *restrict v, T lr, T b1, T b2, T omb1, T omb2, T eps,    \
                                   T wd, int decoupled, T c1, T c2, T s) {                    \
        for (long i = 0; i < n; i++) {                                                        \
            T gi = s * g[i];                                                                  \
            if (decoupled) w[i] = w[i] - lr * wd * w[i];                                      \
            else gi = gi + wd * w[i];                                                         \
            m[i] = b1 * m[i] + omb1 * gi;                                                     \
            v[i] = b2 * v[i] + omb2 * gi * gi;                                                \
            w[i] = w[i] - lr * (m[i] * c1) / (SQRT(v[i] * c2) + eps);                         \
        }                                                                                     \
    }                                                                                         \
    ATTR static void pn_rmsprop_##SUF(long n, T *restrict w, const T *restrict g,            \
                                      T *restrict v, T lr, T rho, T omrho, T eps, T wd, T s) { \
        for (long i = 0; i < n; i++) {                                                        \
            T gi = s * g[i] + wd * w[i];                                                      \
            v[i] = rho * v[i] + omrho * gi * gi;                                              \
            w[i] = w[i] - lr * gi / (SQRT(v[i]) + eps);                                       \
        }                                                                                     \
    }

PN_DEFINE_OPTIM(f32_generic, float, sqrtf, )
PN_DEFINE_OPTIM(f64_generic, double, sqrt, )
#if PN_HAVE_AVX2_KERNEL
PN_DEFINE_OPTIM(f32_avx2, float, sqrtf, PN_AVX2)
PN_DEFINE_OPTIM(f64_avx2, double, sqrt, PN_AVX2)
#endif

#endif
