"""Turn a model, a quantization result and/or a shard plan into a bundle manifest + files."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgekit.model.bundle import FORMAT_VERSION, Manifest, StageEntry, TensorEntry
from edgekit.model.inspect import Report
from edgekit.model.plan import ShardResult


def _entries(specs: list[Any]) -> list[TensorEntry]:
    return [TensorEntry(s.name, s.dtype, s.shape, getattr(s, "bytes", None)) for s in specs]


def single(
    model_file: Path, report: Report, name: str, version: str, **extra: Any
) -> tuple[Manifest, dict[str, bytes | Path]]:
    """A one-stage bundle holding the model file as it is (ONNX or TFLite)."""
    runtime = "litert" if report.format == "tflite" else "onnxruntime"
    rel = f"model{Path(model_file).suffix or '.onnx'}"
    stage = StageEntry(
        0, rel, _entries(report.inputs), _entries(report.outputs),
        mem_bytes=report.parameter_bytes + report.peak_activation_bytes,
    )
    manifest = Manifest(
        FORMAT_VERSION, name, version, runtime, [], [stage],
        _entries(report.inputs), _entries(report.outputs), **extra,
    )
    return manifest, {rel: Path(model_file)}


def sharded(
    result: ShardResult, report: Report, name: str, version: str, **extra: Any
) -> tuple[Manifest, dict[str, bytes | Path]]:
    """A bundle with one ONNX file per pipeline stage and the partition report."""
    payload: dict[str, bytes | Path] = {}
    stages = []
    for st, model in zip(result.stages, result.models, strict=True):
        rel = f"stage_{st.index}.onnx"
        payload[rel] = model.SerializeToString()
        stages.append(
            StageEntry(
                st.index, rel, _entries(st.inputs), _entries(st.outputs), st.mem_bytes,
                round(st.predicted_ms, 4),
            )
        )
    partition = {
        "cost_source": result.cost_source,
        "link_bytes_per_s": result.link_bytes_per_s,
        "stage_cost": "max(compute, send)" if result.overlap else "compute + send",
        "bound_ms": round(result.bound_ms, 4),
        "balance_ratio": round(result.balance_ratio, 4),
        "slowest_ms": round(result.slowest_ms, 4),
        "naive_balance_ratio": round(result.naive_balance_ratio, 4),
        "naive_slowest_ms": round(result.naive_slowest_ms, 4),
        "whole_model_ms": result.whole_ms,
        "cuts": [
            {
                "after_stage": st.index,
                "bytes": sum(t.bytes for t in st.outputs),
                "tensors": [asdict(t) for t in st.outputs],
            }
            for st in result.stages[:-1]
        ],
        "stages": [
            {
                "index": st.index, "nodes": st.nodes, "first_node": st.first_node,
                "last_node": st.last_node, "compute_ms": round(st.compute_ms, 4),
                "transfer_ms": round(st.transfer_ms, 4),
            }
            for st in result.stages
        ],
        "validation": asdict(result.validation),
    }
    manifest = Manifest(
        FORMAT_VERSION, name, version, "onnxruntime", [], stages,
        _entries(report.inputs), _entries(report.outputs), partition=partition, **extra,
    )
    return manifest, payload
