"""Mixed precision on ONNX Runtime's QDQ output: chosen nodes read fp32 activations but keep
their int8 weights.

In QDQ format an activation ``T`` reaches its consumers as ``T -> QuantizeLinear ->
DequantizeLinear``, while a weight is stored int8 and reaches its consumer through a
``DequantizeLinear`` fed by an initializer (biases likewise, as int32). To let node ``N`` compute
on fp32 activations we point each of ``N``'s activation inputs back at the fp32 tensor before
its QuantizeLinear and leave the weight and bias DequantizeLinear nodes alone: ``N`` becomes
weight-only int8 (int8 on disk and in memory, dequantized to fp32 for an fp32 kernel). Other
consumers of the same tensor keep their quantized path, and Q/DQ nodes left without a
consumer are dropped. ORT then fuses only the nodes still surrounded by Q/DQ into int8 kernels.

``compact_names`` shortens the names ORT generates for Q/DQ nodes, their output tensors and
their scale / zero-point initializers (``conv2d_401.tmp_0_QuantizeLinear_Output`` ...): on small
CNNs those strings are a noticeable part of the file. Names of the original nodes, weights,
inputs and outputs are kept. Use it last: ORT's per-tensor debugging matches on those names.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx

from edgekit.errors import ModelError

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output if out}


def _subgraph_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name read or written inside If/Loop/Scan bodies (never renamed or cut)."""
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                for inner in sub.node:
                    names.update(inner.input)
                    names.update(inner.output)
                names.update(o.name for o in sub.output)
                names |= _subgraph_names(sub)
    return names


def _float_source(name: str, producers: dict[str, onnx.NodeProto], inits: set[str]) -> str:
    """The fp32 tensor behind an activation's Q -> DQ chain (``name`` itself if there is none)."""
    while True:
        dq = producers.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in inits:
            return name  # not a DQ output, or a weight / bias DequantizeLinear
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            return name
        name = q.input[0]


def float_activations(model: onnx.ModelProto, nodes: Iterable[str]) -> list[str]:
    """Feed the named nodes fp32 activations (weights stay int8); returns the nodes changed.

    Raises ``ModelError`` naming any node that is not in the graph.
    """
    graph = model.graph
    wanted = list(dict.fromkeys(nodes))
    by_name = {n.name: n for n in graph.node}
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise ModelError(f"no node named {', '.join(unknown[:5])} in the quantized graph")
    producers = _producers(graph)
    inits = {t.name for t in graph.initializer}
    changed = []
    for name in wanted:
        node = by_name[name]
        if node.op_type in _QDQ:
            continue
        before = list(node.input)
        for k, tensor in enumerate(before):
            if tensor:
                node.input[k] = _float_source(tensor, producers, inits)
        if list(node.input) != before:
            changed.append(name)
    changed += [n for n in _float_outputs(model, set(wanted)) if n not in changed]
    drop_dead_qdq(model)
    return changed


def _float_outputs(model: onnx.ModelProto, chosen: set[str]) -> list[str]:
    """Graph outputs written by a chosen node leave it in fp32, without a final Q -> DQ."""
    graph = model.graph
    producers = _producers(graph)
    inits = {t.name for t in graph.initializer}
    done = []
    for out in graph.output:
        source = _float_source(out.name, producers, inits)
        writer = producers.get(source)
        if source == out.name or writer is None or writer.name not in chosen:
            continue
        graph.node.remove(producers[out.name])  # the DequantizeLinear writing the output
        for node in graph.node:
            for k, name in enumerate(node.input):
                if name == source:
                    node.input[k] = out.name
        for k, name in enumerate(writer.output):
            if name == source:
                writer.output[k] = out.name
        done.append(writer.name)
    return done


def output_writers(model: onnx.ModelProto) -> list[str]:
    """The nodes computing the graph outputs (behind their final Q -> DQ, if any)."""
    graph = model.graph
    producers = _producers(graph)
    inits = {t.name for t in graph.initializer}
    writers = []
    for out in graph.output:
        node = producers.get(_float_source(out.name, producers, inits))
        if node is not None and node.op_type not in _QDQ and node.name not in writers:
            writers.append(node.name)
    return writers


def weights_only(model: onnx.ModelProto) -> list[str]:
    """Every node computes on fp32 activations with int8 weights (no int8 kernels remain)."""
    return float_activations(model, [n.name for n in model.graph.node if n.op_type not in _QDQ])


def drop_dead_qdq(model: onnx.ModelProto) -> None:
    """Remove Q/DQ nodes nobody reads any more, then initializers nobody reads."""
    graph = model.graph
    keep_out = {o.name for o in graph.output}
    inner = _subgraph_names(graph)
    while True:
        used = {i for n in graph.node for i in n.input} | keep_out | inner
        dead = [n for n in graph.node if n.op_type in _QDQ and not (set(n.output) & used)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {i for n in graph.node for i in n.input} | keep_out | inner
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)
    names = {o for n in graph.node for o in n.output} | used
    for vi in [v for v in graph.value_info if v.name not in names]:
        graph.value_info.remove(vi)


def compact_names(model: onnx.ModelProto) -> int:
    """Give ORT-generated Q/DQ names short unique ones; returns how many names changed."""
    graph = model.graph
    frozen = _subgraph_names(graph) | {v.name for v in (*graph.input, *graph.output)}
    taken = {n.name for n in graph.node} | {o for n in graph.node for o in n.output}
    taken |= {t.name for t in graph.initializer} | {i for n in graph.node for i in n.input}
    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for i in node.input:
            readers.setdefault(i, set()).add(node.op_type)

    def fresh(prefix: str) -> str:
        k = len(taken)
        while f"{prefix}{k}" in taken:
            k += 1
        taken.add(f"{prefix}{k}")
        return f"{prefix}{k}"

    rename: dict[str, str] = {}
    count = 0
    for node in graph.node:
        if node.op_type not in _QDQ:
            continue
        node.name = fresh("q" if node.op_type == "QuantizeLinear" else "dq")
        count += 1
        for out in node.output:
            if out and out not in frozen:
                rename[out] = fresh("t")
        for k, param in enumerate(node.input[1:3], start=1):
            only_qdq = readers.get(param, set()) <= set(_QDQ)
            if param and param not in frozen and param not in rename and only_qdq:
                rename[param] = fresh("s" if k == 1 else "z")
    for node in graph.node:
        for k, name in enumerate(node.input):
            node.input[k] = rename.get(name, name)
        for k, name in enumerate(node.output):
            node.output[k] = rename.get(name, name)
    for init in graph.initializer:
        init.name = rename.get(init.name, init.name)
    for vi in graph.value_info:
        vi.name = rename.get(vi.name, vi.name)
    return count + len(rename)
