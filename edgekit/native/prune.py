"""``edgekit prune``: N:M-prune the large MatMul/Gemm weights of an ONNX model, quantize them
to int8, and replace each layer by the EdgekitSparseLinear custom op; then measure it.

A layer qualifies when its weight is a rank-2 initializer used once, K is a multiple of m,
and it is at least ``min_params`` large. MatMul ``x @ B`` (B [K, N]) and Gemm (transA=0,
alpha=beta=1, optional bias initializer) are handled.
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import ModelError
from edgekit.native.ortops import DOMAIN, OP_TYPE
from edgekit.native.sparse import prune as prune_weight


@dataclass
class LayerReport:
    name: str
    shape: tuple[int, int]  # (N out, K in)
    sparsity: float
    bytes_before: int
    bytes_after: int
    cosine: float  # layer output vs the dense fp32 layer, on random activations
    dense_ms: float  # numpy fp32 matmul, 128 rows
    sparse_ms: float  # our kernel, same rows


@dataclass
class PruneReport:
    model: str
    output: str
    pattern: str
    layers: list[LayerReport] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    size_before: int = 0
    size_after: int = 0
    cosine: float | None = None
    top1_agreement: float | None = None
    dense_ms: float | None = None
    pruned_ms: float | None = None
    variant: str = ""


def _candidates(model, layers: list[str] | None, min_params: int, m: int):
    """(node, weight name, transposed?, bias name) for each layer to prune; skips with reasons."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for i in node.input:
            uses[i] = uses.get(i, 0) + 1
    found, skipped = [], {}
    for idx, node in enumerate(model.graph.node):
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        name = node.name or f"{node.op_type}_{idx}"
        wname = node.input[1]
        wanted = (fnmatch.fnmatch(name, p) or fnmatch.fnmatch(wname, p) for p in layers or [])
        if layers and not any(wanted):
            continue
        if wname not in inits or len(inits[wname].dims) != 2:
            skipped[name] = "weight is not a rank-2 initializer"
            continue
        if uses.get(wname, 0) != 1:
            skipped[name] = "weight is shared with other nodes"
            continue
        trans_b, bias = False, None
        if node.op_type == "Gemm":
            attrs = {a.name: a for a in node.attribute}
            if attrs.get("transA") and attrs["transA"].i:
                skipped[name] = "Gemm with transA=1"
                continue
            if any(k in attrs and abs(attrs[k].f - 1.0) > 0 for k in ("alpha", "beta")):
                skipped[name] = "Gemm with alpha/beta != 1"
                continue
            trans_b = bool(attrs.get("transB") and attrs["transB"].i)
            if len(node.input) > 2 and node.input[2]:
                bias = node.input[2]
                if bias not in inits or uses.get(bias, 0) != 1:
                    skipped[name] = "bias is not a private initializer"
                    continue
        w = numpy_helper.to_array(inits[wname]).astype(np.float32)
        w = w if trans_b else w.T  # -> [N out, K in]
        if w.size < min_params:
            skipped[name] = f"{w.size} weights < {min_params}"
            continue
        if w.shape[1] % m:
            skipped[name] = f"input size {w.shape[1]} is not a multiple of {m}"
            continue
        found.append((node, name, w, bias))
    return found, skipped


def _time_ms(fn, reps: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def input_norms(model, names: list[str], feeds: list[dict]) -> dict[str, np.ndarray]:
    """L2 norm of every feature (last axis) of the tensors ``names``, over all rows of all
    ``feeds``, from the dense model run by plain ONNX Runtime with those tensors as outputs."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph_inputs = {i.name for i in model.graph.input}
    wanted = [t for t in dict.fromkeys(names) if t not in graph_inputs]
    probe = type(model)()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None)
                              for t in wanted if t not in have)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    sums: dict[str, np.ndarray] = {}
    for feed in feeds:
        values = dict(zip(wanted, sess.run(wanted, feed), strict=True)) if wanted else {}
        values.update({t: feed[t] for t in names if t in graph_inputs})
        for t, v in values.items():
            v = np.asarray(v, np.float64).reshape(-1, v.shape[-1])
            sums[t] = sums.get(t, 0.0) + (v * v).sum(axis=0)
    return {t: np.sqrt(v).astype(np.float32) for t, v in sums.items()}


@dataclass(frozen=True)
class Layers:
    """Which MatMul/Gemm layers to prune: names or weight names matching any of ``names``
    (fnmatch patterns; None: every layer), at least ``min_params`` weights each."""

    names: list[str] | None = None
    min_params: int = 16384


def prune_model(path: str | Path, out: str | Path, pattern: tuple[int, int],
                layers: Layers = Layers(), *, calibration: list[dict] | None = None,
                progress=None) -> tuple[PruneReport, list]:
    """Write the pruned model to ``out`` (atomically) and return the per-layer report.

    With ``calibration`` feeds, weights are scored by |w| times the norm of their input over
    those feeds (activation-aware), instead of |w| alone. ``progress(done, total, name)`` is
    called after each layer.
    """
    from onnx import helper

    from edgekit.native import variant

    model = _load(path)
    n, m = pattern
    found, skipped = _candidates(model, layers.names, layers.min_params, m)
    if not found:
        raise ModelError("no MatMul/Gemm layer qualifies for pruning", where=str(path),
                         hint="; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:5]) or None)
    report = PruneReport(str(path), str(out), f"{n}:{m}", skipped=skipped, variant=variant())
    norms = (input_norms(model, [node.input[0] for node, *_ in found], calibration)
             if calibration else {})
    inits = {t.name: t for t in model.graph.initializer}
    rng = np.random.default_rng(0)
    drop: set[str] = set()
    for i, (node, name, w, bias_name) in enumerate(found):
        bias = _bias(inits, bias_name, w.shape[0])
        packed = prune_weight(w, n, m, norms.get(node.input[0]))
        report.layers.append(_measure(name, w, bias, packed, pattern, rng))
        drop.update({node.input[1]} | ({bias_name} if bias_name else set()))
        _replace(model, node, name, packed, bias, pattern)  # node.input[1] is ours after this
        if progress:
            progress(i + 1, len(found), name)
    keep = [t for t in model.graph.initializer if t.name not in drop]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    _save(model, Path(out))
    report.size_before = Path(path).stat().st_size
    report.size_after = Path(out).stat().st_size
    return report, found


def _load(path: str | Path):
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises several types for unreadable files
        raise ModelError(f"cannot read ONNX model ({exc})", where=str(path)) from None


def _bias(inits: dict, name: str | None, rows: int) -> np.ndarray:
    from onnx import numpy_helper

    if not name:
        return np.zeros(rows, np.float32)
    return numpy_helper.to_array(inits[name]).astype(np.float32).reshape(-1)


def _measure(name: str, w: np.ndarray, bias: np.ndarray, packed, pattern: tuple[int, int],
             rng: np.random.Generator) -> LayerReport:
    """The pruned layer against the dense one on random activations: accuracy, size, time."""
    from edgekit.native.linear import Int8Linear

    n, m = pattern
    layer = Int8Linear(packed, bias)
    x = rng.standard_normal((128, w.shape[1])).astype(np.float32)
    ref = x @ w.T + bias
    got = layer(x)
    cos = float((ref * got).sum() / (np.linalg.norm(ref) * np.linalg.norm(got) + 1e-30))
    after = packed.vals.nbytes + packed.pos.nbytes + packed.wscale.nbytes + bias.nbytes
    return LayerReport(
        name, tuple(w.shape), 1.0 - n / m, w.nbytes + bias.nbytes, after, round(cos, 6),
        round(_time_ms(lambda: x @ w.T), 4), round(_time_ms(lambda: layer(x)), 4))


def _replace(model, node, name: str, packed, bias: np.ndarray, pattern: tuple[int, int]) -> None:
    """Turn ``node`` into our custom op reading the packed weight as new initializers."""
    from onnx import helper, numpy_helper

    prefix = f"{node.output[0]}_ek"
    extra = [numpy_helper.from_array(packed.vals, prefix + "_vals"),
             numpy_helper.from_array(packed.pos, prefix + "_pos"),
             numpy_helper.from_array(packed.wscale, prefix + "_wscale"),
             numpy_helper.from_array(bias, prefix + "_bias")]
    model.graph.initializer.extend(extra)
    n, m = pattern
    new = helper.make_node(OP_TYPE, [node.input[0]] + [t.name for t in extra],
                           list(node.output), name=name, domain=DOMAIN, n=n, m=m)
    node.CopyFrom(new)


def _save(model, out: Path) -> None:
    """Write ``out`` atomically: a reader never sees half a model."""
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
