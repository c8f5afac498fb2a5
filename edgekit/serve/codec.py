"""Optional int8 compression of tensors crossing a pipeline cut.

Uses the native codec (`edgekit.native.codec.pack/unpack`) when it is importable; otherwise
a numpy block codec: per block of 256 values one float32 scale (max |x| / 127) and int8 codes,
so a float32 tensor shrinks to about 26 % of its size with error <= scale/2 per value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BLOCK = 256


@dataclass
class Packed:
    """A compressed tensor as it travels between stages."""

    payload: Any
    native: bool


@dataclass
class NumpyBlocks:
    shape: tuple[int, ...]
    scales: np.ndarray  # float32 [blocks]
    codes: np.ndarray  # int8 [blocks * BLOCK]


def _native():
    try:
        from edgekit.native import codec  # type: ignore[attr-defined]
    except ImportError:
        return None
    return codec


def pack(array: np.ndarray) -> Packed | np.ndarray:
    """Compress a float32 tensor; other dtypes pass through unchanged."""
    if array.dtype != np.float32:
        return array
    native = _native()
    if native is not None:
        return Packed(native.pack(array), True)
    flat = np.ascontiguousarray(array).reshape(-1)
    pad = (-flat.size) % BLOCK
    blocks = np.pad(flat, (0, pad)).reshape(-1, BLOCK)
    scales = np.abs(blocks).max(axis=1) / 127.0
    safe = np.where(scales > 0, scales, 1.0)
    codes = np.clip(np.rint(blocks / safe[:, None]), -127, 127).astype(np.int8)
    return Packed(NumpyBlocks(array.shape, scales.astype(np.float32), codes.reshape(-1)), False)


def unpack(value: Packed | np.ndarray) -> np.ndarray:
    if not isinstance(value, Packed):
        return value
    if value.native:
        native = _native()
        if native is None:
            raise RuntimeError("tensor was packed by edgekit.native.codec, not importable here")
        return native.unpack(value.payload)
    p: NumpyBlocks = value.payload
    size = int(np.prod(p.shape))
    values = p.codes.reshape(-1, BLOCK).astype(np.float32) * p.scales[:, None]
    return values.reshape(-1)[:size].reshape(p.shape)
