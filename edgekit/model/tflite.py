"""TFLite models: inspected with LiteRT (ai-edge-litert) and accepted as they are.

Quantizing TFLite is a TensorFlow-converter job (it needs the original SavedModel), so
`edgekit quantize` only reports whether a .tflite file is already int8.

A model is accepted when LiteRT builds an interpreter for it (allocate_tensors) the way
`edgekit serve` runs it, custom ops that LiteRT's XNNPACK delegate implements included; one
that LiteRT cannot run is refused with the missing op named.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ModelError
from edgekit.model.report import Report, TensorSpec

#: LiteRT's message for an op no resolver or delegate provides (node number and op name)
_UNRESOLVED = re.compile(
    r"unresolved custom op: (?P<op>[^.\s]+).*?Node number (?P<node>\d+)", re.DOTALL
)
#: transposed convolutions (OHWI weights as input 1) -> which input is the activation;
#: MediaPipe's custom Convolution2DTransposeBias is (input, weights, bias)
_TRANSPOSED = {"TRANSPOSE_CONV": 2, "Convolution2DTransposeBias": 0}
_MAC_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", *_TRANSPOSED}


def _build(path: Path, resolver: Any) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    return interp


def _custom_ops(ops: list[dict]) -> list[str]:
    """Op names in ``ops`` that are not LiteRT built-ins (the delegate's own node aside)."""
    from ai_edge_litert import schema_py_generated as schema

    builtin = {k for k in vars(schema.BuiltinOperator) if not k.startswith("_")}
    return sorted({str(op["op_name"]) for op in ops} - builtin)


def interpreter(path: Path) -> tuple[Any, list[str]]:
    """A LiteRT interpreter over ``path``, and the custom ops LiteRT's default delegate runs.

    First without default delegates, so the op list and the tensors are the model's own. A
    custom op the built-in resolver lacks (MediaPipe's Convolution2DTransposeBias) makes
    allocate_tensors fail there; the model is then built as `edgekit serve` builds it (built-in
    ops plus the XNNPACK delegate, which implements several MediaPipe ops). Whether LiteRT can
    run the model is decided by LiteRT itself, never by a list of ops kept here.
    """
    try:
        from ai_edge_litert.interpreter import OpResolverType
    except ImportError:
        raise ModelError(
            "ai-edge-litert is needed for TFLite models", hint="pip install 'edgekit[tflite]'"
        ) from None
    try:
        return _build(path, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES), []
    except (ValueError, RuntimeError) as exc:
        if _UNRESOLVED.search(str(exc)) is None:
            raise ModelError(f"LiteRT cannot load this model: {exc}", where=str(path)) from None
    try:
        interp = _build(path, OpResolverType.AUTO)
    except (ValueError, RuntimeError) as exc:
        found = _UNRESOLVED.search(str(exc))
        if found is None:
            raise ModelError(f"LiteRT cannot load this model: {exc}", where=str(path)) from None
        raise ModelError(
            f"LiteRT cannot run this model: custom op {found['op']} (node {found['node']}) is "
            "neither a LiteRT built-in nor provided by its XNNPACK delegate",
            where=str(path),
            hint="edgekit runs .tflite files with LiteRT's standard ops; export the model "
                 "without that op (or use its ONNX version)",
        ) from None
    return interp, _custom_ops(interp._get_ops_details())


def _macs(op: dict, tensors: dict[int, dict]) -> int:
    name = op["op_name"]
    if name not in _MAC_OPS or len(op["inputs"]) < 2:
        return 0
    out = tensors[int(op["outputs"][0])]["shape"]
    if name in _TRANSPOSED:  # each input element meets out_ch x kh x kw weights
        weight = tensors[int(op["inputs"][1])]["shape"]
        x = tensors[int(op["inputs"][_TRANSPOSED[name]])]["shape"]
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


def _spec(detail: dict) -> TensorSpec:
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


def inspect_tflite(path: Path, top: int = 10) -> Report:
    interp, delegated = interpreter(path)
    tensors = {int(t["index"]): t for t in interp.get_tensor_details()}
    # public API has no op list; stable since TF 2.5. DELEGATE: the delegate's own kernel node
    ops = [op for op in interp._get_ops_details() if op["op_name"] != "DELEGATE"]
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
        runtime_notes=[
            f"custom op {op}: not a LiteRT built-in; LiteRT's default XNNPACK delegate runs "
            "it (as edgekit serve does)" for op in delegated
        ],
    )
