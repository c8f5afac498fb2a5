"""Triton's model endpoints that Triton tools read, built from what edgekit serves.

`GET /v2/models/{m}/config` (model configuration as Triton prints it in JSON),
`GET /v2/models[/{m}[/versions/{v}]]/stats` (the statistics extension) and
`POST /v2/repository/index` (the model repository extension, read-only: models are given on
the command line, so load/unload are not offered). Only what edgekit measures is reported:
no compute_input/compute_output or batch_stats, which a Triton client reads as absent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgekit.serve.tensors import TensorSpec
from edgekit.serve.tritonstats import TritonCounters

if TYPE_CHECKING:
    from edgekit.serve.placement import ModelInfo

#: edgekit runtime -> (Triton platform, Triton backend); LiteRT has no Triton platform name
_PLATFORM = {"onnxruntime": ("onnxruntime_onnx", "onnxruntime"), "litert": ("", "litert")}


def _data_type(datatype: str) -> str:
    # Triton's config enum spells BYTES as TYPE_STRING; every other datatype is TYPE_<name>
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _max_batch(info: ModelInfo) -> int:
    """Triton's max_batch_size: > 0 only where the leading dimension is a batch (then `dims`
    leave it out); a batchable model without --batch accepts any leading size: 0, full dims."""
    return info.spec.max_batch if info.batchable and info.spec.max_batch > 1 else 0


def _tensor(t: TensorSpec, batched: bool) -> dict[str, Any]:
    dims = list(t.shape[1:] if batched else t.shape)
    return {"name": t.name, "data_type": _data_type(t.datatype), "dims": dims}


def model_config(info: ModelInfo) -> dict[str, Any]:
    platform, backend = _PLATFORM.get(info.spec.runtime, ("", info.spec.runtime))
    max_batch = _max_batch(info)
    config: dict[str, Any] = {
        "name": info.spec.name,
        "platform": platform,
        "backend": backend,
        "max_batch_size": max_batch,
        "input": [_tensor(t, max_batch > 0) for t in info.inputs],
        "output": [_tensor(t, max_batch > 0) for t in info.outputs],
    }
    if max_batch > 0:
        delay_us = int(info.spec.max_wait_ms * 1000)
        config["dynamic_batching"] = {"max_queue_delay_microseconds": delay_us}
    return config


def model_stats(info: ModelInfo, counters: TritonCounters) -> dict[str, Any]:
    name, version = info.spec.name, info.spec.version

    def value(family: str) -> int:
        return int(counters.get(family, name, version))

    execs = value("nv_inference_exec_count")
    return {
        "name": name,
        "version": version,
        "last_inference": counters.last_inference_ms(name, version),
        "inference_count": value("nv_inference_count"),
        "execution_count": execs,
        "inference_stats": {
            "success": {"count": value("nv_inference_request_success"),
                        "ns": value("nv_inference_request_duration_us") * 1000},
            "fail": {"count": value("nv_inference_request_failure"),
                     "ns": int(counters.failure_us(name, version) * 1000)},
            "queue": {"count": execs, "ns": value("nv_inference_queue_duration_us") * 1000},
            "compute_infer": {"count": execs,
                              "ns": value("nv_inference_compute_infer_duration_us") * 1000},
        },
    }


def repository_entry(info: ModelInfo, usable: int) -> dict[str, Any]:
    entry = {"name": info.spec.name, "version": info.spec.version,
             "state": "READY" if usable > 0 else "UNAVAILABLE"}
    if usable == 0:
        entry["reason"] = "no live replica"
    return entry
