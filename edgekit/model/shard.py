"""Cut an ONNX model into pipeline stages, and prove the cut right by running it.

We build stage graphs ourselves instead of using ``onnx.utils.extract_model``, which follows
only top-level node inputs (so it drops outer-scope values read inside If/Loop/Scan bodies),
needs shapes for every boundary tensor and never checks that a cut is complete. Here a
stage's inputs are exactly the tensors alive across its start cut (skip connections and
reused graph inputs included, relayed through middle stages), its outputs those alive across
its end cut, and it carries its own copy of every initializer it reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from edgekit.errors import ModelError
from edgekit.model import graph as g
from edgekit.model.evaluate import session
from edgekit.model.partition import Problem
from edgekit.model.shapes import dtype_name, dtype_of

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: list[int | str]  # strings are dynamic dimensions
    bytes: int  # per request, measured on the sample inputs


@dataclass
class Prepared:
    """A model normalised for cutting, with what a probe run revealed."""

    model: onnx.ModelProto
    live: g.Liveness
    observed: dict[str, np.ndarray] = field(repr=False)
    types: dict[str, onnx.ValueInfoProto] = field(repr=False)

    @property
    def nodes(self) -> list[onnx.NodeProto]:
        return [self.model.graph.node[i] for i in self.live.order]


def prepare(model: onnx.ModelProto, feeds: Feeds) -> Prepared:
    """Normalise (Constant nodes to initializers, unique names) and run once, keeping every
    top-level tensor so crossing sizes are measured rather than guessed."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    g.constants_to_initializers(work)
    g.ensure_node_names(work)
    live = g.liveness(work)
    probe = onnx.ModelProto()
    probe.CopyFrom(work)
    declared = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for out in node.output:
            if out and out not in declared:
                probe.graph.output.append(onnx.ValueInfoProto(name=out))
                declared.add(out)
    try:
        sess = session(probe.SerializeToString(), optimize=False)
        values = sess.run(None, feeds)
    except Exception as exc:
        raise ModelError(f"the model does not run on the sample inputs: {exc}") from None
    observed = dict(zip([o.name for o in sess.get_outputs()], values, strict=True))
    observed.update(feeds)
    return Prepared(work, live, observed, g.value_infos(work))


def problem(prep: Prepared, node_ms: Sequence[float]) -> Problem:
    """Per-position facts for the partitioner (node_ms in file order)."""
    nodes = prep.nodes
    n = len(nodes)
    inits = {i.name: i for i in prep.model.graph.initializer}
    weight_bytes = {
        name: int(np.prod(t.dims)) * dtype_of(t.data_type).itemsize for name, t in inits.items()
    }
    size = {t: int(np.asarray(v).nbytes) for t, v in prep.observed.items()}
    cut_bytes = [0] * (n + 1)
    live_diff = np.zeros(n + 2, dtype=np.int64)
    for t, p in prep.live.produced.items():
        end = prep.live.last_use.get(t)
        if end is None:
            continue
        b = size.get(t, 0)
        for c in range(max(p + 1, 0), end + 1):
            cut_bytes[c] += b
        live_diff[max(p, 0)] += b
        live_diff[min(end, n - 1) + 1] -= b
    return Problem(
        compute_ms=[node_ms[i] for i in prep.live.order],
        cut_bytes=cut_bytes,
        node_weights=[frozenset(g.initializers_used([nd], set(inits))) for nd in nodes],
        weight_bytes=weight_bytes,
        live_bytes=np.cumsum(live_diff)[:n].tolist(),
    )


def tensor_info(prep: Prepared, name: str) -> TensorInfo:
    value = np.asarray(prep.observed[name])
    return TensorInfo(name, dtype_name(_elem_type(prep, name)), _shape(prep, name), value.nbytes)


def _elem_type(prep: Prepared, name: str) -> int:
    vi = prep.types.get(name)
    if vi is not None and vi.type.tensor_type.elem_type:
        return vi.type.tensor_type.elem_type
    return helper.np_dtype_to_tensor_dtype(np.asarray(prep.observed[name]).dtype)


def _shape(prep: Prepared, name: str) -> list[int | str]:
    """Inferred shape if complete (keeps named dynamic dims), else the observed rank with
    every dimension left dynamic so that no batch or length gets frozen."""
    rank = np.asarray(prep.observed[name]).ndim
    vi = prep.types.get(name)
    if vi is not None and vi.type.tensor_type.HasField("shape"):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == rank:
            return [
                int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0
                else (d.dim_param or f"{name}_d{i}")
                for i, d in enumerate(dims)
            ]
    return [f"{name}_d{i}" for i in range(rank)]


def _value_info(prep: Prepared, name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, _elem_type(prep, name), _shape(prep, name))


def stage_io(prep: Prepared, start: int, end: int) -> tuple[list[str], list[str]]:
    """Tensor names a stage takes and gives, in a stable order."""
    order_key = {name: i for i, name in enumerate(i.name for i in prep.model.graph.input)}

    def key(t: str) -> tuple[int, int]:
        return (prep.live.produced[t], order_key.get(t, 0))

    inputs = sorted(prep.live.crossing(start), key=key)
    outputs = sorted(prep.live.crossing(end), key=key)
    if end == len(prep.live.order):
        outputs = [o.name for o in prep.model.graph.output]
    return inputs, outputs


def extract_stage(prep: Prepared, start: int, end: int, name: str) -> onnx.ModelProto:
    """A standalone model running positions ``[start, end)`` of the topological order."""
    src = prep.model
    nodes = prep.nodes[start:end]
    inputs, outputs = stage_io(prep, start, end)
    init_names = {i.name for i in src.graph.initializer}
    needed = g.initializers_used(nodes, init_names)
    last = end == len(prep.live.order)
    out_vis = (
        [o for o in src.graph.output] if last else [_value_info(prep, t) for t in outputs]
    )
    in_vis = []
    declared_in = {i.name: i for i in src.graph.input}
    for t in inputs:
        in_vis.append(declared_in[t] if t in declared_in else _value_info(prep, t))
    internal = {o for nd in nodes for o in nd.output} - set(outputs)
    graph = helper.make_graph(
        nodes,
        name,
        in_vis,
        out_vis,
        initializer=[i for i in src.graph.initializer if i.name in needed],
        value_info=[vi for vi in src.graph.value_info if vi.name in internal],
    )
    stage = helper.make_model(
        graph,
        opset_imports=list(src.opset_import),
        producer_name="edgekit",
        functions=list(src.functions),
    )
    stage.ir_version = src.ir_version  # never the IR 14 onnx 1.23 stamps (ORT 1.31 max 13)
    return stage


@dataclass
class Validation:
    exact: bool
    max_abs_diff: float
    tolerance: float
    samples: int


def chain(stages: Sequence[onnx.ModelProto], feeds: Feeds) -> dict[str, np.ndarray]:
    """Run stages one after another, each taking its inputs from what came before."""
    pool = dict(feeds)
    for model in stages:
        sess = session(model.SerializeToString(), optimize=False)
        names = [i.name for i in sess.get_inputs()]
        values = sess.run(None, {n: pool[n] for n in names})
        pool.update(zip([o.name for o in sess.get_outputs()], values, strict=True))
    return pool


def validate(
    whole: onnx.ModelProto,
    stages: Sequence[onnx.ModelProto],
    samples: Sequence[Feeds],
    tolerance: float = 1e-5,
) -> Validation:
    """Chained stages must reproduce the whole model; raises ``ModelError`` otherwise.

    Both sides run single-threaded with graph optimisations off, where ONNX Runtime's CPU
    kernels are deterministic: fp32 results are then expected to match bit for bit; the
    tolerance (relative to each output's magnitude) covers anything else.
    """
    ref = session(whole.SerializeToString(), optimize=False)
    names = [o.name for o in ref.get_outputs()]
    exact, worst = True, 0.0
    for feeds in samples:
        expected = dict(zip(names, ref.run(None, feeds), strict=True))
        got = chain(stages, feeds)
        for name in names:
            a, b = np.asarray(expected[name]), np.asarray(got[name])
            if a.shape != b.shape or a.dtype != b.dtype:
                raise ModelError(
                    f"stage chain output {name!r} is {b.dtype}{list(b.shape)}, "
                    f"whole model gives {a.dtype}{list(a.shape)}"
                )
            if not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
                exact = False
                diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
                scale = float(np.max(np.abs(a.astype(np.float64)), initial=1.0))
                worst = max(worst, diff)
                if diff > tolerance * scale:
                    raise ModelError(
                        f"chained stages differ from the whole model on output {name!r}: "
                        f"max |diff| {diff:.3g} > tolerance {tolerance:g} x {scale:.3g}"
                    )
    return Validation(exact, worst, tolerance, len(samples))
