/* aarch64 NEON + dot product variant (Raspberry Pi 5, Cortex-A76, Armv8.2-A). Compiled with
 * -march=armv8.2-a+dotprod and chosen only when HWCAP_ASIMDDP is set. Codec and
 * preprocessing come from neon.c; this file holds the SDOT linear core.
 *
 * Linear core ("channel-lane" design): each int32 lane is one output channel. SDOT by element
 * multiplies 4 channels x 4 kept weights by 4 gathered activations of one row (one lane of a
 * 16-byte gathered vector) and accumulates: 16 MACs per instruction. Weights of 8 channels x
 * 4 slots are loaded once per 4 rows; activations are gathered with TBL exactly as in neon.c. */
#include <arm_neon.h>
#include <stdlib.h>

#include "ek_internal.h"

int ek_neon_enc_q8(const float *, size_t, size_t, int8_t *, void *, int);
void ek_neon_dec_q8(const int8_t *, size_t, size_t, const void *, int, float *);
void ek_neon_to_f16(const float *, size_t, uint16_t *);
void ek_neon_from_f16(const uint16_t *, size_t, float *);
int ek_neon_preprocess(const uint8_t *, int, int, int, size_t, int, int, const float *,
                       const float *, float, int, int, float, int, void *);
int ek_neon_tbl_prepare(struct ek_linear *L, uint8_t **out);

typedef struct {
  uint8_t *idx;  /* TBL indices, as neon.c */
  int8_t *wdot;  /* [n_blocks][kk_pad/4][8 channels][4 slots] */
} dot_lin;

static int lin_prepare(struct ek_linear *L) {
  dot_lin *D = calloc(1, sizeof *D);
  if (!D) return EK_ENOMEM;
  L->isa = D;
  int rc = ek_neon_tbl_prepare(L, &D->idx);
  if (rc != EK_OK) return rc;
  size_t quads = (size_t)L->kk_pad / 4;
  D->wdot = malloc((size_t)L->n_blocks * quads * 32);
  if (!D->wdot) return EK_ENOMEM;
  for (int blk = 0; blk < L->n_blocks; blk++)
    for (size_t j = 0; j < quads; j++)
      for (int c = 0; c < EK_BLOCK_CH; c++)
        memcpy(D->wdot + (((size_t)blk * quads + j) * EK_BLOCK_CH + c) * 4,
               L->vals + (size_t)(blk * EK_BLOCK_CH + c) * L->kk_pad + j * 4, 4);
  return EK_OK;
}

static void lin_free(struct ek_linear *L) {
  dot_lin *D = L->isa;
  free(D->idx); free(D->wdot); free(D);
  L->isa = NULL;
}

static inline __attribute__((always_inline)) int8x16_t gather16(const int8_t *x, uint8x16_t idx,
                                                                int regs) {
  if (regs == 1) return vld1q_s8(x);
  if (regs == 2) return vqtbl2q_s8(vld1q_s8_x2(x), idx);
  return vqtbl4q_s8(vld1q_s8_x4(x), idx);
}

/* Row r's 8 channels += 4 quads of kept weights x the 4 gathered activations of lane J. */
#define DOTQ(A, B, G, J)                                                        \
  do {                                                                          \
    A = vdotq_laneq_s32(A, w##J##l, G, J);                                      \
    B = vdotq_laneq_s32(B, w##J##h, G, J);                                      \
  } while (0)
#define DOTROW(A, B, G)                                                         \
  do { DOTQ(A, B, G, 0); DOTQ(A, B, G, 1); DOTQ(A, B, G, 2); DOTQ(A, B, G, 3); } while (0)

/* R rows (1 or 4) x 8 channels. Named accumulators and a do-while over the weight pointer:
 * with arrays GCC copied every accumulator once per iteration (20 MOVs per 32 SDOTs). */
static inline __attribute__((always_inline)) void tile(const struct ek_linear *L, const int8_t *x,
                                                       const int8_t *wd, const uint8_t *idx,
                                                       int regs, const int R, int32_t *o) {
  int32x4_t l0 = vdupq_n_s32(0), h0 = l0, l1 = l0, h1 = l0, l2 = l0, h2 = l0, l3 = l0, h3 = l0;
  const size_t span = (size_t)16 * regs, ld = (size_t)L->k_pad; /* regs = m/n: a constant */
  const int8_t *x0 = x, *x1 = x + ld, *x2 = x + 2 * ld, *x3 = x + 3 * ld;
  const int8_t *wend = wd + (size_t)L->kk_pad * EK_BLOCK_CH;
  do {
    uint8x16_t iv = regs == 1 ? vdupq_n_u8(0) : vld1q_u8(idx);
    int8x16_t g0 = gather16(x0, iv, regs), g1 = g0, g2 = g0, g3 = g0;
    if (R > 1) {
      g1 = gather16(x1, iv, regs); g2 = gather16(x2, iv, regs); g3 = gather16(x3, iv, regs);
    }
    int8x16_t w0l = vld1q_s8(wd), w0h = vld1q_s8(wd + 16), w1l = vld1q_s8(wd + 32);
    int8x16_t w1h = vld1q_s8(wd + 48), w2l = vld1q_s8(wd + 64), w2h = vld1q_s8(wd + 80);
    int8x16_t w3l = vld1q_s8(wd + 96), w3h = vld1q_s8(wd + 112);
    DOTROW(l0, h0, g0);
    if (R > 1) {
      DOTROW(l1, h1, g1);
      DOTROW(l2, h2, g2);
      DOTROW(l3, h3, g3);
    }
    x0 += span; x1 += span; x2 += span; x3 += span;
    idx += 16;
    wd += 128;
  } while (wd != wend);
  size_t os = (size_t)L->n_pad;
  vst1q_s32(o, l0); vst1q_s32(o + 4, h0);
  if (R > 1) {
    vst1q_s32(o + os, l1); vst1q_s32(o + os + 4, h1);
    vst1q_s32(o + 2 * os, l2); vst1q_s32(o + 2 * os + 4, h2);
    vst1q_s32(o + 3 * os, l3); vst1q_s32(o + 3 * os + 4, h3);
  }
}

#define DEF_TILE(NAME, REGS, ROWS)                                                             \
  __attribute__((noinline)) static void NAME(const struct ek_linear *L, const int8_t *x,       \
                                             const int8_t *wd, const uint8_t *idx, int32_t *o) { \
    tile(L, x, wd, idx, REGS, ROWS, o);                                                        \
  }
DEF_TILE(dot_k_r1_4, 1, 4)
DEF_TILE(dot_k_r1_1, 1, 1)
DEF_TILE(dot_k_r2_4, 2, 4)
DEF_TILE(dot_k_r2_1, 2, 1)
DEF_TILE(dot_k_r4_4, 4, 4)
DEF_TILE(dot_k_r4_1, 4, 1)

typedef void (*tile_fn)(const struct ek_linear *, const int8_t *, const int8_t *, const uint8_t *,
                        int32_t *);

static void lin_acc(const struct ek_linear *L, const ek_xrows *xr, int32_t *acc, int b0, int b1) {
  const dot_lin *D = L->isa;
  int regs = L->m / L->n;
  tile_fn f4 = regs == 1 ? dot_k_r1_4 : (regs == 2 ? dot_k_r2_4 : dot_k_r4_4);
  tile_fn f1 = regs == 1 ? dot_k_r1_1 : (regs == 2 ? dot_k_r2_1 : dot_k_r4_1);
  size_t chunks = (size_t)L->kk_pad / 16, quads = (size_t)L->kk_pad / 4;
  for (int blk = b0; blk < b1; blk++) {
    const uint8_t *idx = D->idx + (size_t)blk * chunks * 16;
    const int8_t *wd = D->wdot + (size_t)blk * quads * 32;
    int32_t *o = acc + blk * EK_BLOCK_CH;
    size_t r = 0;
    for (; r + 4 <= xr->rows; r += 4) f4(L, xr->xq + r * L->k_pad, wd, idx, o + r * L->n_pad);
    for (; r < xr->rows; r++) f1(L, xr->xq + r * L->k_pad, wd, idx, o + r * L->n_pad);
  }
}

const ek_kernels ek_kernels_neon_dot = {
  .name = "neon-dotprod",
  .encode_q8 = ek_neon_enc_q8,
  .decode_q8 = ek_neon_dec_q8,
  .f32_to_f16 = ek_neon_to_f16,
  .f16_to_f32 = ek_neon_from_f16,
  .preprocess = ek_neon_preprocess,
  .linear_prepare = lin_prepare,
  .linear_free = lin_free,
  .linear_acc = lin_acc,
};
