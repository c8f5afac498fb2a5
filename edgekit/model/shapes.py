"""Concrete shapes for models with dynamic dimensions, and sample inputs built from them.

Dynamic dimensions get a value from the user (``--shape x=1,3,640,640``) or a stated default:
1 for the first (batch) dimension, 224 for the spatial dimensions of a 4-D image-like input,
1 elsewhere. Reports say which values were assumed.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgekit.errors import InputError, ModelError
from edgekit.model.loader import graph_inputs

DEFAULT_SPATIAL = 224


def dtype_of(elem_type: int) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return np.dtype(np.float32)


def dtype_name(elem_type: int) -> str:
    """numpy's name for an ONNX element type (float32, int64, int8, bool), as TFLite reports
    use too, so manifests name dtypes one way whatever the runtime."""
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def declared_shape(vi: onnx.ValueInfoProto) -> list[int | str] | None:
    """Shape as written in the model: ints for fixed dims, names (or "?") for dynamic ones."""
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    out: list[int | str] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or "?")
    return out


def parse_shape_options(values: tuple[str, ...] | list[str]) -> dict[str, list[int]]:
    """Parse ``name=1,3,224,224`` options."""
    out: dict[str, list[int]] = {}
    for item in values:
        name, sep, dims = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name] = [int(d) for d in dims.split(",") if d.strip()]
        except ValueError:
            raise InputError(f"bad --shape {item!r}; expected NAME=D1,D2,...") from None
    return out


def resolve_input_shapes(
    model: onnx.ModelProto, overrides: dict[str, list[int]] | None = None
) -> tuple[dict[str, list[int]], list[str]]:
    """Concrete shape for every graph input, and notes naming each assumed dimension."""
    overrides = overrides or {}
    shapes: dict[str, list[int]] = {}
    notes: list[str] = []
    for vi in graph_inputs(model):
        decl = declared_shape(vi) or []
        if vi.name in overrides:
            given = overrides[vi.name]
            if decl and len(given) != len(decl):
                raise InputError(
                    f"--shape {vi.name} has {len(given)} dims, the model declares {len(decl)}"
                )
            shapes[vi.name] = given
            continue
        spatial: tuple[int, ...] = ()
        if len(decl) == 4 and decl[1] in (1, 3):
            spatial = (2, 3)  # NCHW image
        elif len(decl) == 4 and decl[3] in (1, 3):
            spatial = (1, 2)  # NHWC image
        concrete: list[int] = []
        for axis, d in enumerate(decl):
            if isinstance(d, int) and d > 0:
                concrete.append(d)
                continue
            value = DEFAULT_SPATIAL if axis in spatial else 1
            concrete.append(value)
            notes.append(f"{vi.name}[{axis}] ({d}) assumed {value}")
        shapes[vi.name] = concrete
    unknown = set(overrides) - set(shapes)
    if unknown:
        raise InputError(f"--shape names unknown input(s): {', '.join(sorted(unknown))}")
    return shapes, notes


def with_fixed_inputs(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """A copy of the model whose graph inputs have the given concrete shapes."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for vi in fixed.graph.input:
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape
            dims.ClearField("dim")
            for value in shapes[vi.name]:
                dims.dim.add().dim_value = value
    return fixed


def concrete_shapes(
    model: onnx.ModelProto, shapes: dict[str, list[int]]
) -> dict[str, tuple[tuple[int, ...], int]]:
    """(shape, elem_type) of every tensor onnx shape inference can pin down."""
    fixed = with_fixed_inputs(model, shapes)
    try:
        fixed = onnx.shape_inference.infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise ModelError(f"shape inference failed: {exc}") from None
    out: dict[str, tuple[tuple[int, ...], int]] = {}

    def collect(graph: onnx.GraphProto) -> None:
        for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
            tt = vi.type.tensor_type
            if not tt.HasField("shape"):
                continue
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            if all(d >= 0 for d in dims):
                out[vi.name] = (tuple(dims), tt.elem_type)
        for init in graph.initializer:
            out[init.name] = (tuple(init.dims), init.data_type)
        for node in graph.node:
            for attr in node.attribute:
                subs = [attr.g] if attr.HasField("g") else list(attr.graphs)
                for sub in subs:
                    collect(sub)

    collect(fixed.graph)
    return out


def random_feeds(
    model: onnx.ModelProto, shapes: dict[str, list[int]], seed: int = 0
) -> dict[str, np.ndarray]:
    """Deterministic sample inputs: N(0,1) floats, small non-negative ints, random bools."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for vi in graph_inputs(model):
        dtype = dtype_of(vi.type.tensor_type.elem_type)
        shape = shapes[vi.name]
        if dtype.kind == "f":
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feeds[vi.name] = rng.integers(0, 2, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[vi.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise ModelError(f"cannot make sample data for input {vi.name!r} of type {dtype}")
    return feeds
