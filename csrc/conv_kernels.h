/* conv_kernels.h — the convolution's register tile read straight from the image: rows are
 * output positions, columns output channels, so no unfolded copy of the image is written:
 *
 *   acc[i][j] = Σ_{p<k} x[koff[p] + base[i]] · w[p·NR + j]     i < ROWS positions, j < NR
 *   c[i·NR + j] = acc[i][j]            (add = 0: the first slice of K)
 *               = c[i·NR + j] + acc    (add = 1: a later slice)
 *
 * x: the (padded) image, koff: the offsets of a slice's taps, base[i]: the offset of
 * position i's window (conv.pxi's ConvGeom tables), w: a slice of Wᵀ packed as a K × NR
 * panel (NR = two 32-byte vectors of channels), c: a ROWS × NR scratch tile. Each element
 * is the GEMM tile's FMA chain over the slice (gemm_microkernel.h, the same expression:
 * a product is the same in either operand order), and the slices add as gemm_block's
 * β = 1 passes do, so the result has the bits of gemm_block's W·cols. Per p: ROWS
 * broadcasts from the image (its ROWS window pointers plus one offset), two vector loads of
 * w and 2·ROWS FMAs, as the packed tile does — the unfolding's copy is gone.
 *
 * Defined per element type and ISA: pn_conv_tiles_SUF[ROWS], ROWS = 1..PN_MR, for SUF =
 * f32_avx2, f64_avx2; for the baseline ISA only the one-row tile pn_conv_tile_SUF_1 (SUF =
 * f32_generic, f64_generic), run once per row (the same chains; the wheel is spared five
 * more tiles of a path that is only a fallback). cpu_dispatch.h's pn_conv_tile_T picks.
 */
#ifndef PYNEURO_CONV_KERNELS_H
#define PYNEURO_CONV_KERNELS_H

#include <stdint.h>
#include <string.h>

#ifndef PN_HAVE_AVX2_KERNEL
#error "include cpu_dispatch.h: it says which instruction sets to build the kernels for"
#endif

#define PN_DEFINE_CONV_TILE(NAME, T, ATTR, ROWS)                                              \
    ATTR static void NAME(long k, const T *restrict x, const int64_t *restrict koff,         \
                          const int64_t *restrict base, const T *restrict w, T *restrict c,  \
                          int add) {                                                          \
        typedef T vec __attribute__((vector_size(32)));                                       \
        enum { L = 32 / sizeof(T) };                                                          \
        vec acc[ROWS][2];                                                                     \
        const T *xi[ROWS];                                                                    \
        for (int i = 0; i < ROWS; i++) {                                                      \
            acc[i][0] = acc[i][1] = (vec){0};                                                 \
            xi[i] = x + base[i];                                                              \
        }                                                                                     \
        for (long p = 0; p < k; p++) {                                                        \
            vec b0, b1;                                                                       \
            memcpy(&b0, w + p * 2 * L, sizeof b0);                                            \
            memcpy(&b1, w + p * 2 * L + L, sizeof b1);                                        \
            const int64_t o = koff[p];                                                        \
            _Pragma("GCC unroll 6")                                                           \
            for (int i = 0; i < ROWS; i++) {                                                  \
                vec ai = xi[i][o] - (vec){0};        /* a broadcast: −0 and NaN kept */       \
                acc[i][0] += ai * b0;                                                         \
                acc[i][1] += ai * b1;                                                         \
            }                                                                                 \
        }                                                                                     \
        _Pragma("GCC unroll 6")                                                               \
        for (int i = 0; i < ROWS; i++) {                                                      \
            for (int h = 0; h < 2; h++) {                                                     \
                vec r = acc[i][h], old;                                                       \
                if (add) {                                                                    \
                    memcpy(&old, c + (i * 2 + h) * L, sizeof old);                            \
                    r += old;                                                                 \
                }                                                                             \
                memcpy(c + (i * 2 + h) * L, &r, sizeof r);                                    \
            }                                                                                 \
        }                                                                                     \
    }

#define PN_DEFINE_CONV_TILES(SUF, T, ATTR)                                                    \
    PN_DEFINE_CONV_TILE(pn_conv_tile_##SUF##_1, T, ATTR, 1)                                   \
    PN_DEFINE_CONV_TILE(pn_conv_tile_##SUF##_2, T, ATTR, 2)                                   \
    PN_DEFINE_CONV_TILE(pn_conv_tile_##SUF##_3, T, ATTR, 3)                                   \
    PN_DEFINE_CONV_TILE(pn_conv_tile_##SUF##_4, T, ATTR, 4)                                   \
    PN_DEFINE_CONV_TILE(pn_conv_tile_##SUF##_5, T, ATTR, 5)                                   \
    PN_DEFINE_CONV_TILE(pn_conv_tile_##SUF##_6, T, ATTR, 6)                                   \
    static void (*const pn_conv_tiles_##SUF[PN_MR + 1])(long, const T *, const int64_t *,    \
                                                        const int64_t *, const T *, T *, int) = { \
        0, pn_conv_tile_##SUF##_1, pn_conv_tile_##SUF##_2, pn_conv_tile_##SUF##_3,            \
        pn_conv_tile_##SUF##_4, pn_conv_tile_##SUF##_5, pn_conv_tile_##SUF##_6};

PN_DEFINE_CONV_TILE(pn_conv_tile_f32_generic_1, float, , 1)
PN_DEFINE_CONV_TILE(pn_conv_tile_f64_generic_1, double, , 1)
#if PN_HAVE_AVX2_KERNEL
PN_DEFINE_CONV_TILES(f32_avx2, float, PN_AVX2)
PN_DEFINE_CONV_TILES(f64_avx2, double, PN_AVX2)
#endif

#endif
