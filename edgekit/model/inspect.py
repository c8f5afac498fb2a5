"""What a model is: interface, size, work, memory, quantization and runtime (ONNX and TFLite)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from edgekit.model import graph as g
from edgekit.model.loader import default_opset, detect_format, graph_inputs, load_onnx
from edgekit.model.macs import node_costs
from edgekit.model.report import Report, TensorSpec
from edgekit.model.shapes import (
    concrete_shapes,
    declared_shape,
    dtype_name,
    dtype_of,
    resolve_input_shapes,
)
from edgekit.model.tflite import inspect_tflite

_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
_QOPERATOR_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
                  "QLinearAdd", "QLinearMul", "QGemm"}
_DYNAMIC_OPS = {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"}


def inspect_model(path: Path, shapes: dict[str, list[int]] | None = None, top: int = 10) -> Report:
    """Inspect an ONNX or TFLite file."""
    if detect_format(Path(path)) == "tflite":
        return inspect_tflite(Path(path), top=top)
    return inspect_onnx(load_onnx(Path(path)), str(path), shapes, top)


def _spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    shape = declared_shape(vi)
    dyn = [i for i, d in enumerate(shape or []) if not isinstance(d, int) or d <= 0]
    return TensorSpec(vi.name, dtype_name(vi.type.tensor_type.elem_type), shape, dyn)


def quantization_kind(model: onnx.ModelProto) -> str:
    ops: set[str] = set()

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            ops.add(node.op_type)
            for sub in g.subgraphs(node):
                walk(sub)

    walk(model.graph)
    if ops & _DYNAMIC_OPS:
        return "dynamic int8"
    if ops & _QOPERATOR_OPS:
        return "int8 (QOperator)"
    if "QuantizeLinear" not in ops and "DequantizeLinear" in ops:
        return "int8 weights only (QDQ, fp32 activations)"
    if ops & _QDQ_OPS:
        return "int8 (QDQ)"
    return "none"


def activation_peak_bytes(model: onnx.ModelProto, shapes: dict) -> int:
    """Largest sum of live activation bytes over the topological order (weights excluded)."""
    live = g.liveness(model)
    sizes = {
        t: int(np.prod(s[0])) * dtype_of(s[1]).itemsize for t, s in shapes.items() if s[0]
    }
    peak = 0
    by_end: dict[int, list[str]] = {}
    for t, end in live.last_use.items():
        by_end.setdefault(end, []).append(t)
    current = sum(sizes.get(t, 0) for t, p in live.produced.items() if p == -1)
    by_start: dict[int, list[str]] = {}
    for t, p in live.produced.items():
        if p >= 0:
            by_start.setdefault(p, []).append(t)
    for pos in range(len(live.order)):
        current += sum(sizes.get(t, 0) for t in by_start.get(pos, []))
        peak = max(peak, current)
        current -= sum(sizes.get(t, 0) for t in by_end.get(pos, []) if t in live.produced)
    return peak


def inspect_onnx(
    model: onnx.ModelProto,
    path: str,
    shapes: dict[str, list[int]] | None = None,
    top: int = 10,
) -> Report:
    g.constants_to_initializers(model)
    g.ensure_node_names(model)
    concrete, assumed = resolve_input_shapes(model, shapes)
    known = concrete_shapes(model, concrete)
    costs = node_costs(model.graph, known)
    params = 0
    param_bytes = 0
    for init in model.graph.initializer:
        n = int(np.prod(init.dims)) if init.dims else 1
        params += n
        param_bytes += n * dtype_of(init.data_type).itemsize
    inits = {i.name for i in model.graph.initializer}
    ranked = sorted(costs, key=lambda c: c.macs, reverse=True)[:top]
    file_bytes = Path(path).stat().st_size if Path(path).exists() else 0
    return Report(
        path=path,
        format="onnx",
        runtime="onnxruntime",
        inputs=[_spec(vi) for vi in graph_inputs(model)],
        outputs=[_spec(vi) for vi in model.graph.output if vi.name not in inits],
        opset=default_opset(model),
        nodes=len(model.graph.node),
        op_counts=dict(Counter(n.op_type for n in model.graph.node).most_common()),
        parameters=params,
        parameter_bytes=param_bytes,
        macs_total=sum(c.macs for c in costs),
        top_nodes=[
            {"name": c.name, "op": c.op_type, "macs": c.macs} for c in ranked if c.macs > 0
        ],
        peak_activation_bytes=activation_peak_bytes(model, known),
        quantization=quantization_kind(model),
        assumed=assumed,
        file_bytes=file_bytes,
    )
