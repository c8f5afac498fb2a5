"""Int8 linear layer y = x W^T + b on N:M-sparse (or dense) packed weights.

Rows of x are quantized to int8 on the fly (one symmetric scale per row), multiplied with
int32 accumulation by the dispatched kernel on all cores (the GIL is released), and
dequantized with the per-channel weight scales. Without the library, numpy computes the
same integers (slowly).
"""

from __future__ import annotations

import ctypes

import numpy as np

from edgekit.errors import NativeError
from edgekit.native import _lib
from edgekit.native.codec import encode_q8
from edgekit.native.sparse import PackedWeights


class Int8Linear:
    """A prepared layer; call it with float32 [..., K] activations."""

    def __init__(self, packed: PackedWeights, bias: np.ndarray | None = None,
                 threads: int = 0) -> None:
        self.packed = packed
        self.threads = threads
        n_out, k_in = packed.n_out, packed.k_in
        self.bias = (np.zeros(n_out, np.float32) if bias is None
                     else _lib.as_input(bias, np.float32, "bias").reshape(-1))
        if self.bias.shape != (n_out,):
            raise NativeError(f"shape {self.bias.shape}, ({n_out},) expected", where="bias")
        self._vals = np.ascontiguousarray(packed.vals, np.int8)
        self._pos = np.ascontiguousarray(packed.pos, np.uint8)
        self._ws = np.ascontiguousarray(packed.wscale, np.float32)
        self._handle: int | None = None
        self._dense: np.ndarray | None = None
        if _lib.LIB is not None:
            h = ctypes.c_void_p()
            rc = _lib.LIB.ek_linear_create(
                _lib.ptr(self._vals), _lib.ptr(self._pos), _lib.ptr(self._ws),
                _lib.ptr(self.bias), n_out, k_in, packed.n, packed.m, ctypes.byref(h))
            _lib.check(rc, f"Int8Linear({n_out}x{k_in}, {packed.n}:{packed.m})")
            self._handle = h.value

    def __del__(self) -> None:
        # at interpreter exit module globals may already be None: the process frees it all
        if getattr(self, "_handle", None) and _lib is not None and _lib.LIB is not None:
            _lib.LIB.ek_linear_destroy(self._handle)
            self._handle = None

    def _rows(self, x: np.ndarray, name: str) -> np.ndarray:
        k = self.packed.k_in
        if x.ndim < 1 or x.shape[-1] != k:
            raise NativeError(f"shape {x.shape}: last dimension must be {k}", where=name)
        return x.reshape(-1, k)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        arr = _lib.as_input(x, np.float32, "x")
        rows = self._rows(arr, f"Int8Linear(x: shape {arr.shape})")
        y = np.empty((rows.shape[0], self.packed.n_out), np.float32)
        if self._handle is not None:
            rc = _lib.LIB.ek_linear_forward(self._handle, _lib.ptr(rows), rows.shape[0],
                                            _lib.ptr(y), self.threads)
            _lib.check(rc, f"Int8Linear(x: shape {arr.shape})")
        elif rows.shape[0]:
            q = np.empty(rows.shape, np.int8)
            sx = np.empty(rows.shape[0], np.float32)
            for r in range(rows.shape[0]):  # per-row scale, exactly as the kernel
                q[r], sx[r] = (v if i == 0 else v[0] for i, v in
                               enumerate(encode_q8(rows[r], 0, np.float32)))
            acc = self._acc_numpy(q)
            y[...] = acc.astype(np.float32) * (sx[:, None] * self._ws[None, :]) + self.bias
        return y.reshape(*arr.shape[:-1], self.packed.n_out)

    def acc(self, xq: np.ndarray) -> np.ndarray:
        """Exact int32 core: xq int8 [rows, K] (values in [-127, 127]) times W^T."""
        arr = _lib.as_input(xq, np.int8, "xq", copy_ok=False)
        rows = self._rows(arr, f"acc(xq: shape {arr.shape})")
        out = np.empty((rows.shape[0], self.packed.n_out), np.int32)
        if self._handle is None:
            if (rows == -128).any():
                raise NativeError("-128 found; activations must lie in [-127, 127]", where="xq")
            return self._acc_numpy(rows)
        rc = _lib.LIB.ek_linear_acc(self._handle, _lib.ptr(rows), rows.shape[0], _lib.ptr(out),
                                    self.threads)
        _lib.check(rc, f"acc(xq: shape {arr.shape})")
        return out

    def _acc_numpy(self, q: np.ndarray) -> np.ndarray:
        if self._dense is None:
            self._dense = self.packed.dense_int8().astype(np.int32)
        return q.astype(np.int32) @ self._dense.T


def gemm_s8_ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Portable-C dense int8 reference: int32 a [M, K] . b [N, K]^T (numpy without the library)."""
    a8 = _lib.as_input(a, np.int8, "a", copy_ok=False)
    b8 = _lib.as_input(b, np.int8, "b", copy_ok=False)
    if a8.ndim != 2 or b8.ndim != 2 or a8.shape[1] != b8.shape[1]:
        raise NativeError(f"shapes {a8.shape} and {b8.shape} do not multiply", where="gemm_s8_ref")
    if _lib.LIB is None:
        return a8.astype(np.int32) @ b8.astype(np.int32).T
    c = np.empty((a8.shape[0], b8.shape[0]), np.int32)
    _lib.check(_lib.LIB.ek_gemm_s8_ref(_lib.ptr(a8), _lib.ptr(b8), a8.shape[0], b8.shape[0],
                                       a8.shape[1], _lib.ptr(c)), "gemm_s8_ref")
    return c
