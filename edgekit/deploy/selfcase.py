"""Host side of deploy's self-test: the fixed input, the reference outputs and the tolerance.

The input is derived from the bundle alone, so every host makes the same one: the first
stage's inputs as the runtime reports them (edgekit.serve.runtime TensorSpecs), dynamic
dimensions filled as edgekit.model.shapes does (1 for the batch, the bundle's preprocess size
or 224 for the spatial dimensions of an image-like 4-D input, 1 elsewhere), values from a
generator seeded by the bundle version (N(0,1) floats, 8-bit integers over their whole range,
other integers and bools 0/1). The host runs the same stage files with the same runtime code
a worker uses (one thread); stage k's input is what the host's stages before it produced, so
every node of a pipeline is tested on realistic activations.

Tolerance (edgekit.node.agreement applies it): see `tolerance`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ModelError
from edgekit.model.bundle import Manifest
from edgekit.node.agreement import Tolerance
from edgekit.node.selftest import Case, StageCase
from edgekit.serve.tensors import OIP_TO_NUMPY, TensorSpec

DEFAULT_SPATIAL = 224  # as edgekit.model.shapes (not imported: it pulls in onnx)

#: a float model: the node's runtime (another CPU, other SIMD kernels, another summation
#: order) may differ from the host's by rounding only: 0.1 % of the output's largest value
FP_RTOL, FP_ATOL, FP_MIN_COSINE = 1e-3, 1e-4, 0.9999
#: a quantized model: int8 kernels of another CPU may requantize a value one step off, and
#: that step travels through the later layers; 5 % of the output's largest value
INT8_RTOL = 0.05
#: edgekit quantize's acceptance floor (QuantizeOptions.min_cosine): int8 vs fp32
INT8_ACCEPT_COSINE = 0.99


def tolerance(manifest: Manifest, quantized: bool) -> Tolerance:
    """How far a node's answer may be from the host's.

    A float model: within FP_ATOL + FP_RTOL x max|host| and cosine >= FP_MIN_COSINE.
    A quantized model (the bundle's quantization report, or int8 operators in the file): two
    int8 implementations that each stay within the report's accuracy of the fp32 model are
    within twice its error of each other (triangle inequality), so: max |node - host| within
    the larger of 2 x the report's max_abs_error of that output and INT8_RTOL x max|host|,
    and cosine >= cos(2 acos(c)) = 2c^2 - 1, where c is the report's min_cosine, at most
    INT8_ACCEPT_COSINE (the floor edgekit accepts int8 at; 0.99 gives 0.9602).
    """
    q = manifest.quantization or {}
    if not q and not quantized:
        return Tolerance(FP_RTOL, FP_ATOL, FP_MIN_COSINE,
                         f"float model: |node - host| <= {FP_ATOL:g} + {FP_RTOL:g} x max|host|, "
                         f"cosine >= {FP_MIN_COSINE}")
    ev = q.get("evaluation") or {}
    c = min(float(ev.get("min_cosine", INT8_ACCEPT_COSINE)), INT8_ACCEPT_COSINE)
    floor = max(2 * c * c - 1, 0.0)
    max_abs = {str(o["name"]): 2 * float(o["max_abs_error"]) + FP_ATOL
               for o in ev.get("outputs", []) if "name" in o and "max_abs_error" in o}
    why = "the bundle's quantization report" if ev else "int8 operators (no report)"
    return Tolerance(INT8_RTOL, FP_ATOL, floor,
                     f"quantized model ({why}): |node - host| <= max(2 x int8 error, "
                     f"{FP_ATOL:g} + {INT8_RTOL:g} x max|host|), cosine >= {floor:.4f}", max_abs)


def is_quantized(path: Path, runtime: str) -> bool:
    """Does the stage file compute in int8 (or hold int8/fp16 weights)?"""
    if runtime == "litert":
        from edgekit.model.tflite import inspect_tflite

        return str(inspect_tflite(path).quantization) != "none"
    import onnx

    from edgekit.model.inspect import quantization_kind

    return quantization_kind(onnx.load(str(path), load_external_data=False)) != "none"


def seed_of(version: str) -> int:
    """The input generator's seed: the same bundle gives the same input on every host."""
    import hashlib

    return int.from_bytes(hashlib.sha256(version.encode()).digest()[:8], "little")


def input_shape(spec: TensorSpec, preprocess: dict[str, Any] | None) -> list[int]:
    """Concrete dimensions for one input (dynamic ones filled as the module doc says)."""
    shape = list(spec.shape)
    spatial: tuple[int, ...] = ()
    if len(shape) == 4 and shape[1] in (1, 3):
        spatial = (2, 3)  # NCHW image
    elif len(shape) == 4 and shape[3] in (1, 3):
        spatial = (1, 2)  # NHWC image
    pre = preprocess or {}
    size = pre.get("size") if pre.get("input") in (None, spec.name) else None
    if not (isinstance(size, list | tuple) and len(size) == 2):
        size = [DEFAULT_SPATIAL, DEFAULT_SPATIAL]
    return [d if d > 0 else int(size[spatial.index(axis)]) if axis in spatial else 1
            for axis, d in enumerate(shape)]


def make_inputs(specs: list[TensorSpec], preprocess: dict[str, Any] | None,
                seed: int) -> dict[str, np.ndarray]:
    """The self-test's input tensors for a model (or first stage) with these inputs."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        dtype = OIP_TO_NUMPY.get(spec.datatype)
        if dtype is None:
            raise ModelError(f"cannot make self-test data of type {spec.datatype}",
                             where=f"input {spec.name!r}")
        shape = input_shape(spec, preprocess)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu" and dtype.itemsize == 1:  # quantized data: its whole range
            info = np.iinfo(dtype)
            feeds[spec.name] = rng.integers(info.min, info.max + 1, size=shape).astype(dtype)
        else:  # ids, masks, flags: 0/1 is valid for every vocabulary and table size
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def reference(folder: Path, manifest: Manifest, version: str) -> list[StageCase]:
    """Run every stage on the host, chained: each stage's inputs and the host's outputs."""
    from edgekit.serve.runtime import open_runtime

    digests = {f.path: f.sha256 for f in manifest.files}
    carry: dict[str, np.ndarray] = {}
    out: list[StageCase] = []
    for st in manifest.stages:
        where = f"{folder / st.file} (host reference)"
        rt = open_runtime(manifest.runtime, (folder / st.file).read_bytes(), 1, where)
        if not out:
            carry = make_inputs(rt.inputs, manifest.preprocess, seed_of(version))
        names = [t.name for t in rt.inputs]
        missing = [n for n in names if n not in carry]
        if missing:
            raise ModelError(f"stage {st.index} needs {missing}, which no earlier stage makes",
                             where=str(folder / st.file))
        feeds = {n: carry[n] for n in names}
        try:
            outputs = rt.run(feeds)
        except Exception as exc:  # the host's own runtime refuses the self-test input
            raise ModelError(f"the host cannot run stage {st.index} on the self-test input "
                             f"({ {n: list(a.shape) for n, a in feeds.items()} }): {exc}",
                             where=str(folder / st.file)) from exc
        carry.update(outputs)
        out.append(StageCase(st.index, st.file, digests.get(st.file, ""), feeds, outputs))
    return out


def case_for(app: str, version: str, manifest: Manifest, refs: list[StageCase],
             tol: Tolerance, stages: list[int]) -> Case:
    """What one node is sent: the stages it serves (by index) of the host's reference."""
    return Case(app, version, manifest.runtime, tol, [refs[i] for i in stages],
                sharded=len(manifest.stages) > 1)

