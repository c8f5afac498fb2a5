"""Load one model (or one pipeline stage) into ONNX Runtime or LiteRT and run it.

This is what a worker on a node holds. Sessions are created from model bytes, so the head can
ship the model through Ray's object store and nodes need no shared filesystem.
"""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np

from edgekit.errors import ModelError
from edgekit.serve.tensors import DATATYPES, TensorSpec, dim, oip_from_numpy, oip_from_ort


class Runtime(Protocol):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def check_datatypes(inputs: list[TensorSpec], outputs: list[TensorSpec], where: str,
                    refused: frozenset[str] = frozenset()) -> None:
    """Refuse at load a model with a tensor the protocol (or this runtime) cannot carry, naming
    the tensor: a model that reports ready must never refuse every request afterwards."""
    for kind, specs in (("input", inputs), ("output", outputs)):
        for s in specs:
            if s.datatype not in DATATYPES or s.datatype in refused:
                raise ModelError(
                    f"{kind} '{s.name}' has type {s.datatype}, which edgekit cannot serve "
                    f"with this runtime (served: {', '.join(sorted(DATATYPES - refused))})",
                    where=where,
                )


def ort_session_options(threads: int):
    """Session options for a board: intra-op threads = its cores, all graph optimisations.

    When the native engineer's custom-op library is importable its options are the base, so
    pruned/sparse models load without the user registering anything.
    """
    import onnxruntime as ort

    try:
        from edgekit.native import ortops  # type: ignore[attr-defined]

        opts = ortops.session_options()
    except ImportError:
        opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


class OrtRuntime:
    def __init__(self, model: bytes, threads: int, where: str):
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(
                model, ort_session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types for bad models
            raise ModelError(f"ONNX Runtime cannot load the model: {exc}", where=where) from exc
        self.inputs = [
            TensorSpec(i.name, oip_from_ort(i.type), tuple(dim(d) for d in i.shape))
            for i in self.session.get_inputs()
        ]
        self.outputs = [
            TensorSpec(o.name, oip_from_ort(o.type), tuple(dim(d) for d in o.shape))
            for o in self.session.get_outputs()
        ]
        check_datatypes(self.inputs, self.outputs, where)
        self._names = [o.name for o in self.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._names, self.session.run(self._names, feeds), strict=True))


class LiteRtRuntime:
    """TFLite through ai-edge-litert's Interpreter (XNNPACK delegate is its CPU default)."""

    def __init__(self, model: bytes, threads: int, where: str):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interp = Interpreter(model_content=model, num_threads=max(1, threads))
            self.interp.allocate_tensors()
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for bad models
            raise ModelError(f"LiteRT cannot load the model: {exc}", where=where) from exc
        self._in = self.interp.get_input_details()
        self._out = self.interp.get_output_details()
        self.inputs = [self._spec(d) for d in self._in]
        self.outputs = [self._spec(d) for d in self._out]
        # string tensors: LiteRT's interpreter takes bytes, edgekit's BYTES are ORT's str;
        # untested here (no .tflite with a string tensor), so refused at load, never at run
        check_datatypes(self.inputs, self.outputs, where, frozenset({"BYTES"}))

    @staticmethod
    def _spec(detail: dict) -> TensorSpec:
        sig = detail.get("shape_signature")
        shape = sig if sig is not None and len(sig) else detail["shape"]
        return TensorSpec(
            detail["name"],
            oip_from_numpy(np.dtype(detail["dtype"])),
            tuple(dim(int(d)) for d in shape),
        )

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for d in self._in:
            arr = feeds[d["name"]]
            if tuple(arr.shape) != tuple(d["shape"]):
                self.interp.resize_tensor_input(d["index"], arr.shape)
                self.interp.allocate_tensors()
                self._in = self.interp.get_input_details()
                self._out = self.interp.get_output_details()
            self.interp.set_tensor(d["index"], arr)
        self.interp.invoke()
        return {d["name"]: self.interp.get_tensor(d["index"]).copy() for d in self._out}


def open_runtime(kind: str, model: bytes, threads: int, where: str) -> Runtime:
    """A runtime of `kind` ("onnxruntime" or "litert") for the model bytes."""
    if kind == "onnxruntime":
        return OrtRuntime(model, threads, where)
    if kind == "litert":
        return LiteRtRuntime(model, threads, where)
    raise ModelError(f"unknown runtime '{kind}' (expected onnxruntime or litert)", where=where)


def timed_run(
    runtime: Runtime, feeds: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], float]:
    """Outputs and the compute time in milliseconds."""
    start = time.perf_counter()
    out = runtime.run(feeds)
    return out, (time.perf_counter() - start) * 1000.0
