/* aarch64 NEON variant for Armv8.0-A (Raspberry Pi 4, Cortex-A72: no dot product).
 * Compiled with -march=armv8-a. The codec and preprocessing here are shared with the
 * dot-product variant (neon_dot.c), which only replaces the linear core.
 *
 * Linear core ("dot" design): lanes run along K. Kept inputs of a 16-slot chunk are gathered
 * from 16*m/n activation bytes with one TBL (dense: a plain load), then SMULL + SMLAL2 form
 * 8 int16 sums of two products (|x| <= 127, |w| <= 127: no overflow) and SADALP adds them
 * into int32: 16 MACs per 3 instructions, the Armv8.0 int8 limit. Tile: 4 rows x 4 channels. */
#include <arm_neon.h>
#include <stdlib.h>

#include "ek_internal.h"

int ek_neon_enc_q8(const float *x, size_t n, size_t block, int8_t *q, void *scales, int fp16) {
  for (size_t b = 0, i0 = 0; i0 < n; b++, i0 += block) {
    size_t len = n - i0 < block ? n - i0 : block, i = 0;
    const float *xb = x + i0;
    int8_t *qb = q + i0;
    uint32x4_t vm = vdupq_n_u32(0);
    for (; i + 4 <= len; i += 4)
      vm = vmaxq_u32(vm, vandq_u32(vreinterpretq_u32_f32(vld1q_f32(xb + i)), vdupq_n_u32(0x7fffffffu)));
    uint32_t amax = vmaxvq_u32(vm);
    for (; i < len; i++) {
      uint32_t a = ek_f32_bits(xb[i]) & 0x7fffffffu;
      amax = a > amax ? a : amax;
    }
    if (amax >= 0x7f800000u) return EK_ENONFINITE;
    float invs = ek_block_scale(amax, scales, b, fp16);
    float32x4_t inv = vdupq_n_f32(invs);
    int32x4_t lo = vdupq_n_s32(-127), hi = vdupq_n_s32(127);
    i = 0;
    for (; i + 16 <= len; i += 16) {
      int32x4_t a = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(xb + i), inv));
      int32x4_t bq = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(xb + i + 4), inv));
      int32x4_t c = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(xb + i + 8), inv));
      int32x4_t d = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(xb + i + 12), inv));
      a = vmaxq_s32(vminq_s32(a, hi), lo); bq = vmaxq_s32(vminq_s32(bq, hi), lo);
      c = vmaxq_s32(vminq_s32(c, hi), lo); d = vmaxq_s32(vminq_s32(d, hi), lo);
      int16x8_t ab = vcombine_s16(vmovn_s32(a), vmovn_s32(bq));
      int16x8_t cd = vcombine_s16(vmovn_s32(c), vmovn_s32(d));
      vst1q_s8(qb + i, vcombine_s8(vmovn_s16(ab), vmovn_s16(cd)));
    }
    for (; i < len; i++) qb[i] = ek_q8(xb[i] * invs);
  }
  return EK_OK;
}

void ek_neon_dec_q8(const int8_t *q, size_t n, size_t block, const void *scales, int fp16,
                    float *out) {
  for (size_t b = 0, i0 = 0; i0 < n; b++, i0 += block) {
    size_t len = n - i0 < block ? n - i0 : block, i = 0;
    float ds = ek_scale_at(scales, b, fp16);
    for (; i + 8 <= len; i += 8) {
      int16x8_t v = vmovl_s8(vld1_s8(q + i0 + i));
      vst1q_f32(out + i0 + i, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(v))), ds));
      vst1q_f32(out + i0 + i + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(v)), ds));
    }
    for (; i < len; i++) out[i0 + i] = (float)q[i0 + i] * ds;
  }
}

void ek_neon_to_f16(const float *x, size_t n, uint16_t *out) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4)
    vst1_u16(out + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
  for (; i < n; i++) out[i] = ek_f16_from_f32(x[i]);
}

void ek_neon_from_f16(const uint16_t *x, size_t n, float *out) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(x + i))));
  for (; i < n; i++) out[i] = ek_f32_from_f16(x[i]);
}

#define EK_PP_NAME ek_neon_preprocess_impl
#include "preprocess_impl.h"

int ek_neon_preprocess(const uint8_t *img, int h, int w, int c, size_t row_stride, int out_h,
                       int out_w, const float *mean, const float *std, float scale, int layout,
                       int out_int8, float q_scale, int q_zero_point, void *out) {
  return ek_neon_preprocess_impl(img, h, w, c, row_stride, out_h, out_w, mean, std, scale, layout,
                                 out_int8, q_scale, q_zero_point, out);
}

/* TBL indices shared by both NEON variants: [n_blocks][kk_pad/16][16], each < 16*m/n. */
int ek_neon_tbl_prepare(struct ek_linear *L, uint8_t **out) {
  size_t chunks = (size_t)L->kk_pad / 16, span = (size_t)16 * L->m / L->n;
  uint8_t *t = malloc((size_t)L->n_blocks * chunks * 16);
  if (!t) return EK_ENOMEM;
  for (int blk = 0; blk < L->n_blocks; blk++)
    for (size_t q = 0; q < chunks; q++)
      for (int i = 0; i < 16; i++)
        t[((size_t)blk * chunks + q) * 16 + i] =
            (uint8_t)(L->kabs[(size_t)blk * L->kk_pad + q * 16 + i] - (int32_t)(q * span));
  *out = t;
  return EK_OK;
}

/* The 16 kept activations of one chunk of one row (regs: 1 dense, 2 or 4 table regs). */
static inline __attribute__((always_inline)) int8x16_t gather16(const int8_t *x, uint8x16_t iv,
                                                                int regs) {
  if (regs == 1) return vld1q_s8(x);
  if (regs == 2) return vqtbl2q_s8(vld1q_s8_x2(x), iv);
  return vqtbl4q_s8(vld1q_s8_x4(x), iv);
}

#define MAC16(acc, xg, w)                                                          \
  do {                                                                             \
    int16x8_t p_ = vmull_s8(vget_low_s8(xg), vget_low_s8(w));                      \
    p_ = vmlal_high_s8(p_, xg, w);                                                 \
    acc = vpadalq_s16(acc, p_);                                                    \
  } while (0)

/* 4 channels' int32x4 partial sums -> one vector of the 4 totals (3 ADDP instead of 4 ADDV). */
static inline int32x4_t sum4(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
  return vpaddq_s32(vpaddq_s32(a, b), vpaddq_s32(c, d));
}

/* R rows (1 or 4) x 4 channels. Accumulators are named scalars, not arrays, and the loop is a
 * do-while over a pointer: with arrays GCC copied every accumulator once per iteration. */
static inline __attribute__((always_inline)) void tile(const struct ek_linear *L, const int8_t *x,
                                                       const int8_t *w, const uint8_t *idx,
                                                       int regs, const int R, int32_t *o) {
  int32x4_t a00 = vdupq_n_s32(0), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00;
  int32x4_t a12 = a00, a13 = a00, a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00;
  int32x4_t a31 = a00, a32 = a00, a33 = a00;
  const size_t span = (size_t)16 * regs; /* regs = m/n: a constant in each specialization */
  size_t ld = (size_t)L->k_pad, ws = (size_t)L->kk_pad;
  const int8_t *x0 = x, *x1 = x + ld, *x2 = x + 2 * ld, *x3 = x + 3 * ld;
  const int8_t *wend = w + ws;
  do {
    uint8x16_t iv = regs == 1 ? vdupq_n_u8(0) : vld1q_u8(idx);
    int8x16_t g0 = gather16(x0, iv, regs), g1 = g0, g2 = g0, g3 = g0;
    if (R > 1) {
      g1 = gather16(x1, iv, regs); g2 = gather16(x2, iv, regs); g3 = gather16(x3, iv, regs);
    }
    int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + ws), w2 = vld1q_s8(w + 2 * ws);
    int8x16_t w3 = vld1q_s8(w + 3 * ws);
    MAC16(a00, g0, w0); MAC16(a01, g0, w1); MAC16(a02, g0, w2); MAC16(a03, g0, w3);
    if (R > 1) {
      MAC16(a10, g1, w0); MAC16(a11, g1, w1); MAC16(a12, g1, w2); MAC16(a13, g1, w3);
      MAC16(a20, g2, w0); MAC16(a21, g2, w1); MAC16(a22, g2, w2); MAC16(a23, g2, w3);
      MAC16(a30, g3, w0); MAC16(a31, g3, w1); MAC16(a32, g3, w2); MAC16(a33, g3, w3);
    }
    x0 += span; x1 += span; x2 += span; x3 += span;
    idx += 16;
    w += 16;
  } while (w != wend);
  size_t os = (size_t)L->n_pad;
  vst1q_s32(o, sum4(a00, a01, a02, a03));
  if (R > 1) {
    vst1q_s32(o + os, sum4(a10, a11, a12, a13));
    vst1q_s32(o + 2 * os, sum4(a20, a21, a22, a23));
    vst1q_s32(o + 3 * os, sum4(a30, a31, a32, a33));
  }
}

/* One noinline function per (gather width, rows) so every loop is fully specialized. */
#define DEF_TILE(NAME, REGS, ROWS)                                                                 \
  __attribute__((noinline)) static void NAME(const struct ek_linear *L, const int8_t *x,           \
                                             const int8_t *w, const uint8_t *idx, int32_t *o) {    \
    tile(L, x, w, idx, REGS, ROWS, o);                                                             \
  }
DEF_TILE(neon_k_r1_4, 1, 4)
DEF_TILE(neon_k_r1_1, 1, 1)
DEF_TILE(neon_k_r2_4, 2, 4)
DEF_TILE(neon_k_r2_1, 2, 1)
DEF_TILE(neon_k_r4_4, 4, 4)
DEF_TILE(neon_k_r4_1, 4, 1)

typedef void (*tile_fn)(const struct ek_linear *, const int8_t *, const int8_t *, const uint8_t *,
                        int32_t *);

static int lin_prepare(struct ek_linear *L) { return ek_neon_tbl_prepare(L, (uint8_t **)&L->isa); }

static void lin_free(struct ek_linear *L) {
  free(L->isa);
  L->isa = NULL;
}

static void lin_acc(const struct ek_linear *L, const ek_xrows *xr, int32_t *acc, int b0, int b1) {
  int regs = L->m / L->n;
  tile_fn f4 = regs == 1 ? neon_k_r1_4 : (regs == 2 ? neon_k_r2_4 : neon_k_r4_4);
  tile_fn f1 = regs == 1 ? neon_k_r1_1 : (regs == 2 ? neon_k_r2_1 : neon_k_r4_1);
  size_t chunks = (size_t)L->kk_pad / 16;
  for (int blk = b0; blk < b1; blk++) {
    const uint8_t *idx = (const uint8_t *)L->isa + (size_t)blk * chunks * 16;
    for (int h = 0; h < 2; h++) {
      int ch0 = blk * EK_BLOCK_CH + 4 * h;
      const int8_t *w = L->vals + (size_t)ch0 * L->kk_pad;
      size_t r = 0;
      for (; r + 4 <= xr->rows; r += 4) f4(L, xr->xq + r * L->k_pad, w, idx, acc + r * L->n_pad + ch0);
      for (; r < xr->rows; r++) f1(L, xr->xq + r * L->k_pad, w, idx, acc + r * L->n_pad + ch0);
    }
  }
}

const ek_kernels ek_kernels_neon = {
  .name = "neon",
  .encode_q8 = ek_neon_enc_q8,
  .decode_q8 = ek_neon_dec_q8,
  .f32_to_f16 = ek_neon_to_f16,
  .f16_to_f32 = ek_neon_from_f16,
  .preprocess = ek_neon_preprocess,
  .linear_prepare = lin_prepare,
  .linear_free = lin_free,
  .linear_acc = lin_acc,
};
