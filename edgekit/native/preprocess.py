"""Image preprocessing in one pass: uint8 HWC -> bilinear resize -> normalize -> NCHW/NHWC.

Resize uses half-pixel centres without antialiasing (ONNX Resize ``half_pixel``/OpenCV
``INTER_LINEAR``). Normalization: ``(pixel * scale - mean[c]) / std[c]`` with ``scale`` 1/255 by
default (torchvision-style mean/std); int8 output is ``round(v / q_scale) + q_zero_point``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgekit.errors import NativeError
from edgekit.native import _lib

LAYOUTS = {"NCHW": 0, "NHWC": 1}


def _check(img: object, size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
           layout: str, dtype: type) -> tuple[np.ndarray, int, int, int, np.ndarray, np.ndarray]:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise NativeError(f"uint8 HWC array expected, got {getattr(img, 'dtype', type(img))}",
                          where="image_to_tensor(img)")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or not 1 <= img.shape[2] <= 4 or img.shape[0] == 0 or img.shape[1] == 0:
        raise NativeError(f"shape {img.shape}: HxWxC with 1-4 channels expected",
                          where="image_to_tensor(img)")
    if len(size) != 2 or min(size) <= 0:
        raise NativeError(f"size {size}: (height, width) > 0 expected",
                          where="image_to_tensor(size)")
    if layout not in LAYOUTS:
        raise NativeError(f"layout {layout!r}: NCHW or NHWC", where="image_to_tensor(layout)")
    if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.int8)):
        raise NativeError(f"dtype {dtype}: float32 or int8", where="image_to_tensor(dtype)")
    c = img.shape[2]
    m = np.broadcast_to(np.asarray(mean, np.float32), (c,)).copy()
    s = np.broadcast_to(np.asarray(std, np.float32), (c,)).copy()
    if not (np.isfinite(m).all() and np.isfinite(s).all() and (s != 0).all()):
        raise NativeError("mean/std must be finite and std non-zero", where="image_to_tensor(std)")
    # rows may be strided (a crop), but each row's pixels must be packed
    if img.strides[2] != 1 or img.strides[1] != c or img.strides[0] < img.shape[1] * c:
        img = np.ascontiguousarray(img)
    return img, img.shape[0], img.shape[1], c, m, s


def default_q_scale(mean: np.ndarray, std: np.ndarray, scale: float) -> float:
    """A q_scale that fits the whole normalized range of 0..255 pixels into int8."""
    lo, hi = (0.0 - mean) / std, (255.0 * scale - mean) / std
    return float(max(np.abs(lo).max(), np.abs(hi).max()) / 127.0) or 1.0


def image_to_tensor(img: np.ndarray, size: tuple[int, int] | None = None,
                    mean: Sequence[float] | float = 0.0, std: Sequence[float] | float = 1.0,
                    layout: str = "NCHW", dtype: type = np.float32, *, scale: float = 1.0 / 255,
                    q_scale: float | None = None, q_zero_point: int = 0) -> np.ndarray:
    """Resize, normalize and lay out one uint8 HWC image as a batch of one.

    Returns shape (1, C, h, w) for NCHW or (1, h, w, C) for NHWC, float32 or int8.
    """
    size = size or img.shape[:2]
    img, h, w, c, m, s = _check(img, tuple(size), mean, std, layout, dtype)
    oh, ow = int(size[0]), int(size[1])
    is_i8 = np.dtype(dtype) == np.int8
    qs = float(q_scale) if q_scale is not None else default_q_scale(m, s, scale)
    if is_i8 and not (qs > 0 and np.isfinite(qs)):
        raise NativeError(f"q_scale {qs} must be > 0", where="image_to_tensor(q_scale)")
    shape = (1, c, oh, ow) if layout == "NCHW" else (1, oh, ow, c)
    out = np.empty(shape, np.int8 if is_i8 else np.float32)
    if _lib.LIB is None:
        out[...] = _numpy_impl(img, oh, ow, m, s, scale, layout, is_i8, qs, q_zero_point)
        return out
    import ctypes

    fp = ctypes.POINTER(ctypes.c_float)
    rc = _lib.LIB.ek_preprocess(
        _lib.ptr(img), h, w, c, img.strides[0], oh, ow, m.ctypes.data_as(fp), s.ctypes.data_as(fp),
        scale, LAYOUTS[layout], int(is_i8), qs, int(q_zero_point), _lib.ptr(out))
    _lib.check(rc, f"image_to_tensor(img: shape {img.shape}, size {size})")
    return out


def _coords(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * np.float32(n_in / n_out)
    f = np.maximum(f - np.float32(0.5), np.float32(0.0))
    i0 = np.minimum(f.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (f - i0).astype(np.float32)


def _numpy_impl(img, oh, ow, m, s, scale, layout, is_i8, qs, zp) -> np.ndarray:
    """The same arithmetic in numpy: the fallback, and the baseline of the benchmark."""
    h, w, _ = img.shape
    y0, y1, wy = _coords(oh, h)
    x0, x1, wx = _coords(ow, w)
    top, bot = img[y0].astype(np.float32), img[y1].astype(np.float32)
    wx3 = wx[None, :, None]
    top = top[:, x0] + (top[:, x1] - top[:, x0]) * wx3
    bot = bot[:, x0] + (bot[:, x1] - bot[:, x0]) * wx3
    v = top + (bot - top) * wy[:, None, None]
    v = v * (np.float32(scale) / s) + (-m / s)
    if is_i8:
        v = np.clip(np.rint(v * np.float32(1.0 / qs)) + zp, -128, 127).astype(np.int8)
    v = v[None]
    return v.transpose(0, 3, 1, 2) if layout == "NCHW" else v
