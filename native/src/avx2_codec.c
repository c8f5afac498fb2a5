/* x86-64 AVX2 (+F16C) variant, part 1: the activation codec, fp16 conversion and image
 * preprocessing. Compiled with -mavx2 -mfma -mf16c like avx2.c (the linear core), which holds
 * the variant's dispatch table. */
#include <immintrin.h>

#include "ek_internal.h"

static inline uint32_t hmax_u32(__m256i v) {
  __m128i m = _mm_max_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0x4e));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0xb1));
  return (uint32_t)_mm_cvtsi128_si32(m);
}

static inline __m256i q8_lanes(__m256 x, __m256 inv) {
  /* clamp in float first (huge values would convert to INT_MIN), then nearest-even */
  __m256 v = _mm256_mul_ps(x, inv);
  v = _mm256_max_ps(_mm256_min_ps(v, _mm256_set1_ps(127.0f)), _mm256_set1_ps(-127.0f));
  return _mm256_cvtps_epi32(v);
}

/* One block's values -> int8 with the multiplier inv (4 vectors of 8 at a time). */
static inline void quant_block(const float *xb, size_t len, float invs, int8_t *qb) {
  __m256 inv = _mm256_set1_ps(invs);
  size_t i = 0;
  for (; i + 32 <= len; i += 32) {
    __m256i a = q8_lanes(_mm256_loadu_ps(xb + i), inv), bq = q8_lanes(_mm256_loadu_ps(xb + i + 8), inv);
    __m256i c = q8_lanes(_mm256_loadu_ps(xb + i + 16), inv), d = q8_lanes(_mm256_loadu_ps(xb + i + 24), inv);
    __m256i ab = _mm256_packs_epi32(a, bq), cd = _mm256_packs_epi32(c, d);
    __m256i p = _mm256_packs_epi16(ab, cd); /* lanes out of order: fix with one permute */
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)(qb + i), p);
  }
  for (; i < len; i++) qb[i] = ek_q8(xb[i] * invs);
}

static inline __m256i vmax_abs(const float *xb, size_t len) {
  const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
  __m256i vm = _mm256_setzero_si256();
  for (size_t i = 0; i < len; i += 8)
    vm = _mm256_max_epi32(vm, _mm256_and_si256(_mm256_castps_si256(_mm256_loadu_ps(xb + i)), absmask));
  return vm;
}

/* 8 vectors -> one vector of their 8 horizontal maxima (lane j = max of v[j]). */
static inline __m256i hmax8(const __m256i v[8]) {
  __m256i t[4], u[2];
  for (int i = 0; i < 4; i++)
    t[i] = _mm256_max_epi32(_mm256_unpacklo_epi32(v[2 * i], v[2 * i + 1]),
                            _mm256_unpackhi_epi32(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 2; i++)
    u[i] = _mm256_max_epi32(_mm256_unpacklo_epi64(t[2 * i], t[2 * i + 1]),
                            _mm256_unpackhi_epi64(t[2 * i], t[2 * i + 1]));
  return _mm256_max_epi32(_mm256_permute2x128_si256(u[0], u[1], 0x20),
                          _mm256_permute2x128_si256(u[0], u[1], 0x31));
}

/* Eight full blocks (block % 8 == 0): maxima, scales and multipliers computed 8 at a time with
 * the same IEEE operations as ek_block_scale (F16C rounds to nearest even, like the scalar). */
static int enc_8blocks(const float *x, size_t block, int8_t *q, void *scales, size_t b0, int fp16) {
  __m256i v[8];
  for (int j = 0; j < 8; j++) v[j] = vmax_abs(x + j * block, block);
  __m256i amax = hmax8(v);
  const __m256i bad = _mm256_cmpgt_epi32(amax, _mm256_set1_epi32(0x7f7fffff)); /* inf/nan */
  if (!_mm256_testz_si256(bad, bad))
    return EK_ENONFINITE;
  __m256 d = _mm256_div_ps(_mm256_castsi256_ps(amax), _mm256_set1_ps(127.0f));
  if (fp16) {
    __m128i h = _mm_min_epu16(_mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT), _mm_set1_epi16(0x7bff));
    _mm_storeu_si128((__m128i *)((uint16_t *)scales + b0), h);
    d = _mm256_cvtph_ps(h);
  } else {
    _mm256_storeu_ps((float *)scales + b0, d);
  }
  __m256 inv = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), d),
                             _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_GT_OQ));
  float invs[8];
  _mm256_storeu_ps(invs, inv);
  for (int j = 0; j < 8; j++) quant_block(x + j * block, block, invs[j], q + j * block);
  return EK_OK;
}

int ek_avx2_enc_q8(const float *x, size_t n, size_t block, int8_t *q, void *scales, int fp16) {
  size_t b = 0, i0 = 0;
  if (block % 8 == 0)
    for (; i0 + 8 * block <= n; b += 8, i0 += 8 * block)
      if (enc_8blocks(x + i0, block, q + i0, scales, b, fp16) != EK_OK) return EK_ENONFINITE;
  for (; i0 < n; b++, i0 += block) {
    size_t len = n - i0 < block ? n - i0 : block, i = len / 8 * 8;
    const float *xb = x + i0;
    uint32_t amax = hmax_u32(vmax_abs(xb, i));
    for (; i < len; i++) {
      uint32_t a = ek_f32_bits(xb[i]) & 0x7fffffffu;
      amax = a > amax ? a : amax;
    }
    if (amax >= 0x7f800000u) return EK_ENONFINITE;
    quant_block(xb, len, ek_block_scale(amax, scales, b, fp16), q + i0);
  }
  return EK_OK;
}

/* One block of int8 -> float times d. */
static inline void dequant_block(const int8_t *q, size_t len, float ds, float *out) {
  __m256 d = _mm256_set1_ps(ds);
  size_t i = 0;
  for (; i + 32 <= len; i += 32) {
    __m256i v = _mm256_loadu_si256((const __m256i *)(q + i));
    __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), d));
    _mm256_storeu_ps(out + i + 8, _mm256_mul_ps(
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), d));
    _mm256_storeu_ps(out + i + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), d));
    _mm256_storeu_ps(out + i + 24, _mm256_mul_ps(
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), d));
  }
  for (; i + 8 <= len; i += 8) {
    __m128i v = _mm_loadl_epi64((const __m128i *)(q + i));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), d));
  }
  for (; i < len; i++) out[i] = (float)q[i] * ds;
}

void ek_avx2_dec_q8(const int8_t *q, size_t n, size_t block, const void *scales, int fp16,
                    float *out) {
  size_t b = 0, i0 = 0;
  for (; i0 + 8 * block <= n; b += 8, i0 += 8 * block) { /* 8 scales converted at once */
    float ds[8];
    _mm256_storeu_ps(ds, fp16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)scales + b)))
                              : _mm256_loadu_ps((const float *)scales + b));
    for (int j = 0; j < 8; j++) dequant_block(q + i0 + j * block, block, ds[j], out + i0 + j * block);
  }
  for (; i0 < n; b++, i0 += block)
    dequant_block(q + i0, n - i0 < block ? n - i0 : block, ek_scale_at(scales, b, fp16), out + i0);
}

void ek_avx2_to_f16(const float *x, size_t n, uint16_t *out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; i++) out[i] = ek_f16_from_f32(x[i]);
}

void ek_avx2_from_f16(const uint16_t *x, size_t n, float *out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
  for (; i < n; i++) out[i] = ek_f32_from_f16(x[i]);
}

#define EK_PP_NAME pp_avx2
#include "preprocess_impl.h"

int ek_avx2_preprocess(const uint8_t *img, int h, int w, int c, size_t row_stride, int out_h,
                       int out_w, const float *mean, const float *std, float scale, int layout,
                       int out_int8, float q_scale, int q_zero_point, void *out) {
  return pp_avx2(img, h, w, c, row_stride, out_h, out_w, mean, std, scale, layout, out_int8,
                 q_scale, q_zero_point, out);
}

