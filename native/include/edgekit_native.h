/* edgekit native kernels: small C API (see docs/NATIVE.md).
 *
 * Every entry point validates its arguments and returns an EK_* status instead of crashing.
 * Kernels are chosen once at load from the CPU's features (ek_variant() names the choice);
 * EDGEKIT_NATIVE_VARIANT=portable (or ek_force_variant) forces the scalar reference.
 */
#ifndef EDGEKIT_NATIVE_H
#define EDGEKIT_NATIVE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EK_OK 0
#define EK_EINVAL (-1)    /* bad argument (size, pattern, pointer) */
#define EK_ENONFINITE (-2) /* input holds NaN or infinity */
#define EK_ENOMEM (-3)

/* feature bits reported by ek_features() */
#define EK_FEAT_ASIMD (1u << 0)
#define EK_FEAT_ASIMDDP (1u << 1)
#define EK_FEAT_I8MM (1u << 2)
#define EK_FEAT_AVX2 (1u << 8)
#define EK_FEAT_FMA (1u << 9)
#define EK_FEAT_F16C (1u << 10)
#define EK_FEAT_AVXVNNI (1u << 11)

const char *ek_variant(void);
uint32_t ek_features(void);
/* Force a variant by name ("portable", "avx2", "neon", "neon-dotprod"); EK_EINVAL if the CPU
 * cannot run it. Not thread-safe: call before using kernels (tests and benchmarks). */
int ek_force_variant(const char *name);
int ek_default_threads(void);

/* --- activation codec ------------------------------------------------------------------ */
/* q[i] = round_half_even(x[i] / d_b), d_b = max|x| of block b / 127 (fp16-rounded when
 * scale_fp16), clamped to [-127, 127]. block == 0 means one scale for the whole tensor.
 * scales holds ceil(n / block) floats (scale_fp16 == 0) or IEEE halfs (scale_fp16 == 1). */
int ek_encode_q8(const float *x, size_t n, size_t block, int8_t *q, void *scales, int scale_fp16);
int ek_decode_q8(const int8_t *q, size_t n, size_t block, const void *scales, int scale_fp16,
                 float *out);
int ek_f32_to_f16(const float *x, size_t n, uint16_t *out);
int ek_f16_to_f32(const uint16_t *x, size_t n, float *out);

/* --- preprocessing ---------------------------------------------------------------------- */
/* uint8 HWC image (row stride in bytes) -> bilinear resize (half-pixel centres, as ONNX
 * Resize/OpenCV INTER_LINEAR) -> v = (pixel * scale - mean[c]) / std[c] -> float32 or int8
 * (round(v / q_scale) + q_zero_point, saturated) in NCHW (layout 0) or NHWC (layout 1). */
int ek_preprocess(const uint8_t *img, int h, int w, int c, size_t row_stride, int out_h,
                  int out_w, const float *mean, const float *std, float scale, int layout,
                  int out_int8, float q_scale, int q_zero_point, void *out);

/* --- int8 linear: y = x W^T + b, W N:M-sparse along K (n = m = 1 is dense) ---------------- */
typedef struct ek_linear ek_linear;
/* vals: int8 [N][K*n/m] kept weights in K order; pos: uint8 [ceil(N/8)][K*n/m], position
 * (0..m-1) of each kept slot inside its group of m; one mask per block of 8 output channels.
 * wscale: per-output-channel scale [N]; bias [N] or NULL. Supported n:m: 1:1, 1:2, 2:4, 1:4. */
int ek_linear_create(const int8_t *vals, const uint8_t *pos, const float *wscale,
                     const float *bias, int n_out, int k_in, int n, int m, ek_linear **out);
void ek_linear_destroy(ek_linear *lin);
/* y [rows][n_out] = dequant(quant_rows(x) . W^T) + bias; threads <= 0: one per core. */
int ek_linear_forward(const ek_linear *lin, const float *x, size_t rows, float *y, int threads);
/* Integer core for tests: acc [rows][n_out] = xq [rows][k_in] . Wq^T (exact int32). */
int ek_linear_acc(const ek_linear *lin, const int8_t *xq, size_t rows, int32_t *acc, int threads);
/* Dense int8 reference GEMM in portable C: c [m][n] = a [m][k] . b[n][k]^T. */
int ek_gemm_s8_ref(const int8_t *a, const int8_t *b, size_t m, size_t n, size_t k, int32_t *c);

#ifdef __cplusplus
}
#endif
#endif
