"""Image preprocessing in one pass: uint8 HWC -> bilinear resize -> normalize -> NCHW/NHWC.

Resize uses half-pixel centres without antialiasing (ONNX Resize ``half_pixel``/OpenCV
``INTER_LINEAR``). Normalization: ``(pixel * scale - mean[c]) / std[c]`` with ``scale`` 1/255 by
default (torchvision-style mean/std); int8 output (``Int8``) is ``round(v / q_scale) + zero_point``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgekit.errors import NativeError
from edgekit.native import _lib

LAYOUTS = {"NCHW": 0, "NHWC": 1}


@dataclass(frozen=True)
class Normalize:
    """``(pixel * scale - mean[c]) / std[c]``; mean and std per channel or one for all."""

    mean: Sequence[float] | float = 0.0
    std: Sequence[float] | float = 1.0
    scale: float = 1.0 / 255


@dataclass(frozen=True)
class Int8:
    """int8 output ``round(v / q_scale) + zero_point``; q_scale None: :func:`default_q_scale`."""

    q_scale: float | None = None
    zero_point: int = 0


@dataclass(frozen=True)
class Plan:
    """The checked arguments: output geometry and the per-channel arithmetic."""

    height: int
    width: int
    layout: str
    mean: np.ndarray  # float32, one per channel
    std: np.ndarray
    scale: float
    q_scale: float | None  # None: float32 output
    zero_point: int = 0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return ((1, len(self.mean), self.height, self.width) if self.layout == "NCHW"
                else (1, self.height, self.width, len(self.mean)))


def _check_image(img: object) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise NativeError(f"uint8 HWC array expected, got {getattr(img, 'dtype', type(img))}",
                          where="image_to_tensor(img)")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or not 1 <= img.shape[2] <= 4 or img.shape[0] == 0 or img.shape[1] == 0:
        raise NativeError(f"shape {img.shape}: HxWxC with 1-4 channels expected",
                          where="image_to_tensor(img)")
    c = img.shape[2]
    # rows may be strided (a crop), but each row's pixels must be packed
    if img.strides[2] != 1 or img.strides[1] != c or img.strides[0] < img.shape[1] * c:
        img = np.ascontiguousarray(img)
    return img


def plan(img: object, size: Sequence[int] | None, norm: Normalize, layout: str,
         int8: Int8 | None) -> tuple[np.ndarray, Plan]:
    """The image (packed rows) and the checked :class:`Plan`; NativeError names a bad argument."""
    img = _check_image(img)
    size = tuple(size) if size is not None else img.shape[:2]
    if len(size) != 2 or min(size) <= 0:
        raise NativeError(f"size {size}: (height, width) > 0 expected",
                          where="image_to_tensor(size)")
    if layout not in LAYOUTS:
        raise NativeError(f"layout {layout!r}: NCHW or NHWC", where="image_to_tensor(layout)")
    c = img.shape[2]
    m = np.broadcast_to(np.asarray(norm.mean, np.float32), (c,)).copy()
    s = np.broadcast_to(np.asarray(norm.std, np.float32), (c,)).copy()
    if not (np.isfinite(m).all() and np.isfinite(s).all() and (s != 0).all()):
        raise NativeError("mean/std must be finite and std non-zero", where="image_to_tensor(std)")
    qs = None
    if int8 is not None:
        qs = (float(int8.q_scale) if int8.q_scale is not None
              else default_q_scale(m, s, norm.scale))
        if not (qs > 0 and np.isfinite(qs)):
            raise NativeError(f"q_scale {qs} must be > 0", where="image_to_tensor(int8)")
    zp = int(int8.zero_point) if int8 is not None else 0
    return img, Plan(int(size[0]), int(size[1]), layout, m, s, float(norm.scale), qs, zp)


def default_q_scale(mean: np.ndarray, std: np.ndarray, scale: float) -> float:
    """A q_scale that fits the whole normalized range of 0..255 pixels into int8."""
    lo, hi = (0.0 - mean) / std, (255.0 * scale - mean) / std
    return float(max(np.abs(lo).max(), np.abs(hi).max()) / 127.0) or 1.0


def image_to_tensor(img: np.ndarray, size: tuple[int, int] | None = None,
                    norm: Normalize = Normalize(), layout: str = "NCHW",
                    int8: Int8 | None = None) -> np.ndarray:
    """Resize, normalize and lay out one uint8 HWC image as a batch of one.

    Returns shape (1, C, h, w) for NCHW or (1, h, w, C) for NHWC; float32, or int8 when
    ``int8`` is given.
    """
    img, p = plan(img, size, norm, layout, int8)
    is_i8 = p.q_scale is not None
    out = np.empty(p.shape, np.int8 if is_i8 else np.float32)
    if _lib.LIB is None:
        out[...] = _numpy_impl(img, p)
        return out
    import ctypes

    fp = ctypes.POINTER(ctypes.c_float)
    h, w, c = img.shape
    rc = _lib.LIB.ek_preprocess(
        _lib.ptr(img), h, w, c, img.strides[0], p.height, p.width, p.mean.ctypes.data_as(fp),
        p.std.ctypes.data_as(fp), p.scale, LAYOUTS[layout], int(is_i8), p.q_scale or 1.0,
        p.zero_point, _lib.ptr(out))
    _lib.check(rc, f"image_to_tensor(img: shape {img.shape}, size {size})")
    return out


def _coords(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * np.float32(n_in / n_out)
    f = np.maximum(f - np.float32(0.5), np.float32(0.0))
    i0 = np.minimum(f.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (f - i0).astype(np.float32)


def _numpy_impl(img: np.ndarray, p: Plan) -> np.ndarray:
    """The same arithmetic in numpy: the fallback, and the baseline of the benchmark."""
    h, w, _ = img.shape
    y0, y1, wy = _coords(p.height, h)
    x0, x1, wx = _coords(p.width, w)
    top, bot = img[y0].astype(np.float32), img[y1].astype(np.float32)
    wx3 = wx[None, :, None]
    top = top[:, x0] + (top[:, x1] - top[:, x0]) * wx3
    bot = bot[:, x0] + (bot[:, x1] - bot[:, x0]) * wx3
    v = top + (bot - top) * wy[:, None, None]
    v = v * (np.float32(p.scale) / p.std) + (-p.mean / p.std)
    if p.q_scale is not None:
        v = np.rint(v * np.float32(1.0 / p.q_scale)) + p.zero_point
        v = np.clip(v, -128, 127).astype(np.int8)
    v = v[None]
    return v.transpose(0, 3, 1, 2) if p.layout == "NCHW" else v
