/* Bilinear resize + normalize + layout change in one pass, as plain C written so the compiler
 * vectorizes the per-row loops for the target of the including file. Include after defining
 * EK_PP_NAME. Every variant computes the same float expressions (no FMA contraction), so
 * results agree across variants. */
#include <stdlib.h>

#define EK_PP_CAT2(a, b) a##b
#define EK_PP_CAT(a, b) EK_PP_CAT2(a, b)
#define EK_PP_HROW EK_PP_CAT(EK_PP_NAME, _hrow)

static void EK_PP_HROW(const uint8_t *src, int c, int ow, const int *x0, const int *x1,
                              const float *wx, float *dst) {
  for (int ox = 0; ox < ow; ox++) {
    const uint8_t *a = src + x0[ox], *b = src + x1[ox];
    float t = wx[ox];
    for (int ch = 0; ch < c; ch++) {
      float fa = (float)a[ch];
      dst[ox * c + ch] = fa + ((float)b[ch] - fa) * t;
    }
  }
}

static int EK_PP_NAME(const uint8_t *img, int h, int w, int c, size_t row_stride, int oh, int ow,
                      const float *mean, const float *std, float scale, int layout, int out_int8,
                      float q_scale, int q_zero_point, void *out) {
  size_t nrow = (size_t)ow * (size_t)c;
  int *x0 = malloc(sizeof(int) * (size_t)ow * 2);
  float *wx = malloc(sizeof(float) * (size_t)ow);
  float *buf = malloc(sizeof(float) * nrow * 3); /* two source rows + the output row */
  if (!x0 || !wx || !buf) {
    free(x0); free(wx); free(buf);
    return EK_ENOMEM;
  }
  int *x1 = x0 + ow;
  float sx = (float)w / (float)ow, sy = (float)h / (float)oh;
  for (int ox = 0; ox < ow; ox++) {
    float fx = ((float)ox + 0.5f) * sx - 0.5f;
    if (fx < 0.0f) fx = 0.0f;
    int i0 = (int)fx;
    if (i0 > w - 1) i0 = w - 1;
    int i1 = i0 + 1 < w ? i0 + 1 : w - 1;
    x0[ox] = i0 * c;
    x1[ox] = i1 * c;
    wx[ox] = fx - (float)i0;
  }
  float a[4], b[4];
  for (int ch = 0; ch < c; ch++) {
    a[ch] = scale / std[ch];
    b[ch] = -mean[ch] / std[ch];
  }
  float inv_q = out_int8 ? 1.0f / q_scale : 0.0f;
  float *top = buf, *bot = buf + nrow, *row = buf + 2 * nrow;
  int top_y = -1, bot_y = -1;
  size_t plane = (size_t)oh * (size_t)ow;
  for (int oy = 0; oy < oh; oy++) {
    float fy = ((float)oy + 0.5f) * sy - 0.5f;
    if (fy < 0.0f) fy = 0.0f;
    int y0 = (int)fy;
    if (y0 > h - 1) y0 = h - 1;
    int y1 = y0 + 1 < h ? y0 + 1 : h - 1;
    float wy = fy - (float)y0;
    if (y0 != top_y) {
      if (y0 == bot_y) { /* slide down: reuse the row interpolated last time */
        float *t = top; top = bot; bot = t;
        top_y = bot_y; bot_y = -1;
      } else {
        EK_PP_HROW(img + (size_t)y0 * row_stride, c, ow, x0, x1, wx, top);
        top_y = y0;
      }
    }
    if (y1 != bot_y) {
      EK_PP_HROW(img + (size_t)y1 * row_stride, c, ow, x0, x1, wx, bot);
      bot_y = y1;
    }
    for (size_t i = 0; i < nrow; i++) row[i] = top[i] + (bot[i] - top[i]) * wy;
    for (int ch = 0; ch < c; ch++) {
      float ac = a[ch], bc = b[ch];
      if (layout == 0) { /* NCHW */
        size_t base = (size_t)ch * plane + (size_t)oy * ow;
        if (out_int8) {
          int8_t *o = (int8_t *)out + base;
          for (int ox = 0; ox < ow; ox++) {
            float v = nearbyintf((row[ox * c + ch] * ac + bc) * inv_q) + (float)q_zero_point;
            o[ox] = (int8_t)(v > 127.0f ? 127.0f : (v < -128.0f ? -128.0f : v));
          }
        } else {
          float *o = (float *)out + base;
          for (int ox = 0; ox < ow; ox++) o[ox] = row[ox * c + ch] * ac + bc;
        }
      } else { /* NHWC */
        size_t base = (size_t)oy * nrow + ch;
        if (out_int8) {
          int8_t *o = (int8_t *)out + base;
          for (int ox = 0; ox < ow; ox++) {
            float v = nearbyintf((row[ox * c + ch] * ac + bc) * inv_q) + (float)q_zero_point;
            o[(size_t)ox * c] = (int8_t)(v > 127.0f ? 127.0f : (v < -128.0f ? -128.0f : v));
          }
        } else {
          float *o = (float *)out + base;
          for (int ox = 0; ox < ow; ox++) o[(size_t)ox * c] = row[ox * c + ch] * ac + bc;
        }
      }
    }
  }
  free(x0); free(wx); free(buf);
  return EK_OK;
}
