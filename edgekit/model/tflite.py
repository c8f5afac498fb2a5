"""TFLite models: inspected with LiteRT (ai-edge-litert) and accepted as they are.

Quantizing TFLite is a TensorFlow-converter job (it needs the original SavedModel), so
`edgekit quantize` only reports whether a .tflite file is already int8.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ModelError

_MAC_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"}


def interpreter(path: Path) -> Any:
    """A LiteRT interpreter without default delegates, so every op stays visible."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise ModelError(
            "ai-edge-litert is needed for TFLite models", hint="pip install 'edgekit[tflite]'"
        ) from None
    try:
        interp = Interpreter(
            model_path=str(path),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"LiteRT cannot load this model: {exc}", where=str(path)) from None
    return interp


def _macs(op: dict, tensors: dict[int, dict]) -> int:
    name = op["op_name"]
    if name not in _MAC_OPS or len(op["inputs"]) < 2:
        return 0
    out = tensors[int(op["outputs"][0])]["shape"]
    if name == "TRANSPOSE_CONV":
        weight = tensors[int(op["inputs"][1])]["shape"]
        x = tensors[int(op["inputs"][2])]["shape"]
        return int(np.prod(x)) * int(np.prod(weight[:-1]))
    weight = tensors[int(op["inputs"][1])]["shape"]
    if name == "CONV_2D":
        return int(np.prod(out)) * int(np.prod(weight[1:]))
    if name == "DEPTHWISE_CONV_2D":
        return int(np.prod(out)) * int(np.prod(weight[1:3]))
    if name == "FULLY_CONNECTED":
        return int(np.prod(out)) * int(weight[-1])
    x = tensors[int(op["inputs"][0])]["shape"]  # BATCH_MATMUL
    return int(np.prod(out)) * int(x[-1])


def _spec(detail: dict) -> Any:
    from edgekit.model.inspect import TensorSpec

    sig = [int(d) for d in detail.get("shape_signature", detail["shape"])]
    shape: list[int | str] = [d if d > 0 else "?" for d in sig]
    return TensorSpec(
        detail["name"], np.dtype(detail["dtype"]).name, shape,
        [i for i, d in enumerate(sig) if d <= 0],
    )


def quantization_kind(tensors: dict[int, dict], constants: set[int]) -> str:
    const_types = {np.dtype(tensors[i]["dtype"]).name for i in constants}
    quantized = [
        t for t in tensors.values()
        if np.dtype(t["dtype"]).name in ("int8", "uint8", "int16")
        and len(t["quantization_parameters"]["scales"]) > 0
    ]
    if quantized and any(t["index"] not in constants for t in quantized):
        return "int8"
    if quantized:
        return "int8 weights (dynamic range)"
    if "float16" in const_types:
        return "fp16 weights"
    return "none"


def inspect_tflite(path: Path, top: int = 10) -> Any:
    from edgekit.model.inspect import Report

    interp = interpreter(path)
    tensors = {int(t["index"]): t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # public API has no op list; stable since TF 2.5
    produced = {int(o) for op in ops for o in op["outputs"]}
    inputs = interp.get_input_details()
    input_ids = {int(d["index"]) for d in inputs}
    constants = {
        int(i) for op in ops for i in op["inputs"]
        if int(i) >= 0 and int(i) not in produced and int(i) not in input_ids
    }
    params = sum(int(np.prod(tensors[i]["shape"])) for i in constants)
    param_bytes = sum(
        int(np.prod(tensors[i]["shape"])) * np.dtype(tensors[i]["dtype"]).itemsize
        for i in constants
    )
    macs = [(f"{op['op_name']}_{op['index']}", op["op_name"], _macs(op, tensors)) for op in ops]
    activations = [
        int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize
        for i, t in tensors.items() if i not in constants
    ]
    ranked = sorted(macs, key=lambda m: m[2], reverse=True)[:top]
    return Report(
        path=str(path),
        format="tflite",
        runtime="litert",
        inputs=[_spec(d) for d in inputs],
        outputs=[_spec(d) for d in interp.get_output_details()],
        opset=None,
        nodes=len(ops),
        op_counts=dict(Counter(op["op_name"] for op in ops).most_common()),
        parameters=params,
        parameter_bytes=param_bytes,
        macs_total=sum(m[2] for m in macs),
        top_nodes=[{"name": n, "op": o, "macs": m} for n, o, m in ranked if m > 0],
        # LiteRT's arena planner reuses buffers; the sum of all activations is an upper bound
        peak_activation_bytes=sum(activations),
        quantization=quantization_kind(tensors, constants),
        assumed=[],
        file_bytes=Path(path).stat().st_size,
    )
