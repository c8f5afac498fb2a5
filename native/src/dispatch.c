/* CPU feature detection, the dispatch table (filled once at load), codec entry points.
 *
 * Detection: aarch64 getauxval(AT_HWCAP/AT_HWCAP2); x86-64 CPUID + XGETBV (the OS must save
 * YMM state). EDGEKIT_NATIVE_VARIANT=<name> forces a variant the CPU can run.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "ek_internal.h"

#if defined(__aarch64__)
#include <sys/auxv.h>
#endif
#if defined(__x86_64__)
#include <cpuid.h>
#endif

static uint32_t g_features;
static const ek_kernels *g_active = &ek_kernels_portable;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static uint32_t detect_features(void) {
  uint32_t f = 0;
#if defined(__aarch64__)
  unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  if (hw & (1ul << 1)) f |= EK_FEAT_ASIMD;
  if (hw & (1ul << 20)) f |= EK_FEAT_ASIMDDP;
  if (hw2 & (1ul << 13)) f |= EK_FEAT_I8MM;
#elif defined(__x86_64__)
  unsigned a, b, c, d;
  if (__get_cpuid(1, &a, &b, &c, &d)) {
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (c & (1u << 12)) f |= EK_FEAT_FMA;
    if (c & (1u << 29)) f |= EK_FEAT_F16C;
    unsigned xlo = 0, xhi = 0;
    if (osxsave) __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    int ymm_ok = osxsave && avx && (xlo & 6u) == 6u;
    if (!ymm_ok) f &= ~(EK_FEAT_FMA | EK_FEAT_F16C);
    if (ymm_ok && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 5))) f |= EK_FEAT_AVX2;
    if (ymm_ok && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4)))
      f |= EK_FEAT_AVXVNNI;
  }
#endif
  return f;
}

static const ek_kernels *best_for(uint32_t f) {
#if defined(__x86_64__)
  uint32_t need = EK_FEAT_AVX2 | EK_FEAT_FMA | EK_FEAT_F16C;
  if ((f & need) == need) return &ek_kernels_avx2;
#elif defined(__aarch64__)
  if ((f & EK_FEAT_ASIMD) && (f & EK_FEAT_ASIMDDP)) return &ek_kernels_neon_dot;
  if (f & EK_FEAT_ASIMD) return &ek_kernels_neon;
#endif
  (void)f;
  return &ek_kernels_portable;
}

static const ek_kernels *by_name(const char *name) {
  const ek_kernels *all[] = {
    &ek_kernels_portable,
#if defined(__x86_64__)
    &ek_kernels_avx2,
#endif
#if defined(__aarch64__)
    &ek_kernels_neon, &ek_kernels_neon_dot,
#endif
  };
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    if (strcmp(all[i]->name, name) == 0) return all[i];
  return NULL;
}

static int runnable(const ek_kernels *k) {
  const ek_kernels *best = best_for(g_features);
  if (k == &ek_kernels_portable || k == best) return 1;
#if defined(__aarch64__)
  if (k == &ek_kernels_neon && (g_features & EK_FEAT_ASIMD)) return 1;
#endif
  return 0;
}

static void init_once(void) {
  g_features = detect_features();
  g_active = best_for(g_features);
  const char *forced = getenv("EDGEKIT_NATIVE_VARIANT");
  if (forced && *forced) {
    const ek_kernels *k = by_name(forced);
    if (k && runnable(k)) g_active = k;
  }
}

const ek_kernels *ek_active(void) {
  pthread_once(&g_once, init_once);
  return g_active;
}

const char *ek_variant(void) { return ek_active()->name; }

uint32_t ek_features(void) {
  ek_active();
  return g_features;
}

int ek_force_variant(const char *name) {
  ek_active();
  const ek_kernels *k = name ? by_name(name) : NULL;
  if (!k || !runnable(k)) return EK_EINVAL;
  g_active = k;
  return EK_OK;
}

int ek_default_threads(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : (n > 64 ? 64 : (int)n);
}

/* --- codec entry points ---------------------------------------------------------------- */
int ek_encode_q8(const float *x, size_t n, size_t block, int8_t *q, void *scales, int fp16) {
  if ((n && (!x || !q || !scales)) || (fp16 != 0 && fp16 != 1)) return EK_EINVAL;
  if (n == 0) return EK_OK;
  return ek_active()->encode_q8(x, n, block ? block : n, q, scales, fp16);
}

int ek_decode_q8(const int8_t *q, size_t n, size_t block, const void *scales, int fp16,
                 float *out) {
  if ((n && (!q || !scales || !out)) || (fp16 != 0 && fp16 != 1)) return EK_EINVAL;
  if (n == 0) return EK_OK;
  ek_active()->decode_q8(q, n, block ? block : n, scales, fp16, out);
  return EK_OK;
}

int ek_f32_to_f16(const float *x, size_t n, uint16_t *out) {
  if (n && (!x || !out)) return EK_EINVAL;
  ek_active()->f32_to_f16(x, n, out);
  return EK_OK;
}

int ek_f16_to_f32(const uint16_t *x, size_t n, float *out) {
  if (n && (!x || !out)) return EK_EINVAL;
  ek_active()->f16_to_f32(x, n, out);
  return EK_OK;
}

int ek_preprocess(const uint8_t *img, int h, int w, int c, size_t row_stride, int out_h,
                  int out_w, const float *mean, const float *std, float scale, int layout,
                  int out_int8, float q_scale, int q_zero_point, void *out) {
  if (!img || !mean || !std || !out || h <= 0 || w <= 0 || c <= 0 || c > 4 || out_h <= 0 ||
      out_w <= 0 || row_stride < (size_t)w * (size_t)c || (layout != 0 && layout != 1))
    return EK_EINVAL;
  for (int i = 0; i < c; i++)
    if (!(std[i] != 0.0f) || !isfinite(std[i]) || !isfinite(mean[i])) return EK_EINVAL;
  if (out_int8 && !(q_scale > 0.0f && isfinite(q_scale))) return EK_EINVAL;
  return ek_active()->preprocess(img, h, w, c, row_stride, out_h, out_w, mean, std, scale, layout,
                                 out_int8, q_scale, q_zero_point, out);
}
