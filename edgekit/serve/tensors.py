"""Tensor descriptions shared by the runtimes and the protocol codec on the server.

The Open Inference Protocol names datatypes ("FP32", "INT64", ...); ONNX Runtime names them
"tensor(float)"; numpy has dtypes. The OIP <-> numpy table is edgekit.oipwire's (the client
uses it too); this module adds ONNX Runtime's names and the `TensorSpec` a model's inputs and
outputs are checked against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgekit.oipwire import DATATYPES, NUMPY_TO_OIP, OIP_TO_NUMPY, oip_from_numpy

#: serve's modules import the datatype table from here, next to ONNX Runtime's names
__all__ = ["DATATYPES", "NUMPY_TO_OIP", "OIP_TO_NUMPY", "TensorSpec", "dim", "oip_from_numpy",
           "oip_from_ort"]

_ORT_TO_OIP = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def oip_from_ort(ort_type: str) -> str:
    """OIP datatype of an ONNX Runtime type string (e.g. 'tensor(float)' -> 'FP32')."""
    return _ORT_TO_OIP.get(ort_type, ort_type)


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the protocol shows it (-1 marks a variable dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_json(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def check(self, array: np.ndarray) -> str | None:
        """Why `array` does not fit this input, or None when it does."""
        got = oip_from_numpy(array.dtype)
        if got != self.datatype:
            return f"input '{self.name}': expected datatype {self.datatype}, got {got}"
        return self.check_shape(array.shape)

    def check_shape(self, shape: tuple[int, ...]) -> str | None:
        """Why a tensor of `shape` does not fit this input (checked before it is built)."""
        if len(shape) != len(self.shape) or any(
            want not in (-1, have) for want, have in zip(self.shape, shape, strict=False)
        ):
            return f"input '{self.name}': expected shape {list(self.shape)}, got {list(shape)}"
        return None

    @property
    def fixed_bytes(self) -> int | None:
        """Bytes of a tensor of this input when its shape has no variable dimension."""
        if any(d < 0 for d in self.shape):
            return None
        dtype = OIP_TO_NUMPY.get(self.datatype)
        return None if dtype is None else math.prod(self.shape) * dtype.itemsize

def dim(value: object) -> int:
    """A runtime-reported dimension as an int (symbolic names and None become -1)."""
    return value if isinstance(value, int) and value >= 0 else -1
