"""Loading the C kernel library with ctypes, and turning its status codes into errors.

Why ctypes: the library is a plain C ABI (no Python headers), so the same sources build the
cross-compiled aarch64 C test harness and the Pi's library with no Python on the build path;
ctypes passes numpy buffers zero-copy (``arr.ctypes.data``) and releases the GIL for the
whole foreign call, which is what lets the linear kernel's threads run beside Python threads.
The per-call overhead (a few microseconds) is negligible beside the kernels' work.
"""

from __future__ import annotations

import ctypes
import os
import warnings
from ctypes import POINTER, c_char_p, c_float, c_int, c_size_t, c_uint32, c_void_p
from pathlib import Path

import numpy as np

from edgekit.errors import NativeError

LIB_FILE = Path(__file__).resolve().parent / "_lib" / "libedgekit_native.so"
DISABLE_ENV = "EDGEKIT_NATIVE_DISABLE"  # "1": use the numpy fallbacks even if the library exists
DISABLED = f"disabled by {DISABLE_ENV}=1"
#: why LIB is None ("" when the library loaded): shown by node status reports
PROBLEM = ""

EK_OK, EK_EINVAL, EK_ENONFINITE, EK_ENOMEM = 0, -1, -2, -3
FEATURES = {"asimd": 1 << 0, "asimddp": 1 << 1, "i8mm": 1 << 2, "avx2": 1 << 8, "fma": 1 << 9,
            "f16c": 1 << 10, "avx_vnni": 1 << 11}

_PROTOTYPES: dict[str, tuple[object, list[object]]] = {
    "ek_variant": (c_char_p, []),
    "ek_features": (c_uint32, []),
    "ek_force_variant": (c_int, [c_char_p]),
    "ek_default_threads": (c_int, []),
    "ek_encode_q8": (c_int, [c_void_p, c_size_t, c_size_t, c_void_p, c_void_p, c_int]),
    "ek_decode_q8": (c_int, [c_void_p, c_size_t, c_size_t, c_void_p, c_int, c_void_p]),
    "ek_f32_to_f16": (c_int, [c_void_p, c_size_t, c_void_p]),
    "ek_f16_to_f32": (c_int, [c_void_p, c_size_t, c_void_p]),
    "ek_preprocess": (c_int, [c_void_p, c_int, c_int, c_int, c_size_t, c_int, c_int,
                              POINTER(c_float), POINTER(c_float), c_float, c_int, c_int, c_float,
                              c_int, c_void_p]),
    "ek_linear_create": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p, c_int, c_int, c_int,
                                 c_int, POINTER(c_void_p)]),
    "ek_linear_destroy": (None, [c_void_p]),
    "ek_linear_forward": (c_int, [c_void_p, c_void_p, c_size_t, c_void_p, c_int]),
    "ek_linear_acc": (c_int, [c_void_p, c_void_p, c_size_t, c_void_p, c_int]),
    "ek_gemm_s8_ref": (c_int, [c_void_p, c_void_p, c_size_t, c_size_t, c_size_t, c_void_p]),
}


def _load() -> ctypes.CDLL | None:
    global PROBLEM
    if os.environ.get(DISABLE_ENV) == "1":
        PROBLEM = DISABLED
        return None
    if not LIB_FILE.exists():
        PROBLEM = f"{LIB_FILE.name} not in the install"
        warnings.warn(f"edgekit.native: {LIB_FILE.name} not built (no C compiler at install?); "
                      "using slower numpy fallbacks", RuntimeWarning, stacklevel=3)
        return None
    try:
        lib = ctypes.CDLL(str(LIB_FILE))  # CDLL (not PyDLL): the GIL is released during calls
    except OSError as exc:
        PROBLEM = f"cannot load {LIB_FILE}: {exc}"
        warnings.warn(f"edgekit.native: cannot load {LIB_FILE} ({exc}); using numpy fallbacks",
                      RuntimeWarning, stacklevel=3)
        return None
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


LIB: ctypes.CDLL | None = _load()


def check(rc: int, where: str) -> None:
    """Raise a NativeError naming the call for a non-zero status code."""
    if rc == EK_OK:
        return
    messages = {EK_EINVAL: "invalid argument", EK_ENONFINITE: "input holds NaN or infinity",
                EK_ENOMEM: "out of memory"}
    raise NativeError(messages.get(rc, f"native error {rc}"), where=where)


def ptr(arr: np.ndarray) -> int:
    """Address of a C-contiguous numpy buffer (zero-copy)."""
    return arr.ctypes.data


def as_input(arr: object, dtype: np.dtype | type, name: str, *, copy_ok: bool = True) -> np.ndarray:
    """A C-contiguous array of dtype; NativeError naming `name` if it cannot be one."""
    if not isinstance(arr, np.ndarray):
        try:
            arr = np.asarray(arr)
        except (TypeError, ValueError) as exc:
            raise NativeError(f"cannot be read as an array ({exc})", where=name) from None
    if arr.dtype != np.dtype(dtype):
        if not copy_ok or not np.can_cast(arr.dtype, dtype, casting="same_kind"):
            raise NativeError(f"dtype {arr.dtype} given, {np.dtype(dtype)} expected", where=name)
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr)
