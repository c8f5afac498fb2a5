"""Per-node cost of a model: measured with ONNX Runtime's profiler, or estimated from MACs.

Profiling runs with graph optimisations off so every event maps to exactly one node of the
file (fusion would merge names); the per-node times are then scaled so that they add up to
the optimised whole-model latency measured on the same inputs. Inner nodes of If/Loop bodies
are charged to the control-flow node that owns them.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgekit.model.macs import NodeCost

#: Fallback throughput when no profile is taken: about a Pi 4 core running fp32 MLAS/XNNPACK
#: (47 GOPS int8 on 4 cores, pi-facts.md; fp32 per core is roughly a tenth).
FALLBACK_MACS_PER_S = 2.5e9
FALLBACK_ELEMENTS_PER_S = 5e8  # element-wise ops are memory bound
FALLBACK_NODE_OVERHEAD_MS = 0.005


@dataclass(frozen=True)
class NodeTimes:
    ms: list[float]  # per node, file order
    source: str  # "profile" or "macs"
    whole_ms: float | None = None


def from_macs(costs: list[NodeCost]) -> NodeTimes:
    ms = [
        c.macs / FALLBACK_MACS_PER_S * 1000.0
        + c.elements / FALLBACK_ELEMENTS_PER_S * 1000.0
        + FALLBACK_NODE_OVERHEAD_MS
        for c in costs
    ]
    return NodeTimes(ms, "macs")


def measure(model: onnx.ModelProto, feeds: dict[str, np.ndarray], runs: int = 5) -> NodeTimes:
    """Profile each top-level node (names must be unique: see graph.ensure_node_names)."""
    import onnxruntime as ort

    names = [n.name for n in model.graph.node]
    data = model.SerializeToString()
    with tempfile.TemporaryDirectory(prefix="edgekit-prof-") as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "prof")
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        sess.run(None, feeds)  # warm-up, discarded below
        for _ in range(runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[str, list[float]] = {}
    for ev in events:
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        per_node.setdefault(ev["name"][: -len("_kernel_time")], []).append(ev["dur"] / 1000.0)
    ms = []
    for name in names:
        samples = per_node.get(name, [])
        # the first sample is the warm-up run; inner body nodes have other names
        kept = samples[1:] if len(samples) > runs else samples
        ms.append(statistics.median(kept) if kept else 0.0)
    whole = _optimised_ms(data, feeds, runs)
    total = sum(ms)
    if total > 0:
        ms = [m * whole / total for m in ms]
    return NodeTimes(ms, "profile", whole)


def _optimised_ms(data: bytes, feeds: dict[str, np.ndarray], runs: int) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    sess.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)
