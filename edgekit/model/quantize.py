"""int8 quantization with onnxruntime.quantization, checked against the fp32 model.

Static QDQ with signed int8 weights and activations (S8S8) is the default: it is what ORT
recommends for Arm CPUs. ``dynamic`` quantizes weights only and computes activation scales at
run time (transformers, RNNs). The result is evaluated on held-out inputs and only moved into
place when every output's cosine similarity reaches ``min_cosine``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from edgekit.errors import ModelError
from edgekit.model.evaluate import Evaluation, Feeds, evaluate, worst_layers
from edgekit.model.loader import atomic_path, load_onnx

METHODS = ("minmax", "entropy", "percentile", "distribution")


@dataclass
class QuantizeOptions:
    dynamic: bool = False
    per_channel: bool = False
    method: str = "minmax"
    exclude: list[str] = field(default_factory=list)  # node names or op types kept fp32
    min_cosine: float = 0.99


@dataclass
class QuantizeResult:
    output: str | None
    mode: str  # "static QDQ S8S8" or "dynamic"
    excluded_nodes: list[str]
    evaluation: Evaluation
    passed: bool
    warnings: list[str] = field(default_factory=list)


def _excluded_nodes(model: onnx.ModelProto, exclude: Sequence[str]) -> list[str]:
    names = {n.name for n in model.graph.node}
    ops = {n.op_type for n in model.graph.node}
    unknown = [e for e in exclude if e not in names and e not in ops]
    if unknown:
        raise ModelError(f"--exclude names no node or op type: {', '.join(unknown)}")
    return [n.name for n in model.graph.node if n.name in exclude or n.op_type in exclude]


def quantize_model(
    src: Path,
    dst: Path,
    calib: Sequence[Feeds],
    held_out: Sequence[Feeds],
    options: QuantizeOptions,
    data_kind: str,
) -> QuantizeResult:
    """Quantize ``src`` into ``dst``; raise ``ModelError`` (writing nothing) below min_cosine."""
    from onnxruntime.quantization import quant_pre_process

    if options.method not in METHODS:
        raise ModelError(f"unknown calibration method {options.method!r}; use {METHODS}")
    model = load_onnx(src)  # clear errors for bad files before ORT's
    logging.getLogger("root").setLevel(logging.ERROR)  # ORT's quantizer logs chattily
    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp_name:
        tmp = Path(tmp_name)
        pre = tmp / "preprocessed.onnx"
        source = _at_least_opset13(model, src, tmp)
        try:
            quant_pre_process(str(source), str(pre), skip_symbolic_shape=False)
        except Exception:  # symbolic shape inference fails on some graphs; retry without
            quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        pre_model = onnx.load(str(pre))
        _name_nodes(pre_model)
        onnx.save(pre_model, str(pre))
        excluded = _excluded_nodes(pre_model, options.exclude)
        out = tmp / "quantized.onnx"
        mode = _run_ort(options, pre, out, calib, excluded)
        report = evaluate(src, out, held_out, data_kind)
        passed = report.min_cosine >= options.min_cosine
        if not passed and not options.dynamic:
            report.worst_layers = worst_layers(pre, out, held_out[:4], tmp)
        warnings = []
        if data_kind == "synthetic":
            warnings.append(
                "calibrated and evaluated on SYNTHETIC random data: real accuracy is UNKNOWN"
            )
        result = QuantizeResult(
            output=str(dst) if passed else None, mode=mode, excluded_nodes=excluded,
            evaluation=report, passed=passed, warnings=warnings,
        )
        if not passed:
            return result
        with atomic_path(Path(dst)) as part:
            shutil.copyfile(out, part)
    return result


def _run_ort(
    options: QuantizeOptions, pre: Path, out: Path, calib: Sequence[Feeds], excluded: list[str]
) -> str:
    """Call ORT's quantizer; its failures (unsupported patterns) become a ``ModelError``."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from edgekit.model.calibration import ListReader

    try:
        if options.dynamic:
            quantize_dynamic(
                str(pre), str(out), weight_type=QuantType.QInt8,
                per_channel=options.per_channel, nodes_to_exclude=excluded,
            )
            return "dynamic int8 (weights S8, activations U8 at run time)" + (
                " per-channel" if options.per_channel else ""
            )
        method = {
            "minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
            "distribution": CalibrationMethod.Distribution,
        }[options.method]
        quantize_static(
            str(pre), str(out), ListReader(calib), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            per_channel=options.per_channel, calibrate_method=method,
            nodes_to_exclude=excluded,
        )
    except (ValueError, RuntimeError, KeyError, IndexError) as exc:
        raise ModelError(
            f"onnxruntime.quantization could not quantize this model: {exc}",
            hint="--exclude the node or op type it names, or try --dynamic / static",
        ) from None
    return "static QDQ S8S8" + (" per-channel" if options.per_channel else "")


def _at_least_opset13(model: onnx.ModelProto, src: Path, tmp: Path) -> Path:
    """Per-channel QDQ needs DequantizeLinear's ``axis`` (opset 13): upgrade older models."""
    from onnx import version_converter

    from edgekit.model.loader import default_opset

    if default_opset(model) >= 13:
        return Path(src)
    try:
        upgraded = version_converter.convert_version(model, 13)
    except Exception as exc:
        raise ModelError(f"cannot upgrade opset {default_opset(model)} to 13: {exc}") from None
    path = tmp / "opset13.onnx"
    onnx.save(upgraded, str(path))
    return path


def _name_nodes(model: onnx.ModelProto) -> None:
    from edgekit.model.graph import ensure_node_names

    ensure_node_names(model)
