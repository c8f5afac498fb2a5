/* C test harness: every kernel of the active variant (and, on aarch64, of plain NEON too)
 * against the portable reference, on random and edge-case shapes. Integer results must match
 * exactly; float results within the stated tolerance (they are computed by the same float
 * expressions, so they match exactly in practice).
 *
 *   test_native [--expect VARIANT]        run the tests; last line "N passed, N failed"
 *   test_native count N:M ROWS NOUT KIN   run one linear core once (instruction counting)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/ek_internal.h"

static int g_pass, g_fail;
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void) {
  g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
  return (uint32_t)(g_rng >> 11);
}
static float frnd(float a) { return ((float)(rnd() % 2000001) / 1000000.0f - 1.0f) * a; }

#define CHECK(cond, ...)                                        \
  do {                                                          \
    if (cond) g_pass++;                                         \
    else { g_fail++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } \
  } while (0)

static const char *g_variant; /* variant under test */

static void use(const char *name) {
  if (ek_force_variant(name) != EK_OK) { printf("cannot force %s\n", name); exit(2); }
}

static void test_codec(void) {
  size_t sizes[] = {0, 1, 7, 8, 31, 32, 33, 100, 1000, 4099};
  size_t blocks[] = {32, 0, 17};
  for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
    for (size_t bi = 0; bi < 3; bi++)
      for (int fp16 = 0; fp16 < 2; fp16++)
        for (int kind = 0; kind < 4; kind++) {
          size_t n = sizes[si], blk = blocks[bi], nb = n ? (n + (blk ? blk : n) - 1) / (blk ? blk : n) : 0;
          float *x = malloc(4 * n + 4), *o1 = malloc(4 * n + 4), *o2 = malloc(4 * n + 4);
          int8_t *q1 = malloc(n + 1), *q2 = malloc(n + 1);
          float s1[512], s2[512];
          float mag = kind == 0 ? 3.0f : (kind == 1 ? 1e30f : (kind == 2 ? 1e-30f : 70000.0f));
          for (size_t i = 0; i < n; i++) x[i] = (i % 5 == 3 && kind == 3) ? 0.0f : frnd(mag);
          use(g_variant);
          int r1 = ek_encode_q8(x, n, blk, q1, s1, fp16);
          if (r1 == EK_OK) ek_decode_q8(q1, n, blk, s1, fp16, o1);
          use("portable");
          int r2 = ek_encode_q8(x, n, blk, q2, s2, fp16);
          if (r2 == EK_OK) ek_decode_q8(q2, n, blk, s2, fp16, o2);
          CHECK(r1 == r2 && r1 == EK_OK, "encode rc %d %d n=%zu", r1, r2, n);
          CHECK(memcmp(q1, q2, n) == 0, "q8 differs n=%zu block=%zu fp16=%d kind=%d", n, blk, fp16, kind);
          CHECK(memcmp(s1, s2, nb * (fp16 ? 2 : 4)) == 0, "scales differ n=%zu block=%zu", n, blk);
          CHECK(memcmp(o1, o2, 4 * n) == 0, "decode differs n=%zu block=%zu", n, blk);
          int sat = 1;
          for (size_t i = 0; i < n; i++) sat &= q1[i] >= -127;
          CHECK(sat, "q8 holds -128");
          free(x); free(o1); free(o2); free(q1); free(q2);
        }
  float bad[40] = {0};
  int8_t q[40];
  float s[4];
  float *big = calloc(1000, sizeof(float)); /* 8-block path: a NaN in the 4th block of 8 */
  int8_t *bq = malloc(1000);
  float bs[32];
  big[100] = 0.0f / 0.0f;
  use(g_variant);
  CHECK(ek_encode_q8(big, 1000, 32, bq, bs, 1) == EK_ENONFINITE, "nan in a full 8-block group");
  free(big); free(bq);
  bad[37] = 1.0f / 0.0f;
  use(g_variant);
  CHECK(ek_encode_q8(bad, 40, 32, q, s, 1) == EK_ENONFINITE, "inf not refused");
  bad[37] = 0.0f / 0.0f;
  CHECK(ek_encode_q8(bad, 40, 32, q, s, 0) == EK_ENONFINITE, "nan not refused");
  CHECK(ek_encode_q8(NULL, 40, 32, q, s, 0) == EK_EINVAL, "NULL not refused");
}

static void test_f16(void) {
  size_t n = 65536 + 4096;
  uint16_t *h = malloc(2 * n), *h1 = malloc(2 * n), *h2 = malloc(2 * n);
  float *f1 = malloc(4 * n), *f2 = malloc(4 * n), *src = malloc(4 * n);
  for (size_t i = 0; i < n; i++) h[i] = (uint16_t)i;
  use(g_variant); ek_f16_to_f32(h, n, f1);
  use("portable"); ek_f16_to_f32(h, n, f2);
  CHECK(memcmp(f1, f2, 4 * n) == 0, "f16->f32 differs");
  uint32_t edge[] = {0x477fefffu, 0x477ff000u, 0x33000000u, 0x33000001u, 0x38800000u, 0x387fffffu,
                     0x7f800000u, 0xff800000u, 0x7fc00000u, 0x00000001u, 0x80000000u, 0x3f800000u};
  for (size_t i = 0; i < n; i++) {
    uint32_t b = i < 12 ? edge[i] : (rnd() << 1) ^ rnd();
    if ((b & 0x7fffffffu) > 0x7f800000u) b = 0x7fc00000u | (b & 0x80000000u); /* quiet NaN */
    src[i] = ek_bits_f32(b);
  }
  use(g_variant); ek_f32_to_f16(src, n, h1);
  use("portable"); ek_f32_to_f16(src, n, h2);
  CHECK(memcmp(h1, h2, 2 * n) == 0, "f32->f16 differs");
  free(h); free(h1); free(h2); free(f1); free(f2); free(src);
}

static void test_preprocess(void) {
  int shapes[][5] = {{1, 1, 3, 1, 1}, {5, 7, 3, 3, 2}, {17, 13, 3, 32, 31}, {48, 64, 1, 24, 32},
                     {9, 9, 4, 9, 9}, {100, 120, 3, 37, 41}};
  float mean[4] = {0.485f, 0.456f, 0.406f, 0.5f}, std[4] = {0.229f, 0.224f, 0.225f, 0.25f};
  for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++)
    for (int layout = 0; layout < 2; layout++)
      for (int i8 = 0; i8 < 2; i8++) {
        int h = shapes[t][0], w = shapes[t][1], c = shapes[t][2], oh = shapes[t][3], ow = shapes[t][4];
        size_t stride = (size_t)w * c + 3, no = (size_t)oh * ow * c;
        uint8_t *img = malloc(stride * h);
        for (size_t i = 0; i < stride * h; i++) img[i] = (uint8_t)(i % 7 == 0 ? 255 : rnd());
        float *o1 = malloc(4 * no), *o2 = malloc(4 * no);
        use(g_variant);
        int r1 = ek_preprocess(img, h, w, c, stride, oh, ow, mean, std, 1.0f / 255, layout, i8, 0.02f, 3, o1);
        use("portable");
        int r2 = ek_preprocess(img, h, w, c, stride, oh, ow, mean, std, 1.0f / 255, layout, i8, 0.02f, 3, o2);
        CHECK(r1 == EK_OK && r2 == EK_OK, "preprocess rc %d %d", r1, r2);
        float worst = 0;
        for (size_t i = 0; i < no; i++) {
          float d = i8 ? (float)abs(((int8_t *)o1)[i] - ((int8_t *)o2)[i]) : fabsf(o1[i] - o2[i]);
          worst = d > worst ? d : worst;
        }
        CHECK(worst <= (i8 ? 1.0f : 1e-5f), "preprocess differs by %g (shape %zu)", worst, t);
        free(img); free(o1); free(o2);
      }
  float m[3] = {0}, s0[3] = {1, 0, 1};
  uint8_t px[3] = {0};
  float o[3];
  CHECK(ek_preprocess(px, 1, 1, 3, 3, 1, 1, m, s0, 1, 0, 0, 1, 0, o) == EK_EINVAL, "std 0 accepted");
  CHECK(ek_preprocess(px, 1, 1, 3, 2, 1, 1, m, m, 1, 0, 0, 1, 0, o) == EK_EINVAL, "short stride accepted");
}

/* Random N:M weights with one mask per block of 8 channels. */
static void make_sparse(int nout, int kin, int n, int m, int8_t *vals, uint8_t *pos, int8_t *dense) {
  int kk = kin / m * n, nblk = (nout + 7) / 8;
  for (int b = 0; b < nblk; b++)
    for (int g = 0; g < kin / m; g++) {
      int p0 = rnd() % m, p1 = p0;
      if (n == 2) { while (p1 == p0) p1 = rnd() % m; if (p1 < p0) { int t = p0; p0 = p1; p1 = t; } }
      pos[(size_t)b * kk + g * n] = (uint8_t)p0;
      if (n == 2) pos[(size_t)b * kk + g * n + 1] = (uint8_t)p1;
    }
  memset(dense, 0, (size_t)nout * kin);
  for (int ch = 0; ch < nout; ch++)
    for (int j = 0; j < kk; j++) {
      int8_t v = (int8_t)((int)(rnd() % 255) - 127);
      if (j % 3 == 0) v = (j & 4) ? 127 : -127; /* saturating corners */
      vals[(size_t)ch * kk + j] = v;
      dense[(size_t)ch * kin + (j / n) * m + pos[(size_t)(ch / 8) * kk + j]] = v;
    }
}

static void test_linear(void) {
  int pats[][2] = {{1, 1}, {1, 2}, {2, 4}, {1, 4}};
  int rows_l[] = {1, 2, 3, 5, 17, 22, 33}, nout_l[] = {1, 8, 9, 24}, kin_l[] = {4, 8, 64, 100, 200};
  for (int p = 0; p < 4; p++)
    for (int ri = 0; ri < 6; ri++)
      for (int ni = 0; ni < 4; ni++)
        for (int ki = 0; ki < 5; ki++) {
          int n = pats[p][0], m = pats[p][1], rows = rows_l[ri], nout = nout_l[ni], kin = kin_l[ki];
          if (kin % m) continue;
          int kk = kin / m * n;
          int8_t *vals = malloc((size_t)nout * kk), *dense = malloc((size_t)nout * kin);
          uint8_t *pos = malloc((size_t)((nout + 7) / 8) * kk);
          int8_t *xq = malloc((size_t)rows * kin);
          int32_t *a1 = malloc(4 * (size_t)rows * nout), *a2 = malloc(4 * (size_t)rows * nout), *a3 = malloc(4 * (size_t)rows * nout);
          float *ws = malloc(4 * nout), *x = malloc(4 * (size_t)rows * kin);
          float *y1 = malloc(4 * (size_t)rows * nout), *y2 = malloc(4 * (size_t)rows * nout);
          make_sparse(nout, kin, n, m, vals, pos, dense);
          for (int i = 0; i < nout; i++) ws[i] = 0.01f + (float)i * 1e-4f;
          for (int i = 0; i < rows * kin; i++) {
            xq[i] = (int8_t)((int)(rnd() % 255) - 127);
            if (i % 7 == 0) xq[i] = (i & 8) ? 127 : -127;
            x[i] = frnd(2.0f);
          }
          ek_linear *L1 = NULL, *L2 = NULL;
          use(g_variant);
          int rc1 = ek_linear_create(vals, pos, ws, ws, nout, kin, n, m, &L1);
          if (rc1 == EK_OK) { ek_linear_acc(L1, xq, rows, a1, 2); ek_linear_forward(L1, x, rows, y1, 2); }
          use("portable");
          int rc2 = ek_linear_create(vals, pos, ws, ws, nout, kin, n, m, &L2);
          if (rc2 == EK_OK) { ek_linear_acc(L2, xq, rows, a2, 1); ek_linear_forward(L2, x, rows, y2, 1); }
          ek_gemm_s8_ref(xq, dense, rows, nout, kin, a3);
          CHECK(rc1 == EK_OK && rc2 == EK_OK, "create rc %d %d", rc1, rc2);
          CHECK(memcmp(a1, a2, 4 * (size_t)rows * nout) == 0, "%s acc differs %d:%d %dx%dx%d", g_variant, n, m, rows, nout, kin);
          CHECK(memcmp(a2, a3, 4 * (size_t)rows * nout) == 0, "portable != dense ref %d:%d %dx%dx%d", n, m, rows, nout, kin);
          float worst = 0;
          for (int i = 0; i < rows * nout; i++) worst = fmaxf(worst, fabsf(y1[i] - y2[i]) / (1.0f + fabsf(y2[i])));
          CHECK(worst <= 1e-6f, "forward differs by %g", worst);
          ek_linear_destroy(L1); ek_linear_destroy(L2);
          free(vals); free(dense); free(pos); free(xq); free(a1); free(a2); free(a3); free(ws); free(x); free(y1); free(y2);
        }
  /* refusals */
  int8_t v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  uint8_t pz[8] = {0, 1, 1, 1, 0, 1, 2, 3};
  float w1[1] = {1};
  ek_linear *L = NULL;
  use(g_variant);
  CHECK(ek_linear_create(v, pz, w1, NULL, 1, 8, 2, 4, &L) == EK_EINVAL, "non-increasing positions accepted");
  CHECK(ek_linear_create(v, pz, w1, NULL, 1, 8, 3, 4, &L) == EK_EINVAL, "3:4 accepted");
  CHECK(ek_linear_create(v, pz, w1, NULL, 1, 6, 1, 4, &L) == EK_EINVAL, "K %% m != 0 accepted");
  int8_t vneg[2] = {-128, 1};
  uint8_t p2[2] = {0, 2};
  CHECK(ek_linear_create(vneg, p2, w1, NULL, 1, 4, 2, 4, &L) == EK_EINVAL, "-128 weight accepted");
  uint8_t p3[2] = {1, 3};
  CHECK(ek_linear_create(v, p3, w1, NULL, 1, 4, 2, 4, &L) == EK_OK, "valid 2:4 refused");
  int8_t xbad[4] = {-128, 0, 0, 0};
  int32_t acc[1];
  CHECK(ek_linear_acc(L, xbad, 1, acc, 1) == EK_EINVAL, "-128 activation accepted");
  CHECK(ek_linear_acc(L, xbad, 0, acc, 1) == EK_OK, "empty batch refused");
  float xf[4] = {0, 1.0f / 0.0f, 0, 0}, yf[1];
  CHECK(ek_linear_forward(L, xf, 1, yf, 1) == EK_ENONFINITE, "inf activation accepted");
  ek_linear_destroy(L);
}

/* One shape big enough that the kernel really splits it over threads (the small shapes above
 * stay below the per-thread work floor and run on one). */
static void test_linear_threads(void) {
  const int pats[3][2] = {{1, 1}, {2, 4}, {1, 4}}, rows = 37, nout = 264, kin = 1024;
  for (int p = 0; p < 3; p++) {
    int n = pats[p][0], m = pats[p][1], kk = kin / m * n;
    int8_t *vals = malloc((size_t)nout * kk), *xq = malloc((size_t)rows * kin);
    uint8_t *pos = malloc((size_t)(nout + 7) / 8 * kk);
    int32_t *a1 = malloc(4 * (size_t)rows * nout), *a2 = malloc(4 * (size_t)rows * nout);
    float *ws = malloc(4 * nout);
    for (int i = 0; i < nout * kk; i++) vals[i] = (int8_t)((int)(rnd() % 255) - 127);
    for (int i = 0; i < (nout + 7) / 8 * kk; i++) pos[i] = (uint8_t)(n == 2 ? (i % 2) * 2 + rnd() % 2 : rnd() % m);
    for (int i = 0; i < rows * kin; i++) xq[i] = (int8_t)((int)(rnd() % 255) - 127);
    for (int i = 0; i < nout; i++) ws[i] = 1.0f;
    ek_linear *L1 = NULL, *L2 = NULL;
    use(g_variant);
    int rc1 = ek_linear_create(vals, pos, ws, NULL, nout, kin, n, m, &L1);
    if (rc1 == EK_OK) rc1 = ek_linear_acc(L1, xq, rows, a1, 2);
    use("portable");
    int rc2 = ek_linear_create(vals, pos, ws, NULL, nout, kin, n, m, &L2);
    if (rc2 == EK_OK) rc2 = ek_linear_acc(L2, xq, rows, a2, 1);
    CHECK(rc1 == EK_OK && rc2 == EK_OK, "threaded linear rc %d %d", rc1, rc2);
    CHECK(memcmp(a1, a2, 4 * (size_t)rows * nout) == 0, "%s threaded acc differs %d:%d", g_variant, n, m);
    ek_linear_destroy(L1); ek_linear_destroy(L2);
    free(vals); free(xq); free(pos); free(a1); free(a2); free(ws);
  }
}

static int count_mode(int argc, char **argv) {
  int n, m;
  if (argc < 6 || sscanf(argv[2], "%d:%d", &n, &m) != 2) return 2;
  int rows = atoi(argv[3]), nout = atoi(argv[4]), kin = atoi(argv[5]), kk = kin / m * n;
  int8_t *vals = malloc((size_t)nout * kk), *dense = malloc((size_t)nout * kin), *xq = malloc((size_t)rows * kin);
  uint8_t *pos = malloc((size_t)((nout + 7) / 8) * kk);
  float *ws = malloc(4 * nout);
  int32_t *acc = malloc(4 * (size_t)rows * nout);
  make_sparse(nout, kin, n, m, vals, pos, dense);
  for (int i = 0; i < nout; i++) ws[i] = 1.0f;
  for (int i = 0; i < rows * kin; i++) xq[i] = (int8_t)((int)(rnd() % 255) - 127);
  ek_linear *L = NULL;
  if (ek_linear_create(vals, pos, ws, NULL, nout, kin, n, m, &L) != EK_OK) return 3;
  int rc = ek_linear_acc(L, xq, rows, acc, 1);
  printf("variant %s pattern %d:%d rows %d nout %d kin %d rc %d\n", ek_variant(), n, m, rows, nout, kin, rc);
  return rc != EK_OK;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "count") == 0) return count_mode(argc, argv);
  const char *expect = argc > 2 && strcmp(argv[1], "--expect") == 0 ? argv[2] : NULL;
  printf("variant: %s features: 0x%x\n", ek_variant(), ek_features());
  if (expect) CHECK(strcmp(ek_variant(), expect) == 0, "expected variant %s, got %s", expect, ek_variant());
  const char *variants[3] = {ek_variant(), NULL, NULL};
#if defined(__aarch64__)
  if (strcmp(variants[0], "neon") != 0 && (ek_features() & EK_FEAT_ASIMD)) variants[1] = "neon";
#endif
  for (int v = 0; v < 3 && variants[v]; v++) {
    g_variant = variants[v];
    printf("testing %s against portable\n", g_variant);
    test_codec();
    test_f16();
    test_preprocess();
    test_linear();
    test_linear_threads();
  }
  printf("%d passed, %d failed\n", g_pass, g_fail);
  return g_fail != 0;
}
