"""Multiply-accumulate counts for the operators that dominate inference time.

Counted exactly from shapes: Conv/ConvTranspose (and their integer/QLinear forms), MatMul
(activation x activation products inside attention included), Gemm, LSTM/GRU/RNN, and the
com.microsoft Attention-family ops. Everything else is charged one op per output element,
which keeps element-wise-heavy stages from looking free. If/Loop/Scan nodes are charged
their most expensive branch / one iteration of their body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from edgekit.model.graph import subgraphs

Shapes = dict[str, tuple[tuple[int, ...], int]]

_CONV = {"Conv", "ConvInteger", "QLinearConv", "FusedConv", "NhwcConv"}
_MATMUL = {"MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul", "DynamicQuantizeMatMul"}
_RNN_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


@dataclass(frozen=True)
class NodeCost:
    """Work of one top-level node."""

    name: str
    op_type: str
    macs: int
    elements: int  # output elements (a proxy for memory-bound work)


def _shape(shapes: Shapes, name: str) -> tuple[int, ...] | None:
    entry = shapes.get(name)
    return entry[0] if entry else None


def _prod(dims: tuple[int, ...] | list[int]) -> int:
    return int(math.prod(dims)) if dims else 1


def node_macs(node: onnx.NodeProto, shapes: Shapes) -> int:
    """MACs of one node from known shapes (0 when shapes are unknown)."""
    op = node.op_type
    out = _shape(shapes, node.output[0]) if node.output else None
    if op in _CONV:
        w_idx = 3 if op == "QLinearConv" else 1
        w = _shape(shapes, node.input[w_idx]) if len(node.input) > w_idx else None
        return _prod(out) * _prod(w[1:]) if out and w else 0
    if op == "ConvTranspose":
        x = _shape(shapes, node.input[0])
        w = _shape(shapes, node.input[1])
        return _prod(x) * _prod(w[1:]) if x and w else 0
    if op in _MATMUL:
        a = _shape(shapes, node.input[0])
        return _prod(out) * a[-1] if out and a else 0
    if op == "Gemm":
        a = _shape(shapes, node.input[0])
        trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
        if not (out and a and len(a) == 2):
            return 0
        return _prod(out) * (a[0] if trans_a else a[1])
    if op in _RNN_GATES:
        x = _shape(shapes, node.input[0])
        w = _shape(shapes, node.input[1])  # [dirs, gates*hidden, input]
        r = _shape(shapes, node.input[2])  # [dirs, gates*hidden, hidden]
        if not (x and w and r):
            return 0
        seq, batch = x[0], x[1]
        return seq * batch * (_prod(w) + _prod(r))
    if op in {"Attention", "MultiHeadAttention", "GroupQueryAttention"}:
        x = _shape(shapes, node.input[0])
        if not (x and len(x) == 3):
            return 0
        batch, seq, hidden = x
        proj = batch * seq * hidden * hidden * (3 if op == "Attention" else 0)
        return proj + 2 * batch * seq * seq * hidden
    if op in {"If", "Loop", "Scan"}:
        return max((graph_macs(g, shapes) for g in subgraphs(node)), default=0)
    return 0


def graph_macs(graph: onnx.GraphProto, shapes: Shapes) -> int:
    return sum(node_macs(n, shapes) for n in graph.node)


def node_costs(graph: onnx.GraphProto, shapes: Shapes) -> list[NodeCost]:
    """Cost of every top-level node, in file order."""
    costs = []
    for node in graph.node:
        elements = sum(_prod(s) for o in node.output if o and (s := _shape(shapes, o)))
        costs.append(NodeCost(node.name, node.op_type, node_macs(node, shapes), elements))
    return costs
