"""The frames of the direct tensor channel between the head and its workers (channel.py,
endpoint.py), and between pipeline stages.

Why our own framing and not gRPC or Ray: benchmarks/transport_compare.py measured, for one
small request on this machine, 243 us round trip with this framing, 792 us with gRPC (grpc.aio
on a generic handler, no protobuf per tensor) and 1,400 us with a plain Ray actor call, and a
third of gRPC's CPU per side; gRPC also copies every message into a `bytes`. See
docs/SERVING.md, "The direct tensor path".

A frame: a fixed header, then a body of `body_len` bytes: the tensor table (`table_len`
bytes), padding to 64, and each tensor's bytes, each padded to 64 so a receiver can hand
ONNX Runtime aligned views of its buffer. Sent as a list of buffers (no join: the tensors are
views of the HTTP body or of the runtime's outputs), received into one buffer per frame.

    header: magic "EKC1", kind, flags, tensor count, request id, compute ms, table length,
            body length
    table, per tensor: name length, dtype code, codec, ndim, byte count, dims, name (UTF-8)

Codecs: raw (little-endian, row-major, the OIP binary layout), q8 (an EKT1 blob from
`edgekit.native.codec.pack`: int8 + scales, on pipeline cuts with --compress) and bytes
(OIP BYTES: per element a 4-byte length and UTF-8). An ERROR frame's body is the message.
Every count and length is checked against the body before a view is made: a frame that does
not add up raises FrameError, never reads past its buffer.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from edgekit.oipwire import BadValue, pack_bytes, unpack_bytes

MAGIC = b"EKC1"
HEADER = struct.Struct("<4sBBHQdIQ")  # magic kind flags count rid ms table_len body_len
ENTRY = struct.Struct("<HBBBxxxQ")  # name length, dtype code, codec, ndim, nbytes
ALIGN = 64
_ZEROS = memoryview(bytes(ALIGN))

REQUEST, REPLY, ERROR, PING, PONG = 1, 2, 3, 4, 5
KINDS = {REQUEST, REPLY, ERROR, PING, PONG}
#: ERROR flags: the runtime failed on this request (a 500 for it alone), or the path through
#: the replica broke (a stage's link to the next one: retried on another replica)
RUN_FAILED, PATH_LOST = 0, 1
RAW, Q8, BYTES = 0, 1, 2
_DTYPES = [np.bool_, np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32,
           np.int64, np.float16, np.float32, np.float64]
CODE_OF = {np.dtype(t): i + 1 for i, t in enumerate(_DTYPES)}
DTYPE_OF = {c: d for d, c in CODE_OF.items()}
OBJECT_CODE = 0  # BYTES tensors (numpy object arrays of str)

Tensor = np.ndarray | bytes | bytearray | memoryview  # arrays, or q8 blobs on pipeline cuts


class FrameError(ValueError):
    """A frame that is not well formed (a peer's bug or a corrupted stream)."""


def _pad(n: int) -> int:
    return -n % ALIGN


def encode(kind: int, rid: int, tensors: dict[str, Tensor] | None = None, ms: float = 0.0,
           flags: int = 0) -> list[Any]:
    """A frame as a list of buffers for `writelines`/`sendmsg`: tensor bytes are not copied
    (a contiguous array is sent as a view of its memory)."""
    table = bytearray()
    blobs: list[Any] = []
    for name, value in (tensors or {}).items():
        raw = name.encode("utf-8")
        if isinstance(value, bytes | bytearray | memoryview):
            blob, code, codec, dims = memoryview(value).cast("B"), 0, Q8, ()
        elif value.dtype.kind in "OUS":
            blob, code, codec, dims = memoryview(pack_bytes(value)), OBJECT_CODE, BYTES, value.shape
        else:
            arr = np.ascontiguousarray(value)  # a view when already contiguous
            if arr.dtype.byteorder == ">":  # frames are little-endian, as OIP's binary data
                arr = arr.astype(arr.dtype.newbyteorder("<"))
            code = CODE_OF.get(arr.dtype)
            if code is None:
                raise FrameError(f"tensor '{name}': dtype {arr.dtype} has no frame code")
            blob, codec, dims = memoryview(arr.reshape(-1)).cast("B"), RAW, arr.shape
        table += ENTRY.pack(len(raw), code, codec, len(dims), len(blob))
        table += struct.pack(f"<{len(dims)}q", *dims) + raw
        blobs.append(blob)
    parts: list[Any] = [None, table, _ZEROS[: _pad(len(table))]]
    for blob in blobs:
        parts += [blob, _ZEROS[: _pad(len(blob))]]
    body_len = sum(len(p) for p in parts[1:])
    parts[0] = HEADER.pack(MAGIC, kind, flags, len(blobs), rid, ms, len(table), body_len)
    return parts


def encode_error(rid: int, message: str, flags: int = RUN_FAILED) -> list[Any]:
    body = message.encode("utf-8", "replace")[:4096]
    return [HEADER.pack(MAGIC, ERROR, flags, 0, rid, 0.0, 0, len(body)), body]


def encode_bare(kind: int, rid: int = 0) -> bytes:
    """A frame with no body (PING, PONG)."""
    return HEADER.pack(MAGIC, kind, 0, 0, rid, 0.0, 0, 0)


class Header:
    __slots__ = ("body_len", "count", "flags", "kind", "ms", "rid", "table_len")

    def __init__(self, raw: bytes | memoryview, max_body: int):
        magic, kind, flags, count, rid, ms, tlen, blen = HEADER.unpack_from(raw)
        if magic != MAGIC or kind not in KINDS:
            raise FrameError("not an edgekit channel frame (bad magic or kind)")
        if blen > max_body:
            raise FrameError(f"frame of {blen} bytes is over this channel's limit of {max_body}")
        if tlen > blen:
            raise FrameError(f"table of {tlen} bytes in a body of {blen}")
        self.kind, self.flags, self.count, self.rid, self.ms = kind, flags, count, rid, ms
        self.table_len, self.body_len = tlen, blen


def decode(head: Header, body: np.ndarray | memoryview) -> dict[str, Tensor]:
    """The tensors of a frame's body, as views of it (q8 blobs as memoryviews)."""
    buf = memoryview(body).cast("B") if not isinstance(body, np.ndarray) else memoryview(body)
    if len(buf) != head.body_len:
        raise FrameError(f"body of {len(buf)} bytes, header says {head.body_len}")
    out: dict[str, Tensor] = {}
    pos, data = 0, head.table_len + _pad(head.table_len)
    for i in range(head.count):
        if pos + ENTRY.size > head.table_len:
            raise FrameError(f"tensor table cut off at entry {i}")
        nlen, code, codec, ndim, nbytes = ENTRY.unpack_from(buf, pos)
        pos += ENTRY.size
        end = pos + 8 * ndim + nlen
        if end > head.table_len or data + nbytes > head.body_len:
            raise FrameError(f"tensor {i} runs past the frame")
        dims = struct.unpack_from(f"<{ndim}q", buf, pos)
        name = bytes(buf[pos + 8 * ndim : end]).decode("utf-8", "replace")
        pos = end
        out[name] = _tensor(name, code, codec, dims, buf[data : data + nbytes])
        data += nbytes + _pad(nbytes)
    return out


def _tensor(name: str, code: int, codec: int, dims: tuple, raw: memoryview) -> Tensor:
    if codec == Q8:
        return raw
    if any(d < 0 for d in dims):
        raise FrameError(f"tensor '{name}': negative dimension in {dims}")
    count = math.prod(dims)
    if codec == BYTES:
        try:
            return unpack_bytes(name, raw, count).reshape(dims)
        except BadValue as exc:
            raise FrameError(str(exc)) from None
    dtype = DTYPE_OF.get(code)
    if codec != RAW or dtype is None:
        raise FrameError(f"tensor '{name}': unknown codec {codec} or dtype code {code}")
    if count * dtype.itemsize != len(raw):
        raise FrameError(f"tensor '{name}': {len(raw)} bytes for shape {dims} of {dtype}")
    return np.frombuffer(raw, dtype=dtype).reshape(dims)


def error_text(body: np.ndarray | memoryview | bytes) -> str:
    return bytes(body).decode("utf-8", "replace")
