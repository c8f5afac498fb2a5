"""Calibration and evaluation inputs: image folders with declared preprocessing, .npy/.npz
files, or synthetic data (accuracy then unknown, and we say so loudly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader

from edgekit.errors import InputError
from edgekit.model.loader import graph_inputs
from edgekit.model.shapes import declared_shape, dtype_of, random_feeds

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
Feeds = dict[str, np.ndarray]


@dataclass
class Preprocess:
    """How raw RGB images become the model's input tensor (recorded in bundles)."""

    size: tuple[int, int] = (224, 224)  # height, width
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)  # subtracted after scaling to [0, 1]
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str = "nchw"  # or "nhwc"
    channels: str = "rgb"  # or "bgr"
    scale: float = 1.0 / 255.0
    dtype: str = "float32"
    input: str | None = None  # the model input it feeds (None: the only image input)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB -> a batch-of-one tensor."""
        from PIL import Image

        height, width = self.size
        img = Image.fromarray(np.ascontiguousarray(rgb[..., :3])).convert("RGB")
        arr = np.asarray(img.resize((width, height), Image.BILINEAR), dtype=np.float32)
        if self.channels == "bgr":
            arr = arr[..., ::-1]
        arr = (arr * self.scale - np.asarray(self.mean, np.float32)) / np.asarray(
            self.std, np.float32
        )
        if self.layout == "nchw":
            arr = arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr[None].astype(self.dtype))


def image_input(model: onnx.ModelProto, pre: Preprocess) -> str:
    ins = graph_inputs(model)
    if pre.input:
        if pre.input not in {i.name for i in ins}:
            raise InputError(f"model has no input named {pre.input!r}")
        return pre.input
    if len(ins) != 1:
        names = ", ".join(i.name for i in ins)
        raise InputError(
            f"model has {len(ins)} inputs ({names}); images can feed only a single-input model",
            hint="use .npz calibration files keyed by input name",
        )
    return ins[0].name


def load_folder(folder: Path, model: onnx.ModelProto, pre: Preprocess) -> list[Feeds]:
    """One feed dict per file in ``folder`` (images, .npy or .npz), shape-checked."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("calibration folder does not exist", where=str(folder))
    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | {".npy", ".npz"}
    )
    if not files:
        raise InputError(
            "calibration folder has no images, .npy or .npz files", where=str(folder)
        )
    feeds: list[Feeds] = []
    for file in files:
        suffix = file.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            from PIL import Image, UnidentifiedImageError

            try:
                rgb = np.asarray(Image.open(file).convert("RGB"))
            except (UnidentifiedImageError, OSError) as exc:
                raise InputError(f"cannot read image: {exc}", where=str(file)) from None
            feeds.append({image_input(model, pre): pre.apply(rgb)})
        elif suffix == ".npy":
            feeds.append({image_input(model, pre): _load_npy(file)})
        else:
            with np.load(file) as npz:
                feeds.append({k: npz[k] for k in npz.files})
        check_feeds(model, feeds[-1], str(file))
    return feeds


def _load_npy(file: Path) -> np.ndarray:
    try:
        return np.load(file, allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"not a numeric .npy array: {exc}", where=str(file)) from None


def check_feeds(model: onnx.ModelProto, feeds: Feeds, where: str) -> None:
    """Refuse data whose names, rank, fixed dimensions or dtype kind do not fit the model."""
    inputs = {vi.name: vi for vi in graph_inputs(model)}
    missing = set(inputs) - set(feeds)
    if missing:
        raise InputError(f"missing input(s) {', '.join(sorted(missing))}", where=where)
    for name, arr in feeds.items():
        if name not in inputs:
            raise InputError(f"model has no input named {name!r}", where=where)
        vi = inputs[name]
        decl = declared_shape(vi)
        if decl is not None:
            if arr.ndim != len(decl):
                raise InputError(
                    f"input {name!r} has shape {list(arr.shape)}, model expects {decl}",
                    where=where,
                )
            for got, want in zip(arr.shape, decl, strict=True):
                if isinstance(want, int) and got != want:
                    raise InputError(
                        f"input {name!r} has shape {list(arr.shape)}, model expects {decl}",
                        where=where,
                    )
        want_dtype = dtype_of(vi.type.tensor_type.elem_type)
        if arr.dtype != want_dtype:
            if arr.dtype.kind != want_dtype.kind and not (
                arr.dtype.kind in "iu" and want_dtype.kind in "iu"
            ):
                raise InputError(
                    f"input {name!r} is {arr.dtype}, model expects {want_dtype}", where=where
                )
            feeds[name] = arr.astype(want_dtype)


def synthetic(
    model: onnx.ModelProto, shapes: dict[str, list[int]], count: int, seed: int = 0
) -> list[Feeds]:
    """``count`` random feed dicts (N(0,1) floats). Accuracy measured on these means little."""
    return [random_feeds(model, shapes, seed=seed + i) for i in range(count)]


def split(
    feeds: Sequence[Feeds], holdout_fraction: float = 0.25
) -> tuple[list[Feeds], list[Feeds]]:
    """Calibration and held-out evaluation sets, interleaved so both see the whole folder
    (the same list when there are fewer than 2 samples)."""
    feeds = list(feeds)
    if len(feeds) < 2:
        return feeds, feeds
    step = max(2, round(1 / holdout_fraction))
    held = set(range(step - 1, len(feeds), step)) or {len(feeds) - 1}
    return (
        [f for i, f in enumerate(feeds) if i not in held],
        [f for i, f in enumerate(feeds) if i in held],
    )


class ListReader(CalibrationDataReader):
    """A calibration data reader over an in-memory list of feed dicts."""

    def __init__(self, feeds: Sequence[Feeds]) -> None:
        self._items = list(feeds)
        self._pos = 0

    def get_next(self) -> Feeds | None:
        if self._pos >= len(self._items):
            return None
        self._pos += 1
        return self._items[self._pos - 1]

    def rewind(self) -> None:
        self._pos = 0
