/* pool_kernels.h — max pooling of 2×2 windows, stride 2, no padding: the values alone (a
 * prediction's; training records the argmax in pool.pxi), whole vectors per instruction set:
 *   pn_maxpool2x2_SUF(W, Ho, Wo, x, y)     one plane, x: H × W, y: Ho × Wo (row strides W, Wo)
 *     y[i, j] = the first maximum of a = x[2i, 2j], b = x[2i, 2j+1], c = x[2i+1, 2j],
 *               d = x[2i+1, 2j+1]:  m = a, then m = v > m ? v : m for v = b, c, d
 *   (pool.pxi's rule: equal values keep the first, a NaN v never replaces m); returns
 *   whether a NaN was read, for the caller to redo the plane by pool.pxi's NaN rule.
 * L = 16/sizeof(T) outputs a vector: a, b (c, d) are the even and odd lanes of 2L values
 * of row 2i (2i + 1); a row of Wo ≥ L outputs ends with a vector that overlaps the one
 * before (those outputs are written twice, the same values), a shorter row runs the
 * scalar rule. Selection only, no arithmetic: every variant gives the same bits. 16-byte
 * vectors: a 32-byte shuffle across halves costs several micro-ops on some cores (Zen 1:
 * slower than the scalar rule), a 16-byte one a single one everywhere.
 * SUF = f32_generic, f64_generic, f32_avx2, f64_avx2; cpu_dispatch.h picks the variant.
 */
#ifndef PYNEURO_POOL_KERNELS_H
#define PYNEURO_POOL_KERNELS_H

#include <string.h>

#ifndef PN_HAVE_AVX2_KERNEL
#error "include cpu_dispatch.h: it says which instruction sets to build the kernels for"
#endif

/* the lanes a vector of 2L values gives to a (even) and b (odd), per element type */
typedef int pn_lanes_f32 __attribute__((vector_size(16)));
typedef long long pn_lanes_f64 __attribute__((vector_size(16)));
#define PN_EVEN_f32 ((pn_lanes_f32){0, 2, 4, 6})
#define PN_EVEN_f64 ((pn_lanes_f64){0, 2})

#define PN_DEFINE_POOL(SUF, T, TS, ATTR)                                                      \
    ATTR static int pn_maxpool2x2_##SUF(long W, long Ho, long Wo, const T *x, T *y) {         \
        typedef T vec __attribute__((vector_size(16)));                                       \
        typedef pn_lanes_##TS mask;                                                           \
        enum { L = 16 / sizeof(T) };                                                          \
        const mask even = PN_EVEN_##TS, odd = even + 1;                                       \
        mask nan = {0};                                                                       \
        int nan_seen = 0;                                                                     \
        for (long i = 0; i < Ho; i++) {                                                       \
            const T *r0 = x + 2 * i * W, *r1 = r0 + W;                                        \
            T *yi = y + i * Wo;                                                               \
            for (long j0 = 0; Wo >= L && j0 < Wo; j0 += L) {                                  \
                long j = j0 + L <= Wo ? j0 : Wo - L;     /* the last vector overlaps */       \
                vec p0, p1, q0, q1;                                                           \
                memcpy(&p0, r0 + 2 * j, sizeof p0);                                           \
                memcpy(&p1, r0 + 2 * j + L, sizeof p1);                                       \
                memcpy(&q0, r1 + 2 * j, sizeof q0);                                           \
                memcpy(&q1, r1 + 2 * j + L, sizeof q1);                                       \
                vec m = __builtin_shuffle(p0, p1, even), v[3];                                \
                v[0] = __builtin_shuffle(p0, p1, odd);                                        \
                v[1] = __builtin_shuffle(q0, q1, even);                                       \
                v[2] = __builtin_shuffle(q0, q1, odd);                                        \
                nan |= (mask)(m != m);                                                        \
                for (int t = 0; t < 3; t++) {                                                 \
                    mask up = (mask)(v[t] > m);                                               \
                    m = (vec)(((mask)v[t] & up) | ((mask)m & ~up));                           \
                    nan |= (mask)(v[t] != v[t]);                                              \
                }                                                                             \
                memcpy(yi + j, &m, sizeof m);                                                 \
            }                                                                                 \
            for (long j = 0; Wo < L && j < Wo; j++) {                                         \
                T m = r0[2 * j], v[3] = {r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]};            \
                nan_seen |= m != m;                                                           \
                for (int t = 0; t < 3; t++) {                                                 \
                    m = v[t] > m ? v[t] : m;                                                  \
                    nan_seen |= v[t] != v[t];                                                 \
                }                                                                             \
                yi[j] = m;                                                                    \
            }                                                                                 \
        }                                                                                     \
        for (int t = 0; t < L; t++) nan_seen |= nan[t] != 0;                                  \
        return nan_seen;                                                                      \
    }

PN_DEFINE_POOL(f32_generic, float, f32, )
PN_DEFINE_POOL(f64_generic, double, f64, )
#if PN_HAVE_AVX2_KERNEL
PN_DEFINE_POOL(f32_avx2, float, f32, PN_AVX2)
PN_DEFINE_POOL(f64_avx2, double, f64, PN_AVX2)
#endif

#endif
