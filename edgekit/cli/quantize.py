"""`edgekit quantize`: int8 with fp32 fallback where accuracy needs it, and the sample-data
options it shares with `edgekit bundle --quantize`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from edgekit.cli._output import console, emit_json, err_console, json_option
from edgekit.errors import InputError, ModelError


def _floats(text: str | None, what: str) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise InputError(f"bad {what} {text!r}; expected comma-separated numbers") from None


def data_options(func: Any) -> Any:
    """Options shared by quantize and bundle: where sample data comes from and how images
    become tensors."""
    opts = [
        click.option("--calib", "calib_dir", type=click.Path(path_type=Path),
                     help="Folder of images, .npy or .npz files (held-out 25% evaluates)."),
        click.option("--calib-synthetic", type=int, default=0,
                     help="Use N random inputs instead (accuracy then UNKNOWN)."),
        click.option("--shape", "shape_opts", multiple=True,
                     help="Concrete input shape NAME=1,3,224,224 for dynamic dims."),
        click.option("--size", default=None, help="Image preprocessing: HxW (default 224x224)."),
        click.option("--mean", default="0,0,0", help="Per-channel mean after scaling to [0,1]."),
        click.option("--std", default="1,1,1", help="Per-channel std."),
        click.option("--layout", type=click.Choice(["nchw", "nhwc"]), default="nchw"),
        click.option("--channels", type=click.Choice(["rgb", "bgr"]), default="rgb"),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _preprocess(size: str | None, mean: str, std: str, layout: str, channels: str) -> Any:
    from edgekit.model.calibration import Preprocess

    hw = (224, 224)
    if size:
        try:
            h, w = (int(v) for v in size.lower().split("x"))
            hw = (h, w)
        except ValueError:
            raise InputError(f"bad --size {size!r}; expected HxW like 48x192") from None
    return Preprocess(size=hw, mean=tuple(_floats(mean, "--mean") or ()),
                      std=tuple(_floats(std, "--std") or ()), layout=layout, channels=channels)


def _samples(model: Any, calib_dir: Path | None, synthetic: int, shape_opts: tuple[str, ...],
             pre: Any) -> tuple[list[dict], str]:
    from edgekit.model import calibration
    from edgekit.model.shapes import parse_shape_options, resolve_input_shapes

    if calib_dir is not None:
        feeds = calibration.load_folder(calib_dir, model, pre)
        has_images = any(
            p.suffix.lower() in calibration.IMAGE_SUFFIXES for p in Path(calib_dir).iterdir()
        )
        return feeds, "images" if has_images else "files"
    if synthetic <= 0:
        raise InputError("give calibration data: --calib DIR or --calib-synthetic N")
    shapes, _ = resolve_input_shapes(model, parse_shape_options(shape_opts))
    err_console.print(
        "[bold yellow]WARNING:[/] calibrating on SYNTHETIC random inputs: the int8 model's "
        "accuracy on real data is UNKNOWN"
    )
    return calibration.synthetic(model, shapes, synthetic), "synthetic"


def _run_quantize(model_path: Path, out: Path, opts: dict[str, Any], pre: Any) -> Any:
    from edgekit.model import calibration
    from edgekit.model.loader import load_onnx
    from edgekit.model.quantize import QuantizeOptions, quantize_model

    model = load_onnx(model_path)
    feeds, kind = _samples(model, opts["calib_dir"], opts["calib_synthetic"],
                           opts["shape_opts"], pre)
    if kind == "synthetic":
        calib = feeds
        held = calibration.synthetic(model, {k: list(v.shape) for k, v in feeds[0].items()},
                                     max(2, len(feeds) // 4), seed=10_000)
    else:
        calib, held = calibration.split(feeds)
    options = QuantizeOptions(dynamic=opts["dynamic"], per_channel=opts["per_channel"],
                              method=opts["method"], exclude=list(opts["exclude"]),
                              keep_fp32=list(opts["keep_fp32"]),
                              weights_only=opts["weights_only"], fallback=opts["fallback"],
                              min_cosine=opts["min_cosine"])
    with console.status("quantizing and evaluating against fp32 ..."):
        return quantize_model(model_path, out, calib, held, options, kind)


def quantize_options(func: Any) -> Any:
    opts = [
        click.option("--dynamic", is_flag=True, help="Dynamic int8 (transformers, RNNs)."),
        click.option("--per-channel", is_flag=True, help="Per-channel weight scales."),
        click.option("--method", type=click.Choice(["minmax", "entropy", "percentile",
                                                    "distribution"]), default="minmax"),
        click.option("--exclude", multiple=True,
                     help="Node name or op type on fp32 activations (its weights stay int8)."),
        click.option("--keep-fp32", multiple=True,
                     help="Node name or op type left wholly fp32, weights too (ORT cannot "
                          "quantize it)."),
        click.option("--weights-only", is_flag=True,
                     help="int8 weights, fp32 activations everywhere: ~4x smaller, near-fp32 "
                          "accuracy, no int8 compute speed-up."),
        click.option("--fallback", type=click.Choice(["auto", "none"]), default="auto",
                     show_default=True,
                     help="auto: below --min-cosine, move the layers losing most accuracy to "
                          "fp32 activations (int8 weights) until it holds; none: refuse."),
        click.option("--min-cosine", type=float, default=0.99, show_default=True,
                     help="Fail instead of writing when an output falls below this."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return data_options(func)


def _print_quant(result: Any) -> None:
    from rich.table import Table

    from edgekit.model.speed import board_lines

    ev = result.evaluation
    console.print(f"{result.mode}: {ev.fp32_bytes / 1e6:.2f} MB -> {ev.int8_bytes / 1e6:.2f} MB "
                  f"({ev.size_ratio:.1%}); int8/fp32 latency {ev.speed_ratio:.2f} "
                  f"({ev.int8_ms:.2f} / {ev.fp32_ms:.2f} ms on this machine); "
                  f"{ev.samples} held-out samples ({ev.data})")
    table = Table("output", "cosine", "max |err|", "mean |err|", "top-1 agree")
    for o in ev.outputs:
        top1 = "-" if o.top1_agreement is None else f"{o.top1_agreement:.1%}"
        table.add_row(o.name, f"{o.cosine:.5f}", f"{o.max_abs_error:.4g}",
                      f"{o.mean_abs_error:.4g}", top1)
    console.print(table)
    for line in board_lines(ev.boards):
        console.print(line)
    floats = result.fp32_activation_nodes
    if floats and "weight-only" not in result.mode:
        console.print(f"fp32 activations, int8 weights ({len(floats)}): {', '.join(floats)}")
    for step in result.search:
        what = ("weight-only" if step["float_nodes"] < 0
                else f"{step['float_nodes']} worst node(s) on fp32 activations")
        console.print(f"  fallback tried {what}: min cosine {step['min_cosine']:.5f}")
    for layer in ev.worst_layers:
        console.print(f"  hurts most: {layer['node']} ({layer['op']}) tensor {layer['tensor']} "
                      f"loses {layer['loss_db']:.1f} dB (SQNR {layer['sqnr_db']:.1f} dB)")
    for w in result.warnings:
        err_console.print(f"[bold yellow]WARNING:[/] {w}")


def check_quant(result: Any, min_cosine: float, as_json: bool) -> None:
    """Refuse a quantization below ``min_cosine``. Under --json the refusal is one document:
    the error document every failing --json command prints, with the result that led to it
    (which outputs fell short, the worst layers) beside it."""
    if not as_json or result.passed:
        return _check_quant(result, min_cosine)
    from dataclasses import asdict

    from rich.markup import escape

    from edgekit.cli.main import error_document

    try:
        _check_quant(result, min_cosine)
    except ModelError as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc.render())}", highlight=False)
        emit_json({**error_document(exc.exit_code, exc.message, kind=type(exc).__name__,
                                    hint=exc.hint), **asdict(result)})
        # sys.exit, not click's Exit: main() runs click with standalone_mode=False, where
        # click turns Exit into a return value and the exit status would be 0
        sys.exit(exc.exit_code)


def _check_quant(result: Any, min_cosine: float) -> None:
    if not result.passed:
        worst = ", ".join(str(w["node"]) for w in result.evaluation.worst_layers[:3])
        raise ModelError(
            f"int8 model below --min-cosine {min_cosine}: min cosine "
            f"{result.evaluation.min_cosine:.4f}; nothing written",
            hint=f"try --per-channel, --method percentile, --fallback auto or --exclude {worst}"
            if worst else "try --per-channel, --method percentile or --weights-only",
        )


@click.command("quantize")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@quantize_options
@json_option
def quantize_cmd(model: Path, output: Path, as_json: bool, **opts: Any) -> None:
    """int8-quantize an ONNX model (QDQ S8S8 static by default) and compare it with fp32."""
    from edgekit.model.loader import detect_format

    if detect_format(model) == "tflite":
        from edgekit.model.tflite import inspect_tflite

        report = inspect_tflite(model)
        info = {"model": str(model), "format": "tflite", "quantization": report.quantization,
                "note": "TFLite models are used as they are; quantize with the TF converter"}
        emit_json(info) if as_json else console.print(
            f"{model}: TFLite, quantization: {report.quantization} (used as is)")
        return
    pre = _preprocess(opts.pop("size"), opts.pop("mean"), opts.pop("std"), opts.pop("layout"),
                      opts.pop("channels"))
    result = _run_quantize(model, output, opts, pre)
    if not as_json:
        _print_quant(result)  # the table first: it shows why a refusal below happens
    check_quant(result, opts["min_cosine"], as_json)
    if as_json:
        emit_json(result)


