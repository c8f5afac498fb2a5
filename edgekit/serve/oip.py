"""Open Inference Protocol (KServe v2) request/response codec, JSON and binary tensors.

Binary tensor extension: the body is a JSON header of `Inference-Header-Content-Length`
bytes followed by raw little-endian row-major tensors, in the order of the inputs whose
`parameters.binary_data_size` is set. Outputs are sent binary when the request asks
(`binary_data_output` globally or `binary_data` per output), JSON otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.serve.tensors import OIP_TO_NUMPY, TensorSpec, oip_from_numpy

HEADER_LENGTH = "Inference-Header-Content-Length"


class ProtocolError(Exception):
    """A request the protocol or the model rejects; becomes `{"error": ...}` with `status`."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[str] | None  # None: all
    binary_outputs: dict[str, bool]
    binary_default: bool


def parse_request(body: bytes, header_length: str | None, specs: list[TensorSpec]) -> InferRequest:
    """Decode and validate an infer request against the model's inputs."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} is not an integer: {header_length!r}") from None
        if not 0 <= n <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {n} exceeds the body of {len(body)} bytes")
        head, blob = body[:n], memoryview(body)[n:]
    else:
        head, blob = body, memoryview(b"")
    try:
        doc = json.loads(head)
    except ValueError as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise ProtocolError("request must be a JSON object with an 'inputs' list")
    by_name = {s.name: s for s in specs}
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for item in doc["inputs"]:
        arr, used = _decode_input(item, blob, offset)
        offset += used
        name = item["name"]
        spec = by_name.get(name)
        if spec is None:
            raise ProtocolError(f"unknown input '{name}'; expected {sorted(by_name)}")
        problem = spec.check(arr)
        if problem:
            raise ProtocolError(problem)
        inputs[name] = arr
    if offset != len(blob):
        raise ProtocolError(f"binary data has {len(blob)} bytes but inputs declare {offset}")
    missing = sorted(set(by_name) - set(inputs))
    if missing:
        raise ProtocolError(f"missing inputs: {missing}")
    params = doc.get("parameters") or {}
    binary_default = bool(params.get("binary_data_output", False))
    outputs, flags = None, {}
    if isinstance(doc.get("outputs"), list):
        outputs = []
        for o in doc["outputs"]:
            if not isinstance(o, dict) or "name" not in o:
                raise ProtocolError("each requested output needs a 'name'")
            outputs.append(o["name"])
            p = o.get("parameters") or {}
            if "binary_data" in p:
                flags[o["name"]] = bool(p["binary_data"])
    return InferRequest(doc.get("id"), inputs, outputs, flags, binary_default)


def _decode_input(item: Any, blob: memoryview, offset: int) -> tuple[np.ndarray, int]:
    if not isinstance(item, dict) or not {"name", "shape", "datatype"} <= item.keys():
        raise ProtocolError("each input needs 'name', 'shape' and 'datatype'")
    name, dtype_name = item["name"], item["datatype"]
    dtype = OIP_TO_NUMPY.get(dtype_name)
    if dtype is None:
        raise ProtocolError(f"input '{name}': unsupported datatype {dtype_name}")
    try:
        shape = tuple(int(d) for d in item["shape"])
    except (TypeError, ValueError):
        raise ProtocolError(f"input '{name}': shape must be a list of integers") from None
    if any(d < 0 for d in shape):
        raise ProtocolError(f"input '{name}': negative dimension in shape {list(shape)}")
    count = int(np.prod(shape, dtype=np.int64))
    size = (item.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if size != count * dtype.itemsize:
            raise ProtocolError(
                f"input '{name}': binary_data_size {size} does not match "
                f"shape {list(shape)} x {dtype_name} = {count * dtype.itemsize}"
            )
        if offset + size > len(blob):
            raise ProtocolError(
                f"input '{name}': binary data ends after {len(blob) - offset} of {size} bytes"
            )
        arr = np.frombuffer(blob[offset : offset + size], dtype=dtype.newbyteorder("<"))
        return arr.astype(dtype, copy=False).reshape(shape), size
    if "data" not in item:
        raise ProtocolError(f"input '{name}': no 'data' and no binary_data_size")
    try:
        arr = np.asarray(item["data"], dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"input '{name}': data is not {dtype_name}: {exc}") from None
    if arr.size != count:
        raise ProtocolError(f"input '{name}': {arr.size} values for shape {list(shape)}")
    return arr.reshape(shape), 0


def encode_response(
    model: str, version: str, req: InferRequest, outputs: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """Body and, when any output is binary, the JSON header length."""
    names = req.outputs if req.outputs is not None else list(outputs)
    unknown = [n for n in names if n not in outputs]
    if unknown:
        raise ProtocolError(f"unknown output {unknown}; model outputs {sorted(outputs)}")
    items, blobs = [], []
    for name in names:
        arr = np.ascontiguousarray(outputs[name])
        item: dict[str, Any] = {
            "name": name,
            "datatype": oip_from_numpy(arr.dtype),
            "shape": list(arr.shape),
        }
        if req.binary_outputs.get(name, req.binary_default):
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
            item["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            item["data"] = arr.reshape(-1).tolist()
        items.append(item)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": items}
    if req.id is not None:
        doc["id"] = req.id
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
