/* Portable C reference variant: always available, and the yardstick every other variant's
 * tests compare against (exactly for integers, to a stated tolerance for floats). */
#include "ek_internal.h"

static int enc_q8(const float *x, size_t n, size_t block, int8_t *q, void *scales, int fp16) {
  for (size_t b = 0, i0 = 0; i0 < n; b++, i0 += block) {
    size_t len = n - i0 < block ? n - i0 : block;
    uint32_t amax = 0;
    for (size_t i = 0; i < len; i++) {
      uint32_t a = ek_f32_bits(x[i0 + i]) & 0x7fffffffu; /* integer order == |x| order */
      amax = a > amax ? a : amax;
    }
    if (amax >= 0x7f800000u) return EK_ENONFINITE;
    float inv = ek_block_scale(amax, scales, b, fp16);
    for (size_t i = 0; i < len; i++) q[i0 + i] = ek_q8(x[i0 + i] * inv);
  }
  return EK_OK;
}

static void dec_q8(const int8_t *q, size_t n, size_t block, const void *scales, int fp16,
                   float *out) {
  for (size_t b = 0, i0 = 0; i0 < n; b++, i0 += block) {
    size_t len = n - i0 < block ? n - i0 : block;
    float d = ek_scale_at(scales, b, fp16);
    for (size_t i = 0; i < len; i++) out[i0 + i] = (float)q[i0 + i] * d;
  }
}

static void to_f16(const float *x, size_t n, uint16_t *out) {
  for (size_t i = 0; i < n; i++) out[i] = ek_f16_from_f32(x[i]);
}

static void from_f16(const uint16_t *x, size_t n, float *out) {
  for (size_t i = 0; i < n; i++) out[i] = ek_f32_from_f16(x[i]);
}

#define EK_PP_NAME pp_portable
#include "preprocess_impl.h"

/* Reference sparse/dense core: one channel at a time, gathering by absolute index. */
static void lin_acc(const struct ek_linear *L, const ek_xrows *xr, int32_t *acc, int b0, int b1) {
  for (int blk = b0; blk < b1; blk++) {
    const int32_t *kabs = L->kabs + (size_t)blk * L->kk_pad;
    for (size_t r = 0; r < xr->rows; r++) {
      const int8_t *x = xr->xq + r * (size_t)L->k_pad;
      for (int c = 0; c < EK_BLOCK_CH; c++) {
        int ch = blk * EK_BLOCK_CH + c;
        const int8_t *w = L->vals + (size_t)ch * L->kk_pad;
        int32_t s = 0;
        for (int j = 0; j < L->kk_pad; j++) s += (int32_t)w[j] * (int32_t)x[kabs[j]];
        acc[r * (size_t)L->n_pad + ch] = s;
      }
    }
  }
}

const ek_kernels ek_kernels_portable = {
  .name = "portable",
  .encode_q8 = enc_q8,
  .decode_q8 = dec_q8,
  .f32_to_f16 = to_f16,
  .f16_to_f32 = from_f16,
  .preprocess = pp_portable,
  .linear_acc = lin_acc,
};
