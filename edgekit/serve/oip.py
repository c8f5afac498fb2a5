"""Open Inference Protocol (KServe v2) request/response codec, JSON and binary tensors.

Binary tensor extension: the body is a JSON header of `Inference-Header-Content-Length`
bytes followed by raw little-endian row-major tensors, in the order of the inputs whose
`parameters.binary_data_size` is set (a BYTES tensor: per element a 4-byte little-endian
length and its bytes). Outputs are sent binary when the request asks (`binary_data_output`
globally or `binary_data` per output), JSON otherwise. How JSON values are checked against
their datatype and how NaN/Infinity are written: tensordata.py.

Everything in a request comes from a client that may be hostile, so every field is checked
for its type and range before it is used, names, dtype and shape are checked against the
model's `TensorSpec` and the decoded size against the input's byte limit *before* an array is
built, and any problem is a `ProtocolError` (a 4xx naming the field) - never another
exception, which would be a 500. Client text put into a message is cut (`quietlog.show`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.serve.quietlog import show
from edgekit.serve.tensordata import BadValue, json_data, json_values, pack_bytes, unpack_bytes
from edgekit.serve.tensors import DATATYPES, OIP_TO_NUMPY, TensorSpec, oip_from_numpy

HEADER_LENGTH = "Inference-Header-Content-Length"
#: more dimensions than any model here takes; numpy itself stops at 64
MAX_RANK = 16
#: longest request id echoed back
MAX_ID_CHARS = 256
#: decoded bytes allowed per input when the model's `ModelIO` names no limit for it
DEFAULT_TENSOR_LIMIT = 64 * 1024 * 1024


class ProtocolError(Exception):
    """A request the protocol or the model rejects; becomes `{"error": ...}` with `status`."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status

    def __reduce__(self):  # raised in the decode process: keep the status across pickling
        return (ProtocolError, (self.message, self.status))


@dataclass(frozen=True)
class ModelIO:
    """What a request to one model may contain: its tensors and the byte limit per input."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: input name -> most bytes its decoded tensor may have (exact for a fixed shape)
    tensor_limit: dict[str, int] = field(default_factory=dict)


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[str] | None  # None: all
    binary_outputs: dict[str, bool]
    binary_default: bool


def header_length(value: str | None, body_len: int) -> int | None:
    """The JSON header's length from `Inference-Header-Content-Length` (None: all JSON)."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 20):
        raise ProtocolError(f"{HEADER_LENGTH} must be a non-negative integer, got {show(value)}")
    n = int(text)
    if n > body_len:
        raise ProtocolError(f"{HEADER_LENGTH} {n} exceeds the body of {body_len} bytes")
    return n


def load_json(text: bytes | bytearray | memoryview, what: str = "request") -> Any:
    try:
        return json.loads(bytes(text) if isinstance(text, memoryview) else text)
    except RecursionError:
        raise ProtocolError(f"malformed JSON {what}: nested too deep") from None
    except ValueError as exc:  # includes UnicodeDecodeError and over-long integers
        raise ProtocolError(f"malformed JSON {what}: {str(exc)[:100]}") from None


def parse_request(body: bytes | bytearray, header_len: str | None, io: ModelIO) -> InferRequest:
    """Decode and validate an infer request against the model's inputs and outputs."""
    n = header_length(header_len, len(body))
    view = memoryview(body)
    head, blob = (view, view[:0]) if n is None else (view[:n], view[n:])
    key = (id(io), bytes(head)) if n is not None and n <= _PLAN_HEADER_BYTES else None
    plan = _PLANS.get(key) if key is not None else None
    if plan is not None and plan.io is io and plan.blob_bytes == len(blob):
        return plan.request(blob)
    doc = load_json(head)
    if not isinstance(doc, dict):
        raise ProtocolError("request must be a JSON object with an 'inputs' list")
    items = doc.get("inputs")
    if not isinstance(items, list) or not items:
        raise ProtocolError("'inputs' must be a non-empty list")
    if len(items) > len(io.inputs):
        raise ProtocolError(f"'inputs' has {len(items)} entries; the model takes {len(io.inputs)}")
    by_name = {s.name: s for s in io.inputs}
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    layout = []
    for i, item in enumerate(items):
        spec = _input_spec(i, item, by_name, inputs)
        limit = io.tensor_limit.get(spec.name, DEFAULT_TENSOR_LIMIT)
        arr, used = _decode_input(item, spec, blob, offset, limit)
        layout.append((spec.name, arr.dtype, arr.shape, offset, used == arr.nbytes))
        offset += used
        inputs[spec.name] = arr
    if offset != len(blob):
        raise ProtocolError(f"binary data has {len(blob)} bytes but inputs declare {offset}")
    missing = sorted(set(by_name) - set(inputs))
    if missing:
        raise ProtocolError(f"missing inputs: {missing}")
    outputs, flags, binary_default = _requested_outputs(doc, io)
    rid = doc.get("id")
    if rid is not None and (not isinstance(rid, str) or len(rid) > MAX_ID_CHARS):
        raise ProtocolError(f"'id' must be a string of at most {MAX_ID_CHARS} characters")
    if key is not None and rid is None and all(
            whole and dt.kind not in "OUS" for _, dt, _, _, whole in layout):
        if len(_PLANS) >= 256:  # bounded: headers that vary (ids, dynamic shapes) churn it
            _PLANS.clear()
        _PLANS[key] = _Plan(io, layout, len(blob), outputs, flags, binary_default)
    return InferRequest(rid, inputs, outputs, flags, binary_default)


#: binary requests' JSON headers up to this size are remembered with what they decoded to
_PLAN_HEADER_BYTES = 2048


@dataclass(frozen=True)
class _Plan:
    """A binary request's header, checked once: clients send the same header with every
    request of a fixed-shape model (tritonclient, edgekit.Client), so the next request with
    the same header bytes and body length skips json.loads and every check, which depend on
    nothing else; its tensors are views of its own body at the same offsets."""

    io: ModelIO
    layout: list[tuple[str, np.dtype, tuple[int, ...], int, bool]]
    blob_bytes: int
    outputs: list[str] | None
    flags: dict[str, bool]
    binary_default: bool

    def request(self, blob: memoryview) -> InferRequest:
        inputs = {
            name: np.frombuffer(blob, dtype=dt.newbyteorder("<"), count=math.prod(shape),
                                offset=off).astype(dt, copy=False).reshape(shape)
            for name, dt, shape, off, _ in self.layout}
        return InferRequest(None, inputs, self.outputs, self.flags, self.binary_default)


_PLANS: dict[tuple[int, bytes], _Plan] = {}


def _input_spec(i: int, item: Any, by_name: dict[str, TensorSpec], seen: dict) -> TensorSpec:
    if not isinstance(item, dict):
        raise ProtocolError(f"inputs[{i}] must be an object with 'name', 'shape' and 'datatype'")
    name = item.get("name")
    if not isinstance(name, str):
        raise ProtocolError(f"inputs[{i}].name must be a string, got {show(name)}")
    spec = by_name.get(name)
    if spec is None:
        raise ProtocolError(f"unknown input {show(name)}; expected {sorted(by_name)}")
    if name in seen:
        raise ProtocolError(f"input '{name}' is given twice")
    return spec


def _decode_input(
    item: dict, spec: TensorSpec, blob: memoryview, offset: int, limit: int
) -> tuple[np.ndarray, int]:
    name, dtype_name = spec.name, item.get("datatype")
    if not isinstance(dtype_name, str) or dtype_name not in DATATYPES:
        raise ProtocolError(
            f"input '{name}': datatype must be one of {sorted(DATATYPES)}, "
            f"got {show(dtype_name)}"
        )
    if dtype_name != spec.datatype:
        raise ProtocolError(f"input '{name}': expected datatype {spec.datatype}, got {dtype_name}")
    shape = _shape(name, item.get("shape"))
    problem = spec.check_shape(shape)
    if problem:
        raise ProtocolError(problem)
    count = math.prod(shape)
    # a BYTES element takes at least its 4-byte length on the wire
    nbytes = count * (OIP_TO_NUMPY[dtype_name].itemsize if dtype_name != "BYTES" else 4)
    if nbytes > limit:
        raise ProtocolError(
            f"input '{name}': shape {list(shape)} x {dtype_name} is {nbytes} bytes decoded, "
            f"over this input's limit of {limit}",
            413,
        )
    params = item.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise ProtocolError(f"input '{name}': parameters must be an object")
    size = (params or {}).get("binary_data_size")
    try:
        if size is not None:
            if dtype_name == "BYTES":
                return _binary_bytes(name, size, shape, blob, offset, limit), size
            return _binary(name, size, shape, OIP_TO_NUMPY[dtype_name], blob, offset), size
        if "data" not in item:
            raise ProtocolError(f"input '{name}': no 'data' and no binary_data_size")
        data = item["data"]
        if not isinstance(data, list):
            raise ProtocolError(f"input '{name}': data must be a list, got {show(data)}")
        arr = json_values(name, dtype_name, data)
    except BadValue as exc:
        raise ProtocolError(str(exc)) from None
    if arr.size != count:
        raise ProtocolError(f"input '{name}': {arr.size} values for shape {list(shape)}")
    return arr.reshape(shape), 0


def _shape(name: str, value: Any) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or len(value) > MAX_RANK
        or not all(type(d) is int and d >= 0 for d in value)
    ):
        raise ProtocolError(
            f"input '{name}': shape must be a list of at most {MAX_RANK} non-negative "
            f"integers, got {show(value) if not isinstance(value, list) else show(str(value))}"
        )
    return tuple(value)


def _binary(
    name: str, size: Any, shape: tuple, dtype: np.dtype, blob: memoryview, offset: int
) -> np.ndarray:
    nbytes = math.prod(shape) * dtype.itemsize
    if type(size) is not int or size != nbytes:
        raise ProtocolError(
            f"input '{name}': binary_data_size {show(str(size), 24)} does not match "
            f"shape {list(shape)} x {dtype} = {nbytes} bytes"
        )
    if offset + size > len(blob):
        raise ProtocolError(
            f"input '{name}': binary data ends after {len(blob) - offset} of {size} bytes"
        )
    arr = np.frombuffer(blob, dtype=dtype.newbyteorder("<"), count=size // dtype.itemsize,
                        offset=offset)
    return arr.astype(dtype, copy=False).reshape(shape)


def _binary_bytes(name: str, size: Any, shape: tuple, blob: memoryview, offset: int,
                  limit: int) -> np.ndarray:
    """A BYTES input from the binary data: its size is the client's, checked, not derived."""
    if type(size) is not int or size < 0:
        raise ProtocolError(f"input '{name}': binary_data_size must be a non-negative "
                            f"integer, got {show(str(size), 24)}")
    if size > limit:
        raise ProtocolError(f"input '{name}': binary_data_size {size} is over this input's "
                            f"limit of {limit} bytes", 413)
    if offset + size > len(blob):
        raise ProtocolError(
            f"input '{name}': binary data ends after {len(blob) - offset} of {size} bytes"
        )
    return unpack_bytes(name, blob[offset:offset + size], math.prod(shape)).reshape(shape)


def _requested_outputs(doc: dict, io: ModelIO) -> tuple[list[str] | None, dict[str, bool], bool]:
    params = doc.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise ProtocolError("'parameters' must be an object")
    binary_default = (params or {}).get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise ProtocolError("parameters.binary_data_output must be true or false")
    wanted = doc.get("outputs")
    if wanted is None:
        return None, {}, binary_default
    if not isinstance(wanted, list) or len(wanted) > len(io.outputs):
        raise ProtocolError(f"'outputs' must be a list of at most {len(io.outputs)} objects")
    known = {t.name for t in io.outputs}
    names: list[str] = []
    flags: dict[str, bool] = {}
    for j, o in enumerate(wanted):
        name = o.get("name") if isinstance(o, dict) else None
        if not isinstance(name, str):
            raise ProtocolError(f"outputs[{j}].name must be a string")
        if name not in known:
            raise ProtocolError(f"unknown output {show(name)}; model outputs {sorted(known)}")
        if name in names:
            raise ProtocolError(f"output '{name}' is requested twice")
        p = o.get("parameters")
        if p is not None and not isinstance(p, dict):
            raise ProtocolError(f"outputs[{j}].parameters must be an object")
        if p and "binary_data" in p:
            if not isinstance(p["binary_data"], bool):
                raise ProtocolError(f"outputs[{j}].parameters.binary_data must be true or false")
            flags[name] = p["binary_data"]
        names.append(name)
    return names, flags, binary_default


def encode_response(
    model: str, version: str, req: InferRequest, outputs: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """Body and, when any output is binary, the JSON header length."""
    parts, header_len = encode_parts(model, version, req, outputs)
    return b"".join(parts), header_len


def encode_parts(
    model: str, version: str, req: InferRequest, outputs: dict[str, np.ndarray]
) -> tuple[list[bytes | memoryview], int | None]:
    """The body as its pieces (the JSON header, then each binary output as a view of its
    array, not a copy: a 1 MB answer is written to the socket from the worker's reply buffer)
    and, when any output is binary, the JSON header length."""
    names = req.outputs if req.outputs is not None else list(outputs)
    unknown = [n for n in names if n not in outputs]
    if unknown:  # parse_request checked names against the model: this is a server fault
        raise RuntimeError(f"the model did not return outputs {unknown}")
    arrays = [np.ascontiguousarray(outputs[n]) for n in names]
    binary = tuple(req.binary_outputs.get(n, req.binary_default) for n in names)
    key = (model, version, binary, *((n, a.dtype, a.shape) for n, a in zip(names, arrays,
                                                                        strict=True)))
    if req.id is None and all(binary) and key in _HEADS:  # same shapes: the same JSON header
        head = _HEADS[key]
        return [head, *(_raw(a) for a in arrays)], len(head)
    items: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for name, arr in zip(names, arrays, strict=True):
        item: dict[str, Any] = {
            "name": name,
            "datatype": oip_from_numpy(arr.dtype),
            "shape": list(arr.shape),
        }
        if req.binary_outputs.get(name, req.binary_default):
            raw = _raw(arr)
            item["parameters"] = {"binary_data_size": raw.nbytes if isinstance(
                raw, memoryview) else len(raw)}
            blobs.append(raw)
        else:
            item["data"] = json_data(arr)
        items.append(item)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": items}
    if req.id is not None:
        doc["id"] = req.id
    # allow_nan=False: json_data wrote NaN/Infinity as strings; a bare token is never sent
    head = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    if not blobs:
        return [head], None
    if req.id is None and all(binary) and all(a.dtype.kind not in "OUS" for a in arrays):
        if len(_HEADS) >= 1024:  # bounded: a model with dynamic shapes makes many
            _HEADS.clear()
        _HEADS[key] = head
    return [head, *blobs], len(head)


#: JSON headers of binary responses by (model, version, flags, name/dtype/shape per output):
#: a fixed-shape model answers with the same header every time (json.dumps once, not per
#: request). Not for BYTES outputs, whose sizes vary with their values.
_HEADS: dict[tuple, bytes] = {}


def _raw(arr: np.ndarray) -> bytes | memoryview:
    """A contiguous array's little-endian bytes: a view when it is little-endian already."""
    if arr.dtype.kind in "OUS":
        return pack_bytes(arr)
    little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return memoryview(np.ascontiguousarray(little).reshape(-1).view(np.uint8))
