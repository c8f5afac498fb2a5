"""Open model files with clear errors, and write outputs atomically.

Every failure a user can cause (not a model, truncated protobuf, missing external data,
opset newer than the runtime, a graph without inputs) becomes a ``ModelError`` that names the
file and the problem; writers never leave a half-written file behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx

from edgekit.errors import ModelError

#: Highest default-domain opset ONNX Runtime 1.31 implements; newer models are refused early.
MAX_ONNX_OPSET = 23
#: Lowest opset onnxruntime.quantization handles (QDQ needs opset 10, per-channel 13).
MIN_ONNX_OPSET = 7
#: IR version we stamp on models we build (onnx 1.23 stamps 14, which ORT 1.31 rejects).
BUILD_IR_VERSION = 10

_TFLITE_MAGIC = b"TFL3"


def detect_format(path: Path) -> str:
    """Return ``"onnx"`` or ``"tflite"`` from the file's content (not only its suffix)."""
    path = Path(path)
    if not path.exists():
        raise ModelError("file not found", where=str(path))
    if path.is_dir():
        raise ModelError("is a folder, expected a model file", where=str(path))
    with open(path, "rb") as fh:
        head = fh.read(8)
    if len(head) >= 8 and head[4:8] == _TFLITE_MAGIC:
        return "tflite"
    if path.suffix.lower() == ".tflite":
        raise ModelError("not a TFLite flatbuffer (no TFL3 identifier)", where=str(path))
    return "onnx"


def load_onnx(path: Path, *, load_weights: bool = True) -> onnx.ModelProto:
    """Load and sanity-check an ONNX model, raising ``ModelError`` naming what is wrong."""
    path = Path(path)
    if detect_format(path) != "onnx":
        raise ModelError("this is a TFLite model; the command needs ONNX", where=str(path))
    if path.stat().st_size == 0:
        raise ModelError("empty file", where=str(path))
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError or RuntimeError, version-dependent
        raise ModelError(
            f"not a readable ONNX model (truncated or not protobuf): {exc}", where=str(path)
        ) from None
    if not model.graph.node and not model.graph.input:
        raise ModelError("not an ONNX model (no graph)", where=str(path))
    _check_external_data(model, path.parent, path)
    if load_weights:
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise ModelError(f"cannot read external data: {exc}", where=str(path)) from None
    check_opset(model, str(path))
    if not graph_inputs(model):
        raise ModelError(
            "model has no inputs (every graph input is an initializer)", where=str(path)
        )
    return model


def check_opset(model: onnx.ModelProto, where: str) -> int:
    """Return the default-domain opset, refusing ones the runtime cannot execute."""
    opset = default_opset(model)
    if opset > MAX_ONNX_OPSET:
        raise ModelError(
            f"opset {opset} is newer than onnxruntime supports ({MAX_ONNX_OPSET})", where=where
        )
    if opset < MIN_ONNX_OPSET:
        raise ModelError(
            f"opset {opset} is too old (minimum {MIN_ONNX_OPSET})",
            where=where,
            hint="upgrade it with onnx.version_converter.convert_version(model, 13)",
        )
    return opset


def default_opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    return 0


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: graph inputs that are not initializers (old IRs list weights as inputs)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _check_external_data(model: onnx.ModelProto, base: Path, path: Path) -> None:
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = base / info.get("location", "")
        if not location.is_file():
            raise ModelError(
                f"external data file {info.get('location')!r} for initializer "
                f"{tensor.name!r} is missing",
                where=str(path),
            )
        needed = int(info.get("offset", 0)) + int(info.get("length", 0))
        if location.stat().st_size < needed:
            raise ModelError(
                f"external data file {location.name} is shorter than initializer "
                f"{tensor.name!r} needs ({needed} bytes)",
                where=str(path),
            )


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                yield from _all_tensors(sub)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it into place only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_onnx(model: onnx.ModelProto, target: Path) -> Path:
    """Serialize ``model`` to ``target`` atomically (single file; weights must fit in 2 GB)."""
    with atomic_path(Path(target)) as tmp:
        tmp.write_bytes(model.SerializeToString())
    return Path(target)


def write_atomic(target: Path, writer: Callable[[Path], None]) -> Path:
    """Run ``writer(tmp_path)`` and move the result to ``target`` only if it succeeds."""
    with atomic_path(Path(target)) as tmp:
        writer(tmp)
    return Path(target)
