"""Graph facts the rest of the model tooling needs: a topological order that counts the free
variables of control-flow bodies, producers and last uses of tensors, and tensor types.

``onnx.utils.extract_model`` only follows top-level node inputs and so loses outer-scope values
read inside If/Loop/Scan bodies; everything here treats those as inputs of the enclosing node.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

import onnx

from edgekit.errors import ModelError


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """Bodies held by a node's attributes (If branches, Loop/Scan bodies)."""
    out: list[onnx.GraphProto] = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            out.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            out.extend(attr.graphs)
    return out


def free_vars(graph: onnx.GraphProto) -> set[str]:
    """Names a body reads but does not define itself (values from the enclosing scope)."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    defined |= {i.name for i in graph.sparse_initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n)
        for sub in subgraphs(node):
            used |= free_vars(sub)
        defined.update(n for n in node.output if n)
    used.update(o.name for o in graph.output)
    return used - defined


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Every tensor the node needs: its inputs plus outer-scope values its bodies read."""
    names = [n for n in node.input if n]
    seen = set(names)
    for sub in subgraphs(node):
        for name in sorted(free_vars(sub)):
            if name not in seen:
                seen.add(name)
                names.append(name)
    return names


def ensure_node_names(model: onnx.ModelProto) -> None:
    """Give every top-level node a unique name (profiling and reports key on names)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Turn top-level ``Constant`` nodes holding a tensor into initializers (in place).

    Exporters such as paddle2onnx store every weight as a Constant node; as initializers they
    count as parameters, are duplicated into each stage that needs them instead of crossing a
    cut, and are what the quantizer expects. Returns how many were converted.
    """
    keep = []
    moved = 0
    for node in model.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Constant" and not node.domain and set(attrs) == {"value"}:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attrs["value"].t)
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
            moved += 1
        else:
            keep.append(node)
    if moved:
        del model.graph.node[:]
        model.graph.node.extend(keep)
    return moved


def topo_order(graph: onnx.GraphProto) -> list[int]:
    """Node indices in a topological order, as close to file order as dependencies allow.

    Nodes computed from weights alone (the DequantizeLinear of a QDQ weight, a Reshape of a
    constant) are placed right before their first consumer, so a cut never separates a
    weight's dequantisation from the layer using it (that would send fp32 weights over the
    link on every request).

    Raises ``ModelError`` on a cycle or on a tensor no node, input or initializer defines.
    """
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    available |= {i.name for i in graph.sparse_initializer}
    producer: dict[str, int] = {}
    for idx, node in enumerate(graph.node):
        for out in node.output:
            if out:
                producer[out] = idx
    deps: list[set[int]] = []
    users: dict[int, list[int]] = {i: [] for i in range(len(graph.node))}
    for idx, node in enumerate(graph.node):
        mine: set[int] = set()
        for name in node_inputs(node):
            if name in producer:
                mine.add(producer[name])
            elif name not in available:
                raise ModelError(
                    f"node {node.name or idx} ({node.op_type}) reads tensor {name!r} "
                    "that nothing defines"
                )
        mine.discard(idx)
        deps.append(mine)
        for d in mine:
            users[d].append(idx)
    key = _placement_keys(graph, deps, users)
    remaining = [len(d) for d in deps]
    ready = [(key[i], i) for i, r in enumerate(remaining) if r == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        _, idx = heapq.heappop(ready)
        order.append(idx)
        for u in users[idx]:
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, (key[u], u))
    if len(order) != len(graph.node):
        stuck = next(i for i, r in enumerate(remaining) if r > 0)
        raise ModelError(f"graph has a cycle through node {graph.node[stuck].name or stuck}")
    return order


def _placement_keys(
    graph: onnx.GraphProto, deps: list[set[int]], users: dict[int, list[int]]
) -> list[float]:
    """File position for ordinary nodes; for weight-only nodes, just before first consumer."""
    has_graph_input = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    constant = [False] * len(graph.node)
    changed = True
    while changed:
        changed = False
        for idx, node in enumerate(graph.node):
            if constant[idx] or not graph.node[idx].output:
                continue
            if any(n in has_graph_input for n in node_inputs(node)):
                continue
            if all(constant[d] for d in deps[idx]):
                constant[idx] = changed = True
    key = [float(i) for i in range(len(graph.node))]
    for _ in range(len(graph.node)):  # consumers' keys settle within the chain length
        moved = False
        for idx in range(len(graph.node)):
            if constant[idx] and users[idx]:
                want = min(key[u] for u in users[idx]) - 0.5
                if want != key[idx]:
                    key[idx], moved = want, True
        if not moved:
            break
    return key


@dataclass(frozen=True)
class Liveness:
    """Where each activation is produced and last used, in topological positions.

    Graph inputs are produced at position -1; graph outputs are used at position ``n`` (the
    end), so they are carried through every later cut.
    """

    order: list[int]
    produced: dict[str, int]
    last_use: dict[str, int]

    def crossing(self, cut: int) -> list[str]:
        """Tensors produced before position ``cut`` and needed at or after it."""
        return [
            t for t, p in self.produced.items() if p < cut <= self.last_use.get(t, -2)
        ]


def liveness(model: onnx.ModelProto, order: list[int] | None = None) -> Liveness:
    graph = model.graph
    order = order if order is not None else topo_order(graph)
    inits = {i.name for i in graph.initializer} | {i.name for i in graph.sparse_initializer}
    produced: dict[str, int] = {i.name: -1 for i in graph.input if i.name not in inits}
    last_use: dict[str, int] = {}
    for pos, idx in enumerate(order):
        node = graph.node[idx]
        for name in node_inputs(node):
            if name not in inits:
                last_use[name] = pos
        for out in node.output:
            if out:
                produced[out] = pos
    for out in graph.output:
        last_use[out.name] = len(order)
    return Liveness(order=order, produced=produced, last_use=last_use)


def initializers_used(nodes: Iterable[onnx.NodeProto], init_names: set[str]) -> set[str]:
    """Initializers read by these nodes, directly or from inside their bodies."""
    used: set[str] = set()
    for node in nodes:
        used.update(n for n in node_inputs(node) if n in init_names)
    return used


def value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Best-known type of every named tensor (shape inference where it succeeds)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # inference can fail on custom ops; fall back to what the file states
        inferred = model
    out: dict[str, onnx.ValueInfoProto] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(
        inferred.graph.output
    ):
        if vi.type.HasField("tensor_type"):
            out[vi.name] = vi
    return out
