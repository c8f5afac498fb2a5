/* Internal: the dispatch table, the prepared linear layer, helpers shared by every variant. */
#ifndef EK_INTERNAL_H
#define EK_INTERNAL_H

#include <math.h>
#include <string.h>

#include "edgekit_native.h"

#define EK_BLOCK_CH 8  /* output channels sharing one sparsity mask */
#define EK_K_ALIGN 64  /* K is zero-padded to this inside the linear layer */

struct ek_linear {
  int n_out, k_in, n, m;
  int n_pad, k_pad, kk_pad; /* kk = kept slots per channel (k_pad * n / m) */
  int n_blocks;
  int8_t *vals;       /* [n_pad][kk_pad] kept weights, zero padded */
  int32_t *kabs;      /* [n_blocks][kk_pad] absolute input index of each kept slot */
  uint8_t *pos;       /* [n_blocks][kk_pad] position inside its group */
  float *wscale, *bias; /* [n_pad] */
  void *isa;          /* variant-specific weight layout, built by kernels.linear_prepare */
  const struct ek_kernels *kern;
};

/* Per-call scratch a variant may build from the quantized rows before the channel loop. */
typedef struct {
  const int8_t *xq; /* [rows][k_pad] */
  size_t rows;
  void *prep;       /* variant scratch (AVX2: pair tiles) */
} ek_xrows;

typedef struct ek_kernels {
  const char *name;
  int (*encode_q8)(const float *x, size_t n, size_t block, int8_t *q, void *scales, int fp16);
  void (*decode_q8)(const int8_t *q, size_t n, size_t block, const void *scales, int fp16,
                    float *out);
  void (*f32_to_f16)(const float *x, size_t n, uint16_t *out);
  void (*f16_to_f32)(const uint16_t *x, size_t n, float *out);
  int (*preprocess)(const uint8_t *img, int h, int w, int c, size_t row_stride, int out_h,
                    int out_w, const float *mean, const float *std, float scale, int layout,
                    int out_int8, float q_scale, int q_zero_point, void *out);
  int (*linear_prepare)(struct ek_linear *lin);          /* may be NULL */
  void (*linear_free)(struct ek_linear *lin);            /* may be NULL */
  int (*linear_prep_x)(const struct ek_linear *lin, ek_xrows *xr, int threads); /* may be NULL */
  void (*linear_prep_x_free)(ek_xrows *xr);              /* may be NULL */
  /* acc [rows][n_pad] for channel blocks [b0, b1) */
  void (*linear_acc)(const struct ek_linear *lin, const ek_xrows *xr, int32_t *acc, int b0,
                     int b1);
} ek_kernels;

extern const ek_kernels ek_kernels_portable;
#if defined(__x86_64__)
extern const ek_kernels ek_kernels_avx2;
#endif
#if defined(__aarch64__)
extern const ek_kernels ek_kernels_neon;
extern const ek_kernels ek_kernels_neon_dot;
#endif
const ek_kernels *ek_active(void);

/* Run fn(ctx, i0, i1) over [0, n) split into contiguous ranges on up to `threads` threads. */
void ek_parallel_for(int threads, int n, void (*fn)(void *ctx, int i0, int i1), void *ctx);

/* --- scalar helpers: every variant uses these for per-block scalars, so results agree ---- */
static inline uint32_t ek_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float ek_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* IEEE binary32 -> binary16, round to nearest even (same as F16C / FCVTN). */
static inline uint16_t ek_f16_from_f32(float f) {
  uint32_t x = ek_f32_bits(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) /* inf or nan (quiet, keep top payload bits) */
    return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? (0x200u | ((ax >> 13) & 0x3ffu)) : 0));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
  if (ax < 0x38800000u) { /* result is subnormal or zero */
    if (ax < 0x33000000u) return (uint16_t)sign; /* below half the smallest subnormal */
    uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
    int shift = 126 - (int)(ax >> 23); /* value = mant * 2^(e-150); units of 2^-24 */
    uint32_t r = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) r++;
    return (uint16_t)(sign | r);
  }
  uint32_t r = ((ax - 0x38000000u) >> 13); /* rebias exponent 127 -> 15 */
  uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
  return (uint16_t)(sign | r);
}

static inline float ek_f32_from_f16(uint16_t h) {
  uint32_t sign = ((uint32_t)h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (e == 0x1f) /* inf, or NaN made quiet as hardware conversions do */
    return ek_bits_f32(sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0u));
  if (e == 0) { /* zero or subnormal: mant * 2^-24 is exact in binary32 */
    float v = (float)mant * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return ek_bits_f32(sign | ((e + 112u) << 23) | (mant << 13));
}

/* The block scale from the block's max |x| bits: d = amax / 127, fp16-rounded if asked
 * (saturating at 65504). Writes the stored scale, returns the multiplier 1/d (0 if d == 0). */
static inline float ek_block_scale(uint32_t amax_bits, void *scales, size_t b, int fp16) {
  float d = ek_bits_f32(amax_bits) / 127.0f;
  if (fp16) {
    uint16_t h = ek_f16_from_f32(d);
    if ((h & 0x7fffu) >= 0x7c00u) h = 0x7bffu;
    ((uint16_t *)scales)[b] = h;
    d = ek_f32_from_f16(h);
  } else {
    ((float *)scales)[b] = d;
  }
  return d > 0.0f ? 1.0f / d : 0.0f;
}

static inline float ek_scale_at(const void *scales, size_t b, int fp16) {
  return fp16 ? ek_f32_from_f16(((const uint16_t *)scales)[b]) : ((const float *)scales)[b];
}

static inline int8_t ek_q8(float v) { /* round half even, clamp to [-127, 127] */
  float r = nearbyintf(v);
  r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
  return (int8_t)r;
}

#endif
