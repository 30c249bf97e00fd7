/* gemm_pack.h — packing a full MR = 6 row panel of a row-major op(A), with SIMD.
 *
 *   dst[p·6 + i] = A[i·rs + p]        0 ≤ i < 6, 0 ≤ p < k
 *
 * Read naively that is six strided scalar streams; here blocks of 6 rows × W
 * columns are loaded as six vectors and transposed in registers (shuffles) into
 * W consecutive groups of six, written in order. W = 4 floats or 2 doubles:
 * 16-byte vectors, so the baseline x86-64 ISA (SSE2) runs it; GCC's generic
 * vectors keep it portable. The tail (k mod W columns) is copied one by one.
 */
#ifndef PYNEURO_GEMM_PACK_H
#define PYNEURO_GEMM_PACK_H

#include <string.h>

typedef float pn_v4f __attribute__((vector_size(16)));
typedef int pn_v4i __attribute__((vector_size(16)));
typedef double pn_v2d __attribute__((vector_size(16)));
typedef long long pn_v2l __attribute__((vector_size(16)));

static void pn_pack_a6_f32(long k, const float *A, long rs, float *dst) {
    long p = 0;
    for (; p + 4 <= k; p += 4, dst += 24) {
        pn_v4f r[6], o[6];
        for (int i = 0; i < 6; i++) memcpy(&r[i], A + i * rs + p, sizeof r[i]);
        /* 4×4 transpose of rows 0..3: t_c = column c of rows 0..3 */
        pn_v4f a = __builtin_shuffle(r[0], r[1], (pn_v4i){0, 4, 1, 5});   /* r0a r1a r0b r1b */
        pn_v4f b = __builtin_shuffle(r[2], r[3], (pn_v4i){0, 4, 1, 5});   /* r2a r3a r2b r3b */
        pn_v4f c = __builtin_shuffle(r[0], r[1], (pn_v4i){2, 6, 3, 7});   /* r0c r1c r0d r1d */
        pn_v4f d = __builtin_shuffle(r[2], r[3], (pn_v4i){2, 6, 3, 7});   /* r2c r3c r2d r3d */
        pn_v4f t0 = __builtin_shuffle(a, b, (pn_v4i){0, 1, 4, 5});
        pn_v4f t1 = __builtin_shuffle(a, b, (pn_v4i){2, 3, 6, 7});
        pn_v4f t2 = __builtin_shuffle(c, d, (pn_v4i){0, 1, 4, 5});
        pn_v4f t3 = __builtin_shuffle(c, d, (pn_v4i){2, 3, 6, 7});
        pn_v4f ulo = __builtin_shuffle(r[4], r[5], (pn_v4i){0, 4, 1, 5}); /* r4a r5a r4b r5b */
        pn_v4f uhi = __builtin_shuffle(r[4], r[5], (pn_v4i){2, 6, 3, 7}); /* r4c r5c r4d r5d */
        o[0] = t0;
        o[1] = __builtin_shuffle(ulo, t1, (pn_v4i){0, 1, 4, 5});
        o[2] = __builtin_shuffle(t1, ulo, (pn_v4i){2, 3, 6, 7});
        o[3] = t2;
        o[4] = __builtin_shuffle(uhi, t3, (pn_v4i){0, 1, 4, 5});
        o[5] = __builtin_shuffle(t3, uhi, (pn_v4i){2, 3, 6, 7});
        memcpy(dst, o, sizeof o);
    }
    for (; p < k; p++, dst += 6)
        for (int i = 0; i < 6; i++) dst[i] = A[i * rs + p];
}

static void pn_pack_a6_f64(long k, const double *A, long rs, double *dst) {
    long p = 0;
    for (; p + 2 <= k; p += 2, dst += 12) {
        pn_v2d r[6], o[6];
        for (int i = 0; i < 6; i++) memcpy(&r[i], A + i * rs + p, sizeof r[i]);
        for (int i = 0; i < 3; i++) {
            o[i] = __builtin_shuffle(r[2 * i], r[2 * i + 1], (pn_v2l){0, 2});      /* column p   */
            o[i + 3] = __builtin_shuffle(r[2 * i], r[2 * i + 1], (pn_v2l){1, 3});  /* column p+1 */
        }
        memcpy(dst, o, sizeof o);
    }
    for (; p < k; p++, dst += 6)
        for (int i = 0; i < 6; i++) dst[i] = A[i * rs + p];
}

#endif
