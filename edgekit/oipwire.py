"""The Open Inference Protocol's wire format that both ends share: datatypes and how tensor
values are coded. The API server (edgekit.serve) and `edgekit.Client` both import it; it needs
numpy only, so the client runs on a laptop without Ray or aiohttp.

Datatypes: the protocol names them ("FP32", "INT64", ...), numpy has dtypes; the table below
is the one mapping between the two. BYTES (strings) has no fixed size: inside edgekit a BYTES
tensor is a numpy object array of `str` (ONNX Runtime's string tensors take Python `str`;
given `bytes` it stores their repr).

Values: NaN and +-Infinity have no JSON number, and the bare tokens that Python (and Triton's
rapidjson writer) emit are not JSON: kserve's client (orjson) cannot read such a response.
They are sent as the strings "NaN", "Infinity", "-Infinity" - protobuf's JSON mapping for
float/double, which the KServe v2 protocol is defined in. numpy turns those strings back into
floats, so tritonclient's and kserve's `as_numpy` read them unchanged. A BYTES element is a
string in JSON; in the binary tensor extension it is a 4-byte little-endian length followed
by that many bytes, which must be UTF-8.
"""

from __future__ import annotations

import struct

import numpy as np

#: OIP datatype -> numpy dtype of the fixed-size types
OIP_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NUMPY_TO_OIP: dict[np.dtype, str] = {v: k for k, v in OIP_TO_NUMPY.items()}
#: every datatype edgekit serves
DATATYPES = frozenset([*OIP_TO_NUMPY, "BYTES"])

#: the float values JSON has no number for, as protobuf's JSON mapping spells them
NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_LEN = struct.Struct("<I")


class BadValue(ValueError):
    """A value that does not fit its tensor; the server answers it as a 400 with this message."""


def oip_from_numpy(dtype: np.dtype) -> str:
    """OIP datatype of a numpy dtype; strings (object, str_, bytes_ arrays) are BYTES."""
    dtype = np.dtype(dtype)
    known = NUMPY_TO_OIP.get(dtype)  # per request and tensor: str(dtype) only when unknown
    if known is not None:
        return known
    return "BYTES" if dtype.kind in "OUS" else str(dtype)


def json_data(arr: np.ndarray) -> list:
    """A tensor's values as a flat JSON-ready list (non-finite floats as strings)."""
    flat = arr.reshape(-1)
    if arr.dtype.kind in "OUS":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    values = flat.tolist()
    if arr.dtype.kind == "f":
        odd = np.flatnonzero(~np.isfinite(flat))
        for i in odd.tolist():
            v = values[i]
            values[i] = "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    return values


def pack_bytes(arr: np.ndarray) -> bytes:
    """A BYTES tensor in the binary extension: per element, its length (4 bytes LE) + bytes."""
    parts = []
    for v in arr.reshape(-1):
        raw = v if isinstance(v, bytes) else str(v).encode("utf-8")
        parts += [_LEN.pack(len(raw)), raw]
    return b"".join(parts)


def unpack_bytes(name: str, raw: memoryview, count: int) -> np.ndarray:
    """`count` BYTES elements from exactly `raw` (length-prefixed, UTF-8), as str."""
    if 4 * count > len(raw):  # every element has a 4-byte length: checked before a loop
        raise BadValue(f"input '{name}': {len(raw)} bytes cannot hold {count} BYTES "
                       f"elements (4-byte length each)")
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise BadValue(f"input '{name}': BYTES element {i}'s length is cut off")
        (n,) = _LEN.unpack_from(raw, offset)
        offset += 4
        if offset + n > len(raw):
            raise BadValue(f"input '{name}': BYTES element {i} says {n} bytes, "
                           f"{len(raw) - offset} are left")
        try:
            out[i] = bytes(raw[offset:offset + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise BadValue(f"input '{name}': BYTES element {i} is not UTF-8 text (the "
                           f"model's string tensors take text)") from None
        offset += n
    if offset != len(raw):
        raise BadValue(f"input '{name}': {len(raw) - offset} bytes left after "
                       f"{count} BYTES elements")
    return out
