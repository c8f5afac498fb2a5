/* The int8 linear layer shared by every variant: weight validation and padding, per-row
 * activation quantization, the thread split over blocks of output channels, dequantization.
 * Variants supply only the integer core (and optionally their own weight layout). */
#include <stdatomic.h>
#include <stdlib.h>

#include "ek_internal.h"

static int pattern_ok(int n, int m) {
  return (n == 1 && m == 1) || (n == 1 && m == 2) || (n == 2 && m == 4) || (n == 1 && m == 4);
}

int ek_linear_create(const int8_t *vals, const uint8_t *pos, const float *wscale,
                     const float *bias, int n_out, int k_in, int n, int m, ek_linear **out) {
  if (!out || !vals || !pos || !wscale || n_out <= 0 || k_in <= 0 || !pattern_ok(n, m) ||
      k_in % m != 0)
    return EK_EINVAL;
  *out = NULL;
  ek_linear *L = calloc(1, sizeof *L);
  if (!L) return EK_ENOMEM;
  L->n_out = n_out; L->k_in = k_in; L->n = n; L->m = m;
  L->n_pad = (n_out + EK_BLOCK_CH - 1) / EK_BLOCK_CH * EK_BLOCK_CH;
  L->k_pad = (k_in + EK_K_ALIGN - 1) / EK_K_ALIGN * EK_K_ALIGN;
  L->kk_pad = L->k_pad / m * n;
  L->n_blocks = L->n_pad / EK_BLOCK_CH;
  int kk = k_in / m * n, groups = k_in / m;
  L->vals = calloc((size_t)L->n_pad * L->kk_pad, 1);
  L->kabs = malloc(sizeof(int32_t) * (size_t)L->n_blocks * L->kk_pad);
  L->pos = malloc((size_t)L->n_blocks * L->kk_pad);
  L->wscale = calloc((size_t)L->n_pad, sizeof(float));
  L->bias = calloc((size_t)L->n_pad, sizeof(float));
  if (!L->vals || !L->kabs || !L->pos || !L->wscale || !L->bias) {
    ek_linear_destroy(L);
    return EK_ENOMEM;
  }
  for (size_t i = 0; i < (size_t)n_out * kk; i++)
    if (vals[i] == -128) { /* [-127, 127] keeps every kernel's int16 pair sums exact */
      ek_linear_destroy(L);
      return EK_EINVAL;
    }
  for (int ch = 0; ch < n_out; ch++) {
    memcpy(L->vals + (size_t)ch * L->kk_pad, vals + (size_t)ch * kk, (size_t)kk);
    L->wscale[ch] = wscale[ch];
    L->bias[ch] = bias ? bias[ch] : 0.0f;
    if (!isfinite(wscale[ch]) || (bias && !isfinite(bias[ch]))) {
      ek_linear_destroy(L);
      return EK_EINVAL;
    }
  }
  for (int blk = 0; blk < L->n_blocks; blk++) {
    uint8_t *p = L->pos + (size_t)blk * L->kk_pad;
    int32_t *ka = L->kabs + (size_t)blk * L->kk_pad;
    for (int j = 0; j < L->kk_pad; j++) {
      int g = j / n, in_group = j % n;
      /* padding groups keep slots 0..n-1: distinct and increasing, like real groups */
      int pj = g < groups ? pos[(size_t)blk * kk + j] : in_group;
      if (pj >= m || (in_group > 0 && pj <= p[j - 1])) {
        ek_linear_destroy(L);
        return EK_EINVAL; /* positions must be < m and strictly increasing inside a group */
      }
      p[j] = (uint8_t)pj;
      ka[j] = g * m + pj;
    }
  }
  L->kern = ek_active();
  if (L->kern->linear_prepare) {
    int rc = L->kern->linear_prepare(L);
    if (rc != EK_OK) {
      ek_linear_destroy(L);
      return rc;
    }
  }
  *out = L;
  return EK_OK;
}

void ek_linear_destroy(ek_linear *L) {
  if (!L) return;
  if (L->isa && L->kern && L->kern->linear_free) L->kern->linear_free(L);
  free(L->vals); free(L->kabs); free(L->pos); free(L->wscale); free(L->bias);
  free(L);
}

/* Below this many multiply-accumulates per thread, starting a thread costs more than it saves
 * (pthread_create + join measured at 20-50 us here; one core does ~1M int8 MACs in 15 us). */
#define EK_MACS_PER_THREAD (2u << 20)

typedef struct {
  const ek_linear *L;
  const ek_xrows *xr;
  int32_t *acc;
  const float *sx; /* per-row activation scales; NULL: leave int32 acc only */
  float *y;        /* [rows][n_out] */
} acc_ctx;

/* Integer core for channel blocks [b0, b1), then (forward) their dequantization, on this thread. */
static void acc_range(void *p, int b0, int b1) {
  acc_ctx *c = p;
  const ek_linear *L = c->L;
  L->kern->linear_acc(L, c->xr, c->acc, b0, b1);
  if (!c->y) return;
  int c0 = b0 * EK_BLOCK_CH, c1 = b1 * EK_BLOCK_CH < L->n_out ? b1 * EK_BLOCK_CH : L->n_out;
  for (size_t r = 0; r < c->xr->rows; r++) {
    const int32_t *a = c->acc + r * L->n_pad;
    float *o = c->y + r * L->n_out, s = c->sx[r];
    for (int ch = c0; ch < c1; ch++) o[ch] = (float)a[ch] * (s * L->wscale[ch]) + L->bias[ch];
  }
}

static int run_core(const ek_linear *L, ek_xrows *xr, int32_t *acc, int threads, const float *sx,
                    float *y) {
  if (threads <= 0) threads = ek_default_threads();
  size_t macs = xr->rows * (size_t)L->n_pad * (size_t)L->kk_pad, cap = 1 + macs / EK_MACS_PER_THREAD;
  if ((size_t)threads > cap) threads = (int)cap;
  if (L->kern->linear_prep_x) {
    int rc = L->kern->linear_prep_x(L, xr, threads);
    if (rc != EK_OK) return rc;
  }
  acc_ctx c = {L, xr, acc, sx, y};
  ek_parallel_for(threads, L->n_blocks, acc_range, &c);
  if (L->kern->linear_prep_x_free) L->kern->linear_prep_x_free(xr);
  return EK_OK;
}

int ek_linear_acc(const ek_linear *L, const int8_t *xq, size_t rows, int32_t *acc, int threads) {
  if (!L || (rows && (!xq || !acc))) return EK_EINVAL;
  if (rows == 0) return EK_OK;
  int8_t *xp = calloc(rows * (size_t)L->k_pad, 1);
  int32_t *ap = malloc(sizeof(int32_t) * rows * (size_t)L->n_pad);
  int rc = EK_ENOMEM;
  if (xp && ap) {
    for (size_t r = 0; r < rows; r++) {
      for (int k = 0; k < L->k_in; k++)
        if (xq[r * L->k_in + k] == -128) { rc = EK_EINVAL; goto done; } /* [-127, 127] only */
      memcpy(xp + r * L->k_pad, xq + r * L->k_in, (size_t)L->k_in);
    }
    ek_xrows xr = {xp, rows, NULL};
    rc = run_core(L, &xr, ap, threads, NULL, NULL);
    if (rc == EK_OK)
      for (size_t r = 0; r < rows; r++)
        memcpy(acc + r * L->n_out, ap + r * L->n_pad, sizeof(int32_t) * (size_t)L->n_out);
  }
done:
  free(xp); free(ap);
  return rc;
}

/* Per-row symmetric int8 quantization of the activations, rows split across the pool: on
 * 128x384 it was ~20 us done serially, a tenth of a 2-thread sparse call. */
#define EK_ENC_PER_THREAD 16384u

typedef struct {
  const ek_linear *L;
  const float *x;
  int8_t *xp;
  float *sx;
  atomic_int rc;
} enc_ctx;

static void enc_rows(void *p, int r0, int r1) {
  enc_ctx *e = p;
  const ek_linear *L = e->L;
  for (int r = r0; r < r1; r++) {
    int rc = L->kern->encode_q8(e->x + (size_t)r * L->k_in, (size_t)L->k_in, (size_t)L->k_in,
                                e->xp + (size_t)r * L->k_pad, e->sx + r, 0);
    if (rc != EK_OK) atomic_store(&e->rc, rc);
  }
}

int ek_linear_forward(const ek_linear *L, const float *x, size_t rows, float *y, int threads) {
  if (!L || (rows && (!x || !y))) return EK_EINVAL;
  if (rows == 0) return EK_OK;
  int8_t *xp = calloc(rows * (size_t)L->k_pad, 1);
  int32_t *ap = malloc(sizeof(int32_t) * rows * (size_t)L->n_pad);
  float *sx = malloc(sizeof(float) * rows);
  int rc = EK_ENOMEM;
  if (xp && ap && sx) {
    enc_ctx e = {L, x, xp, sx, EK_OK};
    int t = threads <= 0 ? ek_default_threads() : threads;
    size_t vals = rows * (size_t)L->k_in; /* encoding moves ~1 value per ns: split big ones */
    ek_parallel_for(vals >= EK_ENC_PER_THREAD ? t : 1, (int)rows, enc_rows, &e);
    rc = atomic_load(&e.rc);
    ek_xrows xr = {xp, rows, NULL};
    if (rc == EK_OK) rc = run_core(L, &xr, ap, threads, sx, y);
  }
  free(xp); free(ap); free(sx);
  return rc;
}

int ek_gemm_s8_ref(const int8_t *a, const int8_t *b, size_t m, size_t n, size_t k, int32_t *c) {
  if ((m > 0 && n > 0 && !c) || (m > 0 && n > 0 && k > 0 && (!a || !b))) return EK_EINVAL;
  for (size_t i = 0; i < m; i++)
    for (size_t j = 0; j < n; j++) {
      int32_t s = 0;
      for (size_t t = 0; t < k; t++) s += (int32_t)a[i * k + t] * (int32_t)b[j * k + t];
      c[i * n + j] = s;
    }
  return EK_OK;
}
