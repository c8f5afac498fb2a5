"""Compare a quantized model with its fp32 original on held-out inputs.

Per output: cosine similarity (over all samples, flattened), max/mean absolute error, and top-1
agreement for classifier-like outputs ([N, classes], or [N, T, classes] of probabilities).
Plus file sizes and the int8/fp32 latency ratio on this machine (median of a few
single-threaded runs, alternating) and, per Pi board, a measured ratio or why there is none
(:mod:`edgekit.model.speed`).

Accuracy is measured on the quantized model *as ONNX defines it*: a session with graph
optimizations off, so every QuantizeLinear/DequantizeLinear runs as written and the layers
between them compute in fp32. With optimizations on, ONNX Runtime fuses Q/DQ pairs into int8
kernels whose arithmetic depends on the CPU: on x86 without AVX-512 VNNI / AVX-VNNI its U8S8
GEMM adds pairs of int8 products into 16 bits with saturation (vpmaddubsw). Measured on
PP-OCR's classifier, same model, same inputs: min cosine 0.98851 with VNNI, 0.97970 on an
AVX2-only CPU (Haswell), 0.98814 on a Pi 4/5 core (Cortex-A72/A76 under qemu); optimizations
off: 0.98838 on all four. The fallback search and the pass/fail verdict used to run the
fused kernels, so the same inputs gave a different plan on another machine (weight-only int8
instead of a few fp32-activation layers). The fused kernels' figure is still reported
(`kernel_min_cosine`) and the CLI warns when it falls short.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.model.speed import BoardSpeed, boards, host_latency

Feeds = dict[str, np.ndarray]


@dataclass
class OutputAccuracy:
    name: str
    cosine: float
    max_abs_error: float
    mean_abs_error: float
    top1_agreement: float | None = None


@dataclass
class Evaluation:
    """What `edgekit quantize` reports (also stored in a bundle's manifest)."""

    fp32_bytes: int
    int8_bytes: int
    size_ratio: float
    outputs: list[OutputAccuracy]
    min_cosine: float
    fp32_ms: float
    int8_ms: float
    speed_ratio: float  # int8 latency / fp32 latency; below 1 means int8 is faster
    samples: int
    data: str  # "images", "files" or "synthetic"
    worst_layers: list[dict[str, Any]] = field(default_factory=list)
    #: lowest output cosine with this host's fused int8 kernels (see the module docstring)
    kernel_min_cosine: float | None = None
    #: int8 vs fp32 on each Pi board: measured, or unmeasured and why (edgekit.model.speed)
    boards: list[BoardSpeed] = field(default_factory=list)


def session(path: Path | str | bytes, threads: int = 1, optimize: bool = True) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def run_all(sess: Any, feeds: Sequence[Feeds]) -> list[list[np.ndarray]]:
    return [sess.run(None, f) for f in feeds]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        # undefined for a zero vector: an all-zero int8 output that matches a near-zero fp32
        # one (e.g. a probability map of an image with nothing in it) counts as agreement
        return 1.0 if np.allclose(a, b, rtol=0.0, atol=1e-4) else 0.0
    return float(np.dot(a, b) / (na * nb))


def _classes_last(out: np.ndarray) -> bool:
    """[N, classes], or [N, T, classes] holding per-step probabilities (rows summing to 1):
    a detector's [N, 4 + classes, anchors] has anchors last, and its argmax means nothing."""
    if out.dtype.kind != "f" or out.ndim not in (2, 3) or out.shape[-1] < 2:
        return False
    return out.ndim == 2 or bool(np.allclose(out.sum(axis=-1), 1.0, atol=1e-3))


def compare_outputs(
    names: Sequence[str], ref: list[list[np.ndarray]], got: list[list[np.ndarray]]
) -> list[OutputAccuracy]:
    out = []
    for k, name in enumerate(names):
        a = np.concatenate([r[k].astype(np.float64).ravel() for r in ref])
        b = np.concatenate([g[k].astype(np.float64).ravel() for g in got])
        diff = np.abs(a - b)
        top1 = None
        first = ref[0][k]
        if _classes_last(first):
            # classifier-like: [N, classes] or per-step classes [N, T, classes] (CTC, tokens)
            agree = [
                np.mean(np.argmax(r[k], axis=-1) == np.argmax(g[k], axis=-1))
                for r, g in zip(ref, got, strict=True)
            ]
            top1 = float(np.mean(agree))
        out.append(
            OutputAccuracy(
                name, cosine(a, b), float(diff.max(initial=0.0)), float(diff.mean()), top1
            )
        )
    return out


class Reference:
    """fp32 outputs on a fixed input set, computed once and compared with many candidates."""

    def __init__(self, fp32_path: Path, feeds: Sequence[Feeds]) -> None:
        sess = session(fp32_path)
        self.names = [o.name for o in sess.get_outputs()]
        self.feeds = list(feeds)
        self.outputs = run_all(sess, self.feeds)

    def min_cosine(self, candidate: Path | bytes) -> float:
        """Lowest per-output cosine of ``candidate`` (as ONNX defines it: no fused int8
        kernels, the same on every CPU) against the fp32 outputs."""
        got = run_all(session(candidate, optimize=False), self.feeds)
        return min(o.cosine for o in compare_outputs(self.names, self.outputs, got))


def evaluate(
    fp32_path: Path, int8_path: Path, feeds: Sequence[Feeds], data: str, repeats: int = 7
) -> Evaluation:
    """Run both models on ``feeds`` and summarise accuracy, size and speed (accuracy as ONNX
    defines the model, speed with this host's fused kernels)."""
    ref_sess, q_sess = session(fp32_path), session(int8_path)
    names = [o.name for o in ref_sess.get_outputs()]
    ref = run_all(ref_sess, feeds)
    outputs = compare_outputs(names, ref, run_all(session(int8_path, optimize=False), feeds))
    kernels = compare_outputs(names, ref, run_all(q_sess, feeds))
    fp32_ms, int8_ms = host_latency(ref_sess, q_sess, feeds[0], repeats)
    fp32_bytes, int8_bytes = Path(fp32_path).stat().st_size, Path(int8_path).stat().st_size
    return Evaluation(
        fp32_bytes=fp32_bytes,
        int8_bytes=int8_bytes,
        size_ratio=int8_bytes / fp32_bytes,
        outputs=outputs,
        min_cosine=min(o.cosine for o in outputs),
        fp32_ms=fp32_ms,
        int8_ms=int8_ms,
        speed_ratio=int8_ms / fp32_ms if fp32_ms > 0 else float("nan"),
        samples=len(feeds),
        data=data,
        kernel_min_cosine=min(o.cosine for o in kernels),
        boards=boards(),
    )


def _exact_options() -> Any:
    """No graph optimizations (Q/DQ as written) and one thread: the ranking the fallback
    search follows must not depend on the CPU or its core count."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


def worst_layers(
    fp32_path: Path, qdq_path: Path, feeds: Sequence[Feeds], work: Path, top: int | None = 5
) -> list[dict[str, Any]]:
    """Layers whose int8 version loses the most accuracy.

    ORT's qdq_loss_debug tooling augments both models to output every intermediate tensor and
    gives each tensor's SQNR (dB) against fp32. Error accumulates along the network, so a
    layer is charged the SQNR it *loses*: its worst input's SQNR minus its output's.
    """
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

    from edgekit.model.calibration import ListReader

    aug_f, aug_q = work / "float_aug.onnx", work / "qdq_aug.onnx"
    dbg.modify_model_output_intermediate_tensors(str(fp32_path), str(aug_f))
    dbg.modify_model_output_intermediate_tensors(str(qdq_path), str(aug_q))
    float_acts = dbg.collect_activations(str(aug_f), ListReader(feeds), _exact_options())
    qdq_acts = dbg.collect_activations(str(aug_q), ListReader(feeds), _exact_options())
    matched = dbg.create_activation_matching(qdq_acts, float_acts)
    sqnr = {
        name: float(e["xmodel_err"])
        for name, e in dbg.compute_activation_error(matched).items()
        if "xmodel_err" in e
    }
    graph = onnx.load(str(fp32_path)).graph
    rows = []
    for node in graph.node:
        outs = [o for o in node.output if o in sqnr]
        if not outs:
            continue
        ins = [sqnr[i] for i in node.input if i in sqnr]
        before = min(ins) if ins else float("inf")
        after = min(sqnr[o] for o in outs)
        loss = (before - after) if ins else 0.0
        rows.append({"node": node.name, "op": node.op_type, "tensor": outs[0],
                     "sqnr_db": round(after, 2), "loss_db": round(loss, 2)})
    rows.sort(key=lambda r: r["loss_db"], reverse=True)
    return rows if top is None else rows[:top]
