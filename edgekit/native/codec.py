"""Activation codec: fp32 <-> int8 with one scale per block of values, fp32 <-> fp16, and the
wire format that carries tensors between pipeline stages.

int8 blocks: q = round_half_even(x / d), d = max|x| / 127 per block of ``block`` values
(``block=0``: one scale for the whole tensor), stored as float16 (saturating at 65504) or
float32; q is clamped to [-127, 127]. NaN or infinity is refused. The C kernel and the numpy
fallback compute exactly the same bytes.
"""

from __future__ import annotations

import struct

import numpy as np

from edgekit.errors import NativeError
from edgekit.native import _lib

MAGIC = b"EKT1"
CODECS = {"raw": 0, "fp16": 1, "q8": 2}
_HEADER = struct.Struct("<4sBBBBI")  # magic, codec, scale kind, ndim, dtype length, block


def _as_f32(x: object, name: str) -> np.ndarray:
    arr = _lib.as_input(x, np.float32, name)
    return arr


def _n_blocks(n: int, block: int) -> int:
    return 0 if n == 0 else (1 if block == 0 else -(-n // block))


def encode_q8(x: np.ndarray, block: int = 32, scale_dtype: type = np.float16
              ) -> tuple[np.ndarray, np.ndarray]:
    """Quantize to int8 with one scale per ``block`` values (0: per tensor).

    Returns ``(q, scales)``: q int8 with x's shape, scales 1-D float16 or float32.
    """
    if block < 0:
        raise NativeError(f"block must be >= 0, got {block}", where="encode_q8(block)")
    sd = np.dtype(scale_dtype)
    if sd not in (np.dtype(np.float16), np.dtype(np.float32)):
        raise NativeError(f"scale_dtype {sd} unsupported (float16 or float32)",
                          where="encode_q8(scale_dtype)")
    arr = _as_f32(x, "encode_q8(x)")
    n = arr.size
    q = np.empty(arr.shape, np.int8)
    scales = np.empty(_n_blocks(n, block), sd)
    fp16 = int(sd == np.float16)
    if _lib.LIB is not None:
        rc = _lib.LIB.ek_encode_q8(_lib.ptr(arr), n, block, _lib.ptr(q), _lib.ptr(scales), fp16)
        _lib.check(rc, f"encode_q8(x: shape {arr.shape})")
        return q, scales
    return _encode_numpy(arr, block, q, scales)


def _blocks(flat: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Full blocks as a 2-D view, and the short tail (or None)."""
    b = flat.size if block == 0 else block
    full = flat.size // b * b
    return flat[:full].reshape(-1, b), (flat[full:] if full < flat.size else None)


def _encode_numpy(arr: np.ndarray, block: int, q: np.ndarray, scales: np.ndarray):
    if arr.size == 0:
        return q, scales
    if not np.isfinite(arr).all():
        raise NativeError("input holds NaN or infinity", where=f"encode_q8(x: shape {arr.shape})")
    flat, qflat = arr.reshape(-1), q.reshape(-1)
    body, tail = _blocks(flat, block)
    parts = [body] + ([tail[None, :]] if tail is not None else [])
    start, bi = 0, 0
    for part in parts:
        if part.size == 0:
            continue
        d = np.abs(part).max(axis=1) / np.float32(127.0)
        if scales.dtype == np.float16:
            d = np.minimum(d, np.float32(65504.0)).astype(np.float16)
        scales[bi:bi + len(d)] = d
        d32 = d.astype(np.float32)
        with np.errstate(divide="ignore"):
            inv = np.where(d32 > 0, np.float32(1.0) / d32, np.float32(0.0)).astype(np.float32)
        vals = np.clip(np.rint(part * inv[:, None]), -127, 127).astype(np.int8)
        qflat[start:start + part.size] = vals.reshape(-1)
        start += part.size
        bi += len(d)
    return q, scales


def decode_q8(q: np.ndarray, scales: np.ndarray, shape: tuple[int, ...] | None = None,
              block: int = 32) -> np.ndarray:
    """Inverse of :func:`encode_q8`: float32 array of ``shape`` (default q's shape).

    A single scale means per-tensor, whatever ``block`` says.
    """
    qa = _lib.as_input(q, np.int8, "decode_q8(q)", copy_ok=False)
    sa = np.ascontiguousarray(scales)
    if sa.dtype not in (np.float16, np.float32):
        raise NativeError(f"dtype {sa.dtype}: float16 or float32 expected",
                          where="decode_q8(scales)")
    n = qa.size
    shape = tuple(qa.shape) if shape is None else tuple(shape)
    if int(np.prod(shape, dtype=np.int64)) != n:
        raise NativeError(f"{n} values cannot take shape {shape}", where="decode_q8(shape)")
    if sa.size == 1 and n > 0:
        block = 0
    if _n_blocks(n, block) != sa.size:
        raise NativeError(f"{sa.size} scales for {n} values in blocks of {block}",
                          where="decode_q8(scales)")
    out = np.empty(shape, np.float32)
    if _lib.LIB is not None:
        rc = _lib.LIB.ek_decode_q8(_lib.ptr(qa), n, block, _lib.ptr(sa),
                                   int(sa.dtype == np.float16), _lib.ptr(out))
        _lib.check(rc, "decode_q8")
        return out
    if n:
        body, tail = _blocks(qa.reshape(-1), block)
        d = sa.astype(np.float32)
        res = [(body.astype(np.float32) * d[: len(body), None]).reshape(-1)]
        if tail is not None:
            res.append(tail.astype(np.float32) * d[-1])
        out.reshape(-1)[:] = np.concatenate(res)
    return out


def to_fp16(x: np.ndarray) -> np.ndarray:
    """float32 -> float16 (round to nearest even; overflow becomes infinity)."""
    arr = _as_f32(x, "to_fp16(x)")
    out = np.empty(arr.shape, np.float16)
    if _lib.LIB is None:
        out[...] = arr
        return out
    _lib.check(_lib.LIB.ek_f32_to_f16(_lib.ptr(arr), arr.size, _lib.ptr(out)), "to_fp16")
    return out


def from_fp16(h: np.ndarray) -> np.ndarray:
    """float16 -> float32 (exact)."""
    arr = _lib.as_input(h, np.float16, "from_fp16(h)", copy_ok=False)
    out = np.empty(arr.shape, np.float32)
    if _lib.LIB is None:
        out[...] = arr
        return out
    _lib.check(_lib.LIB.ek_f16_to_f32(_lib.ptr(arr), arr.size, _lib.ptr(out)), "from_fp16")
    return out


def pack(x: np.ndarray, codec: str = "q8", block: int = 32) -> bytes:
    """Serialize a tensor for a pipeline hop: ``q8`` (int8 + fp16 block scales, ~3.8x smaller
    than fp32), ``fp16`` or ``raw``. Non-float tensors (token ids, masks) always travel raw."""
    if codec not in CODECS:
        raise NativeError(f"unknown codec {codec!r} (one of {sorted(CODECS)})", where="pack(codec)")
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        codec = "raw"
    shape = arr.shape
    scale_kind, dtype_str = 0, b""
    if codec == "raw":
        arr = np.ascontiguousarray(arr)
        dtype_str = arr.dtype.str.encode()
        parts = [arr.tobytes()]
    elif codec == "fp16":
        parts = [to_fp16(arr).tobytes()]
    else:
        q, scales = encode_q8(arr, block, np.float16)
        scale_kind = 1
        parts = [scales.tobytes(), q.tobytes()]
    header = _HEADER.pack(MAGIC, CODECS[codec], scale_kind, len(shape), len(dtype_str), block)
    dims = struct.pack(f"<{len(shape)}Q", *shape)
    return b"".join([header, dims, dtype_str, *parts])


def unpack(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Inverse of :func:`pack`: float32 for q8/fp16 tensors, the original dtype for raw ones."""
    buf = memoryview(data).cast("B")
    if len(buf) < _HEADER.size:
        raise NativeError(f"{len(buf)} bytes is shorter than the header", where="unpack")
    magic, codec, scale_kind, ndim, dlen, block = _HEADER.unpack_from(buf)
    if magic != MAGIC or codec not in CODECS.values():
        raise NativeError("not an edgekit tensor (bad magic or codec)", where="unpack")
    off = _HEADER.size
    if len(buf) < off + 8 * ndim + dlen:
        raise NativeError("truncated header", where="unpack")
    shape = struct.unpack_from(f"<{ndim}Q", buf, off)
    off += 8 * ndim
    n = int(np.prod(shape, dtype=np.int64))
    try:
        if codec == CODECS["raw"]:
            dtype = np.dtype(bytes(buf[off:off + dlen]).decode())
            off += dlen
            need = n * dtype.itemsize
            _need(buf, off, need)
            return np.frombuffer(buf, dtype, n, off).reshape(shape).copy()
        if codec == CODECS["fp16"]:
            _need(buf, off, 2 * n)
            return from_fp16(np.frombuffer(buf, np.float16, n, off).reshape(shape))
        nb = _n_blocks(n, block)
        sdt = np.float16 if scale_kind == 1 else np.float32
        ssize = nb * np.dtype(sdt).itemsize
        _need(buf, off, ssize + n)
        scales = np.frombuffer(buf, sdt, nb, off)
        q = np.frombuffer(buf, np.int8, n, off + ssize)
        return decode_q8(q, scales, shape, block)
    except (TypeError, ValueError) as exc:
        raise NativeError(f"corrupt tensor ({exc})", where="unpack") from None


def _need(buf: memoryview, off: int, size: int) -> None:
    if len(buf) != off + size:
        raise NativeError(f"payload is {len(buf) - off} bytes, {size} expected", where="unpack")
