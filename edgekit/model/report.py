"""What `edgekit inspect` reports about a model, whatever its format: the `Report` and its
`TensorSpec`s. Kept apart from the readers (inspect.py for ONNX, tflite.py for TFLite) so each
reader builds one without importing the other."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TensorSpec:
    """One input or output: dims are ints, or strings for dynamic ones."""

    name: str
    dtype: str
    shape: list[int | str] | None
    dynamic_dims: list[int] = field(default_factory=list)


@dataclass
class Report:
    """Everything `edgekit inspect` prints."""

    path: str
    format: str
    runtime: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int | None
    nodes: int
    op_counts: dict[str, int]
    parameters: int
    parameter_bytes: int
    macs_total: int
    top_nodes: list[dict[str, object]]
    peak_activation_bytes: int
    quantization: str  # "none", "int8 (QDQ)", "int8 weights only (QDQ, fp32 activations)", ...
    assumed: list[str] = field(default_factory=list)
    file_bytes: int = 0
    #: how the runtime runs it where that is not plain (a TFLite custom op a delegate provides)
    runtime_notes: list[str] = field(default_factory=list)
