/* x86-64 AVX2 (+FMA, F16C) variant, part 2: the linear core and the dispatch table (the codec
 * and preprocessing are in avx2_codec.c). Compiled with -mavx2 -mfma -mf16c; chosen only when
 * CPUID and XGETBV say the CPU and OS support them.
 *
 * Linear core ("row-vector" design): 16 activation rows live in the lanes of two int32
 * vectors as int16 pairs, and VPMADDWD multiplies a pair of kept inputs by a broadcast pair
 * of weights. For each super-group of inputs (the span holding two kept slots) every
 * possible pair of positions is laid out once per call (6 for 2:4, 16 for 1:4, 1 for dense),
 * so a sparse channel block just picks its pair by offset: no per-element gather, and the
 * dense kernel is the same loop over twice (2:4) or four times (1:4) as many pairs. */
#include <immintrin.h>
#include <stdlib.h>

#include "ek_internal.h"

#define TILE 16

int ek_avx2_enc_q8(const float *, size_t, size_t, int8_t *, void *, int);
void ek_avx2_dec_q8(const int8_t *, size_t, size_t, const void *, int, float *);
void ek_avx2_to_f16(const float *, size_t, uint16_t *);
void ek_avx2_from_f16(const uint16_t *, size_t, float *);
int ek_avx2_preprocess(const uint8_t *, int, int, int, size_t, int, int, const float *,
                       const float *, float, int, int, float, int, void *);

/* --- linear ---------------------------------------------------------------------------- */
typedef struct {
  int span, ncombo, slots;   /* inputs per super-group, pair layouts, pair slots per channel */
  uint8_t ca[16], cb[16];    /* positions (in the super-group) of each pair layout */
  int32_t *off;              /* [n_blocks][slots] offset (int32 units) of a slot's pair */
  int32_t *wpair;            /* [n_blocks][slots][8] int16 weight pairs */
  int8_t *w8;                /* the same pairs as int8 (half the bytes: GEMV streams them) */
} avx2_lin;

static int pair_id(const avx2_lin *A, int a, int b) {
  for (int i = 0; i < A->ncombo; i++)
    if (A->ca[i] == a && A->cb[i] == b) return i;
  return -1;
}

static int lin_prepare(struct ek_linear *L) {
  avx2_lin *A = calloc(1, sizeof *A);
  if (!A) return EK_ENOMEM;
  A->span = 2 * L->m / L->n;
  A->slots = L->kk_pad / 2;
  if (L->n == 2) { /* both kept slots in one group */
    for (int a = 0; a < L->m; a++)
      for (int b = a + 1; b < L->m; b++) { A->ca[A->ncombo] = a; A->cb[A->ncombo++] = b; }
  } else { /* one kept slot in each of two consecutive groups */
    for (int a = 0; a < L->m; a++)
      for (int b = 0; b < L->m; b++) { A->ca[A->ncombo] = a; A->cb[A->ncombo++] = L->m + b; }
  }
  A->off = malloc(sizeof(int32_t) * (size_t)L->n_blocks * A->slots);
  A->wpair = malloc(sizeof(int32_t) * (size_t)L->n_blocks * A->slots * EK_BLOCK_CH);
  A->w8 = malloc((size_t)L->n_blocks * A->slots * EK_BLOCK_CH * 2);
  L->isa = A;
  if (!A->off || !A->wpair || !A->w8) return EK_ENOMEM;
  for (int blk = 0; blk < L->n_blocks; blk++) {
    const int32_t *ka = L->kabs + (size_t)blk * L->kk_pad;
    for (int s = 0; s < A->slots; s++) {
      int base = s * A->span, id = pair_id(A, ka[2 * s] - base, ka[2 * s + 1] - base);
      if (id < 0) return EK_EINVAL;
      A->off[(size_t)blk * A->slots + s] = (s * A->ncombo + id) * TILE;
      for (int c = 0; c < EK_BLOCK_CH; c++) {
        const int8_t *w = L->vals + (size_t)(blk * EK_BLOCK_CH + c) * L->kk_pad;
        uint32_t lo = (uint16_t)(int16_t)w[2 * s], hi = (uint16_t)(int16_t)w[2 * s + 1];
        size_t at = ((size_t)blk * A->slots + s) * EK_BLOCK_CH + c;
        A->wpair[at] = (int32_t)(lo | (hi << 16));
        A->w8[2 * at] = w[2 * s];
        A->w8[2 * at + 1] = w[2 * s + 1];
      }
    }
  }
  return EK_OK;
}

static void lin_free(struct ek_linear *L) {
  avx2_lin *A = L->isa;
  free(A->off); free(A->wpair); free(A->w8); free(A);
  L->isa = NULL;
}

/* Lay out every pair layout of every super-group: full tiles of 16 rows ([slot][combo][16]),
 * then the remaining rows % 16 compactly ([slot][combo][rem]) for the channel-lane path. */
typedef struct {
  const struct ek_linear *L;
  const ek_xrows *xr;
  int32_t *buf;
  size_t tiles, rem;
} prep_ctx;

static void prep_rows(const struct ek_linear *L, const ek_xrows *xr, size_t r0, size_t nr,
                      int32_t *out) {
  const avx2_lin *A = L->isa;
  for (size_t r = 0; r < nr; r++) {
    const int8_t *x = xr->xq + (r0 + r) * (size_t)L->k_pad;
    int32_t *o = out + r;
    if (A->ncombo == 1) { /* dense: the pair of slot s is x[2s], x[2s+1] */
      for (int s = 0; s < A->slots; s++, o += nr)
        *o = (int32_t)((uint32_t)(uint16_t)(int16_t)x[2 * s] |
                       ((uint32_t)(uint16_t)(int16_t)x[2 * s + 1] << 16));
      continue;
    }
    for (int s = 0; s < A->slots; s++) {
      const int8_t *g = x + s * A->span;
      for (int c = 0; c < A->ncombo; c++, o += nr) {
        uint32_t lo = (uint16_t)(int16_t)g[A->ca[c]], hi = (uint16_t)(int16_t)g[A->cb[c]];
        *o = (int32_t)(lo | (hi << 16));
      }
    }
  }
}

/* xt[k][16] = the 16 rows' activation k as int16: 8x8 int16 transposes of sign-extended rows. */
static void transpose16(const int8_t *x, size_t ld, int k_pad, int16_t *xt) {
  for (int k = 0; k < k_pad; k += 8)
    for (int h = 0; h < 2; h++) {
      __m128i r[8], t[8], u[8];
      for (int i = 0; i < 8; i++)
        r[i] = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(x + (8 * h + i) * ld + k)));
      for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm_unpacklo_epi16(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm_unpackhi_epi16(r[2 * i], r[2 * i + 1]);
      }
      for (int i = 0; i < 2; i++) { /* u[4i..4i+3]: k pairs {0,1},{2,3},{4,5},{6,7} of 4 rows */
        u[4 * i] = _mm_unpacklo_epi32(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm_unpackhi_epi32(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm_unpacklo_epi32(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm_unpackhi_epi32(t[4 * i + 1], t[4 * i + 3]);
      }
      for (int j = 0; j < 4; j++) {
        _mm_store_si128((__m128i *)(xt + (k + 2 * j) * TILE + 8 * h), _mm_unpacklo_epi64(u[j], u[4 + j]));
        _mm_store_si128((__m128i *)(xt + (k + 2 * j + 1) * TILE + 8 * h), _mm_unpackhi_epi64(u[j], u[4 + j]));
      }
    }
}

/* A full tile: every pair layout (a, b) of every slot is interleave(xt[a], xt[b]), 16 rows. */
static void prep_full_tile(const struct ek_linear *L, const int8_t *x, int16_t *xt, int32_t *out) {
  const avx2_lin *A = L->isa;
  transpose16(x, (size_t)L->k_pad, L->k_pad, xt);
  for (int s = 0; s < A->slots; s++) {
    const int16_t *g = xt + (size_t)s * A->span * TILE;
    for (int c = 0; c < A->ncombo; c++, out += TILE) {
      __m256i a = _mm256_load_si256((const __m256i *)(g + A->ca[c] * TILE));
      __m256i b = _mm256_load_si256((const __m256i *)(g + A->cb[c] * TILE));
      __m256i lo = _mm256_unpacklo_epi16(a, b), hi = _mm256_unpackhi_epi16(a, b);
      _mm256_store_si256((__m256i *)out, _mm256_permute2x128_si256(lo, hi, 0x20));
      _mm256_store_si256((__m256i *)(out + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
    }
  }
}

static void prep_tiles(void *p, int t0, int t1) {
  const prep_ctx *pc = p;
  const struct ek_linear *L = pc->L;
  const avx2_lin *A = L->isa;
  size_t per_tile = (size_t)A->slots * A->ncombo * TILE;
  int16_t *xt = aligned_alloc(32, sizeof(int16_t) * TILE * (size_t)L->k_pad);
  for (size_t t = (size_t)t0; t < (size_t)t1; t++) {
    if (t < pc->tiles && xt)
      prep_full_tile(L, pc->xr->xq + t * TILE * (size_t)L->k_pad, xt, pc->buf + t * per_tile);
    else
      prep_rows(L, pc->xr, t * TILE, t < pc->tiles ? TILE : pc->rem, pc->buf + t * per_tile);
  }
  free(xt);
}

static int lin_prep_x(const struct ek_linear *L, ek_xrows *xr, int threads) {
  const avx2_lin *A = L->isa;
  size_t tiles = xr->rows / TILE, rem = xr->rows % TILE;
  size_t per_tile = (size_t)A->slots * A->ncombo * TILE;
  int32_t *buf = aligned_alloc(32, sizeof(int32_t) * per_tile * (tiles + (rem > 0)));
  if (!buf) return EK_ENOMEM;
  prep_ctx pc = {L, xr, buf, tiles, rem};
  ek_parallel_for(threads, (int)(tiles + (rem > 0)), prep_tiles, &pc);
  xr->prep = buf;
  return EK_OK;
}

static void lin_prep_x_free(ek_xrows *xr) {
  free(xr->prep);
  xr->prep = NULL;
}

/* Row-lane micro-kernel: 16 rows (lanes) x 4 channels, int16 pairs through VPMADDWD. */
static inline void store_rows4(__m256i c0, __m256i c1, __m256i c2, __m256i c3, int32_t *o,
                               size_t ostride) {
  __m256i t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpackhi_epi32(c0, c1);
  __m256i t2 = _mm256_unpacklo_epi32(c2, c3), t3 = _mm256_unpackhi_epi32(c2, c3);
  __m256i r04 = _mm256_unpacklo_epi64(t0, t2), r15 = _mm256_unpackhi_epi64(t0, t2);
  __m256i r26 = _mm256_unpacklo_epi64(t1, t3), r37 = _mm256_unpackhi_epi64(t1, t3);
  _mm_storeu_si128((__m128i *)o, _mm256_castsi256_si128(r04));
  _mm_storeu_si128((__m128i *)(o + ostride), _mm256_castsi256_si128(r15));
  _mm_storeu_si128((__m128i *)(o + 2 * ostride), _mm256_castsi256_si128(r26));
  _mm_storeu_si128((__m128i *)(o + 3 * ostride), _mm256_castsi256_si128(r37));
  _mm_storeu_si128((__m128i *)(o + 4 * ostride), _mm256_extracti128_si256(r04, 1));
  _mm_storeu_si128((__m128i *)(o + 5 * ostride), _mm256_extracti128_si256(r15, 1));
  _mm_storeu_si128((__m128i *)(o + 6 * ostride), _mm256_extracti128_si256(r26, 1));
  _mm_storeu_si128((__m128i *)(o + 7 * ostride), _mm256_extracti128_si256(r37, 1));
}

__attribute__((noinline)) static void tile4(const int32_t *tb, const int32_t *off,
                                            const int32_t *wp, int slots, int32_t *o,
                                            size_t ostride) {
  __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00;
  __m256i a20 = a00, a21 = a00, a30 = a00, a31 = a00;
  __m256i x0, x1, w, t;
  const int32_t *end = off + slots; /* slots is a multiple of 8: K is padded to 64 */
  long idx;
  /* The loop is written in assembly because GCC 12 kept copying (and spilling) the eight
   * accumulators every iteration whatever the C form: 41 instructions per slot instead of 27.
   * Per slot: the pair vectors of 16 rows, then each of 4 channels' broadcast weight pair
   * times both, accumulated. Two slots per iteration. */
#define EK_SLOT(O, W)                                                   \
  "movslq " O "(%[off]), %[idx]\n\t"                                    \
  "vmovdqa (%[tb],%[idx],4), %[x0]\n\t"                                 \
  "vmovdqa 32(%[tb],%[idx],4), %[x1]\n\t"                               \
  "vpbroadcastd " W "+0(%[wp]), %[w]\n\t"                               \
  "vpmaddwd %[w], %[x0], %[t]\n\t" "vpaddd %[t], %[a00], %[a00]\n\t"    \
  "vpmaddwd %[w], %[x1], %[t]\n\t" "vpaddd %[t], %[a01], %[a01]\n\t"    \
  "vpbroadcastd " W "+4(%[wp]), %[w]\n\t"                               \
  "vpmaddwd %[w], %[x0], %[t]\n\t" "vpaddd %[t], %[a10], %[a10]\n\t"    \
  "vpmaddwd %[w], %[x1], %[t]\n\t" "vpaddd %[t], %[a11], %[a11]\n\t"    \
  "vpbroadcastd " W "+8(%[wp]), %[w]\n\t"                               \
  "vpmaddwd %[w], %[x0], %[t]\n\t" "vpaddd %[t], %[a20], %[a20]\n\t"    \
  "vpmaddwd %[w], %[x1], %[t]\n\t" "vpaddd %[t], %[a21], %[a21]\n\t"    \
  "vpbroadcastd " W "+12(%[wp]), %[w]\n\t"                              \
  "vpmaddwd %[w], %[x0], %[t]\n\t" "vpaddd %[t], %[a30], %[a30]\n\t"    \
  "vpmaddwd %[w], %[x1], %[t]\n\t" "vpaddd %[t], %[a31], %[a31]\n\t"
  __asm__("1:\n\t" EK_SLOT("0", "0") EK_SLOT("4", "32")
          "add $8, %[off]\n\t"
          "add $64, %[wp]\n\t"
          "cmp %[end], %[off]\n\t"
          "jne 1b\n\t"
          : [off] "+r"(off), [wp] "+r"(wp), [idx] "=&r"(idx), [x0] "=&x"(x0), [x1] "=&x"(x1),
            [w] "=&x"(w), [t] "=&x"(t), [a00] "+x"(a00), [a01] "+x"(a01), [a10] "+x"(a10),
            [a11] "+x"(a11), [a20] "+x"(a20), [a21] "+x"(a21), [a30] "+x"(a30), [a31] "+x"(a31)
          : [tb] "r"(tb), [end] "r"(end)
          : "cc", "memory");
#undef EK_SLOT
  /* 4 channels x 8 rows -> per row the 4 channels' sums, stored straight into acc rows */
  store_rows4(a00, a10, a20, a30, o, ostride);
  store_rows4(a01, a11, a21, a31, o + 8 * ostride, ostride);
}

/* Channel-lane micro-kernel for the rows left over after full tiles (GEMV: all of them):
 * the 8 channels of one block are the lanes, each row's activation pair is broadcast, so no
 * lane computes a padding row. R rows (1..4) at a time; rb = compact layout of `stride` rows. */
static inline __attribute__((always_inline)) void chan_rows(const int32_t *rb, int stride,
                                                            const int32_t *off, const int8_t *wp,
                                                            int slots, int R, int32_t *o,
                                                            size_t ostride) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  __m256i b0 = a0, b1 = a0, b2 = a0, b3 = a0; /* second chain: odd slots */
  int s = 0;
  for (; s + 2 <= slots; s += 2) {
    __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wp + (size_t)s * 16)));
    __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wp + (size_t)s * 16 + 16)));
    const int32_t *x = rb + (off[s] >> 4) * stride, *y = rb + (off[s + 1] >> 4) * stride;
    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_set1_epi32(x[0]), w));
    b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(_mm256_set1_epi32(y[0]), v));
    if (R > 1) {
      a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_set1_epi32(x[1]), w));
      b1 = _mm256_add_epi32(b1, _mm256_madd_epi16(_mm256_set1_epi32(y[1]), v));
    }
    if (R > 2) {
      a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_set1_epi32(x[2]), w));
      b2 = _mm256_add_epi32(b2, _mm256_madd_epi16(_mm256_set1_epi32(y[2]), v));
    }
    if (R > 3) {
      a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_set1_epi32(x[3]), w));
      b3 = _mm256_add_epi32(b3, _mm256_madd_epi16(_mm256_set1_epi32(y[3]), v));
    }
  }
  if (s < slots) {
    __m256i w = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wp + (size_t)s * 16)));
    const int32_t *x = rb + (off[s] >> 4) * stride;
    a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_set1_epi32(x[0]), w));
    if (R > 1) a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_set1_epi32(x[1]), w));
    if (R > 2) a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_set1_epi32(x[2]), w));
    if (R > 3) a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_set1_epi32(x[3]), w));
  }
  _mm256_storeu_si256((__m256i *)o, _mm256_add_epi32(a0, b0));
  if (R > 1) _mm256_storeu_si256((__m256i *)(o + ostride), _mm256_add_epi32(a1, b1));
  if (R > 2) _mm256_storeu_si256((__m256i *)(o + 2 * ostride), _mm256_add_epi32(a2, b2));
  if (R > 3) _mm256_storeu_si256((__m256i *)(o + 3 * ostride), _mm256_add_epi32(a3, b3));
}

#define DEF_CHAN(NAME, R)                                                                      \
  __attribute__((noinline)) static void NAME(const int32_t *rb, int stride, const int32_t *off, \
                                             const int8_t *wp, int slots, int32_t *o,          \
                                             size_t ostride) {                                 \
    chan_rows(rb, stride, off, wp, slots, R, o, ostride);                                      \
  }
DEF_CHAN(chan1, 1)
DEF_CHAN(chan2, 2)
DEF_CHAN(chan3, 3)
DEF_CHAN(chan4, 4)

static void lin_acc(const struct ek_linear *L, const ek_xrows *xr, int32_t *acc, int b0, int b1) {
  const avx2_lin *A = L->isa;
  size_t tiles = xr->rows / TILE, rem = xr->rows % TILE;
  size_t per_tile = (size_t)A->slots * A->ncombo * TILE;
  void (*const chan[4])(const int32_t *, int, const int32_t *, const int8_t *, int, int32_t *,
                        size_t) = {chan1, chan2, chan3, chan4};
  for (int blk = b0; blk < b1; blk++) {
    const int32_t *off = A->off + (size_t)blk * A->slots;
    const int32_t *wp = A->wpair + (size_t)blk * A->slots * EK_BLOCK_CH;
    for (size_t t = 0; t < tiles; t++) {
      const int32_t *tb = (const int32_t *)xr->prep + t * per_tile;
      for (int h = 0; h < 2; h++)
        tile4(tb, off, wp + 4 * h, A->slots, acc + t * TILE * L->n_pad + blk * EK_BLOCK_CH + 4 * h,
              (size_t)L->n_pad);
    }
    const int32_t *rb = (const int32_t *)xr->prep + tiles * per_tile;
    for (size_t r = 0; r < rem; r += 4) {
      size_t R = rem - r < 4 ? rem - r : 4;
      chan[R - 1](rb + r, (int)rem, off, A->w8 + (size_t)blk * A->slots * EK_BLOCK_CH * 2, A->slots,
                  acc + (tiles * TILE + r) * L->n_pad + blk * EK_BLOCK_CH, (size_t)L->n_pad);
    }
  }
}

const ek_kernels ek_kernels_avx2 = {
  .name = "avx2",
  .encode_q8 = ek_avx2_enc_q8,
  .decode_q8 = ek_avx2_dec_q8,
  .f32_to_f16 = ek_avx2_to_f16,
  .f16_to_f32 = ek_avx2_from_f16,
  .preprocess = ek_avx2_preprocess,
  .linear_prepare = lin_prepare,
  .linear_free = lin_free,
  .linear_prep_x = lin_prep_x,
  .linear_prep_x_free = lin_prep_x_free,
  .linear_acc = lin_acc,
};
