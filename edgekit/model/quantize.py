"""int8 quantization with onnxruntime.quantization, checked against the fp32 model.

Static QDQ with signed int8 weights and activations (S8S8) is the default: it is what ORT
recommends for Arm CPUs. ``dynamic`` quantizes weights only and computes activation scales at
run time (transformers, RNNs). The result is evaluated on held-out inputs and only moved into
place when every output's cosine similarity reaches ``min_cosine``.

Static mode can keep chosen nodes on fp32 activations while their weights stay int8
(``exclude``; see :mod:`edgekit.model.mixed`), all of them (``weights_only``: about 4x smaller,
accuracy near fp32, but no int8 compute and so no int8 speed-up), or pick them itself
(``fallback="auto"``, the default): when the full int8 model misses ``min_cosine``, the nodes
that lose the most SQNR move to fp32 activations until it holds (:mod:`edgekit.model.fallback`).
The nodes writing graph outputs always read fp32 activations and write fp32: one node per
output, and it keeps an output that concatenates values of different scale (YOLO's pixel box
coordinates beside 0..1 class scores) from sharing one int8 scale that rounds the small ones
to zero.
Auto is the default because it only engages where the plain model would be refused, and the
report names every node it moved and the resulting size and latency. ``keep_fp32`` leaves nodes
wholly fp32 (ORT's ``nodes_to_exclude``) for patterns ORT cannot quantize.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from edgekit.errors import ModelError
from edgekit.model import mixed
from edgekit.model.evaluate import Evaluation, Feeds, Reference, evaluate, worst_layers
from edgekit.model.fallback import Search, search
from edgekit.model.loader import atomic_path, load_onnx
from edgekit.model.speed import slower_warning

METHODS = ("minmax", "entropy", "percentile", "distribution")
#: how far below the model's own accuracy this host's fused int8 kernels may fall unwarned
#: (a Pi 4/5 core: 2.4e-4 below on PP-OCR's classifier; an AVX2-only x86: 8.7e-3)
KERNEL_GAP = 0.002
FALLBACKS = ("auto", "none")


@dataclass
class QuantizeOptions:
    dynamic: bool = False
    per_channel: bool = False
    method: str = "minmax"
    exclude: list[str] = field(default_factory=list)  # nodes / op types: fp32 acts, int8 weights
    keep_fp32: list[str] = field(default_factory=list)  # nodes / op types left wholly fp32
    weights_only: bool = False  # every node: int8 weights, fp32 activations
    fallback: str = "auto"  # "auto": move the worst nodes to fp32 activations to reach min_cosine
    min_cosine: float = 0.99


@dataclass
class QuantizeResult:
    output: str | None
    mode: str  # e.g. "static QDQ S8S8 per-channel", "weight-only int8 ...", "dynamic ..."
    excluded_nodes: list[str]  # wholly fp32 (weights too)
    fp32_activation_nodes: list[str]  # int8 weights, fp32 activations and compute
    evaluation: Evaluation
    passed: bool
    search: list[dict[str, Any]] = field(default_factory=list)  # auto fallback steps
    warnings: list[str] = field(default_factory=list)


def _select(model: onnx.ModelProto, wanted: Sequence[str], flag: str) -> list[str]:
    names = {n.name for n in model.graph.node}
    ops = {n.op_type for n in model.graph.node}
    unknown = [e for e in wanted if e not in names and e not in ops]
    if unknown:
        raise ModelError(f"{flag} names no node or op type: {', '.join(unknown)}")
    return [n.name for n in model.graph.node if n.name in wanted or n.op_type in wanted]


def _variant(full: Path, nodes: list[str] | None, dst: Path, compact: bool = False) -> list[str]:
    """Write ``full`` with ``nodes`` on fp32 activations (None: all of them) to ``dst``."""
    model = onnx.load(str(full))
    changed = mixed.weights_only(model) if nodes is None else mixed.float_activations(model, nodes)
    if compact:
        mixed.compact_names(model)
    onnx.save(model, str(dst))
    return changed


def quantize_model(
    src: Path,
    dst: Path,
    calib: Sequence[Feeds],
    held_out: Sequence[Feeds],
    options: QuantizeOptions,
    data_kind: str,
) -> QuantizeResult:
    """Quantize ``src`` into ``dst``; raise ``ModelError`` (writing nothing) below min_cosine."""
    if options.method not in METHODS:
        raise ModelError(f"unknown calibration method {options.method!r}; use {METHODS}")
    if options.fallback not in FALLBACKS:
        raise ModelError(f"unknown fallback {options.fallback!r}; use {FALLBACKS}")
    # absolute before _preprocess's chdir: a relative path would then name a file in the temp dir
    src, dst = Path(src).absolute(), Path(dst).absolute()
    model = load_onnx(src)  # clear errors for bad files before ORT's
    logging.getLogger("root").setLevel(logging.ERROR)  # ORT's quantizer logs chattily
    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp_name:
        tmp = Path(tmp_name)
        pre = _preprocess(model, src, tmp)
        pre_model = onnx.load(str(pre))
        excluded = _select(pre_model, options.keep_fp32, "--keep-fp32")
        floats = _select(pre_model, options.exclude, "--exclude")
        if options.dynamic:  # no activation Q/DQ to bypass: --exclude keeps nodes wholly fp32
            excluded, floats = excluded + [n for n in floats if n not in excluded], []
        full = tmp / "full.onnx"
        mode = _run_ort(options, pre, full, calib, excluded)
        if not options.dynamic:
            writers = mixed.output_writers(onnx.load(str(full)))
            floats += [w for w in writers if w not in floats]
        out = tmp / "quantized.onnx"
        found: Search | None = None
        if options.dynamic:
            shutil.copyfile(full, out)
        else:
            found = _choose(_Steps(src, pre, full, tmp), floats, held_out, options)
            nodes = None if found.weights_only else found.nodes
            floats = _variant(full, nodes, out, compact=True)
            mode = _mode(mode, found, len(floats))
        report = evaluate(src, out, held_out, data_kind)
        passed = report.min_cosine >= options.min_cosine
        if not passed and not options.dynamic:
            report.worst_layers = worst_layers(pre, full, held_out[:4], tmp)
        result = QuantizeResult(
            output=str(dst) if passed else None, mode=mode, excluded_nodes=excluded,
            fp32_activation_nodes=floats, evaluation=report, passed=passed,
            search=[asdict(s) for s in found.steps] if found else [],
            warnings=_warnings(report, mode, data_kind),
        )
        if not passed:
            return result
        with atomic_path(Path(dst)) as part:
            shutil.copyfile(out, part)
    return result


def _preprocess(model: onnx.ModelProto, src: Path, tmp: Path) -> Path:
    """ORT's quant_pre_process (shape inference, fusions) of ``src`` into ``tmp``, every node
    named."""
    from onnxruntime.quantization import quant_pre_process

    pre = tmp / "preprocessed.onnx"
    source = _at_least_opset13(model, src, tmp)
    # ORT's symbolic shape inference dumps "sym_shape_infer_temp.onnx" and a <uuid>.data
    # copy of the weights into the *current directory* when it cannot infer every shape;
    # run it from the temp dir so nothing lands in the user's folder (CLI: one thread).
    with contextlib.chdir(tmp):
        try:
            quant_pre_process(str(source), str(pre), skip_symbolic_shape=False)
        except Exception:  # symbolic shape inference fails on some graphs; retry without
            quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
    pre_model = onnx.load(str(pre))
    _name_nodes(pre_model)
    onnx.save(pre_model, str(pre))
    return pre


def _warnings(report: Evaluation, mode: str, data_kind: str) -> list[str]:
    """What the user must not miss: host kernels less accurate than the model, int8 slower
    than fp32, synthetic calibration data."""
    out = []
    kernel = report.kernel_min_cosine
    if kernel is not None and kernel < report.min_cosine - KERNEL_GAP:
        out.append(
            f"on this host, ONNX Runtime's fused int8 kernels reach min cosine {kernel:.4f} "
            f"(the model itself: {report.min_cosine:.4f}); x86 CPUs without AVX-512 VNNI / "
            "AVX-VNNI add int8 products in 16 bits with saturation; Arm nodes and VNNI "
            "CPUs compute like the model")
    slower = slower_warning(report.fp32_ms, report.int8_ms, mode)
    if slower:
        out.append(slower)
    if data_kind == "synthetic":
        out.append("calibrated and evaluated on SYNTHETIC random data: real accuracy is UNKNOWN")
    return out


@dataclass(frozen=True)
class _Steps:
    """The model at each step of one quantization: the user's fp32 source, ORT's preprocessed
    copy, the fully int8 model, and the temp dir that trial variants go to."""

    src: Path
    pre: Path
    full: Path
    tmp: Path


def _choose(
    steps: _Steps, floats: list[str], held_out: Sequence[Feeds], options: QuantizeOptions
) -> Search:
    """Which nodes read fp32 activations: the requested ones, plus (fallback auto) as many of
    the worst-ranked as ``min_cosine`` needs."""
    if options.weights_only:
        return Search([], True, float("nan"), True)
    src, pre, full, tmp = steps.src, steps.pre, steps.full, steps.tmp
    ref = Reference(src, held_out)
    trial = tmp / "trial.onnx"

    def score(nodes: list[str] | None) -> float:
        _variant(full, None if nodes is None else floats + nodes, trial)
        return ref.min_cosine(trial)

    base = score([])
    if base >= options.min_cosine or options.fallback == "none":
        return Search(floats, False, base, base >= options.min_cosine)
    in_graph = {n.name for n in onnx.load(str(full)).graph.node}
    ranking = worst_layers(pre, full, held_out[:4], tmp, top=None)
    ranked = [r["node"] for r in ranking
              if r["loss_db"] > 0 and r["node"] in in_graph and r["node"] not in floats]
    found = search(ranked, score, options.min_cosine)
    if not found.weights_only:
        found.nodes = floats + found.nodes
    return found


def _mode(base: str, found: Search, count: int) -> str:
    if found.weights_only:
        return ("weight-only int8" + (" per-channel" if "per-channel" in base else "")
                + ": int8 weights, fp32 activations and compute (no int8 speed-up)")
    if count:
        return f"{base}, {count} node(s) on fp32 activations with int8 weights"
    return base


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
            # keep Relu/Clip explicit: nodes later moved to fp32 activations need them
            extra_options={"QDQKeepRemovableActivations": True},
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
