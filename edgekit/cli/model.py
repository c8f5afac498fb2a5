"""`edgekit inspect | quantize | shard | bundle`: model tooling on the host."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from edgekit import names
from edgekit.cli._output import console, emit_json, json_option
from edgekit.cli._params import model_name, version_name
from edgekit.cli.quantize import (
    _floats,
    _preprocess,
    _print_quant,
    _run_quantize,
    check_quant,
    quantize_cmd,
    quantize_options,
)
from edgekit.errors import InputError

__all__ = ["bundle_group", "inspect_cmd", "quantize_cmd", "shard_cmd"]


def _size(text: str) -> float:
    """'1.5G', '512M', '64k' or plain bytes."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    raw = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        if raw and raw[-1] in units:
            return float(raw[:-1]) * units[raw[-1]]
        return float(raw)
    except ValueError:
        raise InputError(f"bad size {text!r}; use e.g. 1.5G or 512M") from None


@click.command("inspect")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--shape", "shape_opts", multiple=True, help="NAME=1,3,224,224 for dynamic dims.")
@click.option("--top", default=10, show_default=True, help="Heaviest nodes to list.")
@json_option
def inspect_cmd(model: Path, shape_opts: tuple[str, ...], top: int, as_json: bool) -> None:
    """Inputs/outputs, opset, parameters, MACs, peak activations, quantization, runtime."""
    from edgekit.model.inspect import inspect_model
    from edgekit.model.shapes import parse_shape_options

    report = inspect_model(model, parse_shape_options(shape_opts), top)
    if as_json:
        emit_json(report)
        return
    from rich.table import Table

    console.print(f"[bold]{report.path}[/]  {report.format}, runs on {report.runtime}"
                  + (f", opset {report.opset}" if report.opset else ""))
    io = Table("", "name", "dtype", "shape")
    for kind, specs in (("in", report.inputs), ("out", report.outputs)):
        for s in specs:
            io.add_row(kind, s.name, s.dtype, str(s.shape))
    console.print(io)
    console.print(f"parameters {report.parameters:,} ({report.parameter_bytes / 1e6:.2f} MB), "
                  f"nodes {report.nodes}, MACs {report.macs_total / 1e6:.1f} M, "
                  f"peak activations {report.peak_activation_bytes / 1e6:.2f} MB, "
                  f"quantized: {report.quantization}")
    for note in report.assumed:
        console.print(f"  [dim]assumed {note}[/]")
    for note in report.runtime_notes:
        console.print(f"  {note}")
    heavy = Table("node", "op", "MMACs", title="heaviest nodes")
    for n in report.top_nodes:
        heavy.add_row(str(n["name"]), str(n["op"]), f"{int(n['macs']) / 1e6:.2f}")
    console.print(heavy)


def shard_options(func: Any) -> Any:
    opts = [
        click.option("--stages", "k", type=int, required=True, help="Number of stages K."),
        click.option("--link-mbps", type=float, default=1000.0, show_default=True,
                     help="Link speed between stages in Mbit/s."),
        click.option("--mem-limit", default=None,
                     help="Memory cap per stage (1.5G), or one per stage: 1G,2G,1G."),
        click.option("--overlap-transfer", is_flag=True,
                     help="Cost a stage as max(compute, send), assuming it sends one request "
                          "while computing the next (default: compute + send)."),
        click.option("--speed", default=None, help="Speed factor per stage node: 1,1,0.6."),
        click.option("--profile/--no-profile", default=True, show_default=True,
                     help="Measure per-node time with ORT (else estimate from MACs)."),
        click.option("--inputs", "input_files", multiple=True, type=click.Path(path_type=Path),
                     help=".npz sample inputs (keyed by input name) for probing and checking."),
        click.option("--shape", "shape_opts", multiple=True, help="NAME=1,3,224,224."),
        click.option("--tolerance", type=float, default=1e-5, show_default=True,
                     help="Relative tolerance when chained outputs are not bit-exact."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _run_shard(model_path: Path, o: dict[str, Any]) -> Any:
    import numpy as np

    from edgekit.model.calibration import check_feeds
    from edgekit.model.loader import load_onnx
    from edgekit.model.plan import Targets, shard_model
    from edgekit.model.shapes import parse_shape_options, random_feeds, resolve_input_shapes

    model = load_onnx(model_path)
    if o["input_files"]:
        feeds = []
        for f in o["input_files"]:
            with np.load(f) as npz:
                feeds.append({k: npz[k] for k in npz.files})
            check_feeds(model, feeds[-1], str(f))
    else:
        shapes, _ = resolve_input_shapes(model, parse_shape_options(o["shape_opts"]))
        feeds = [random_feeds(model, shapes, seed=s) for s in (0, 1)]
    caps = None
    if o["mem_limit"]:
        caps = [_size(x) for x in o["mem_limit"].split(",")]
        caps = caps * o["k"] if len(caps) == 1 else caps
    with console.status(f"partitioning into {o['k']} stages and validating ..."):
        targets = Targets(o["k"], speeds=_floats(o["speed"], "--speed"), mem_caps=caps,
                          link_bytes_per_s=o["link_mbps"] * 1e6 / 8,
                          overlap=o.get("overlap_transfer", False))
        return shard_model(model, targets, feeds, measure=o["profile"], tolerance=o["tolerance"])


def _print_shard(result: Any) -> None:
    from rich.table import Table

    table = Table("stage", "nodes", "in", "out", "out bytes", "mem MB", "compute ms", "send ms")
    for s in result.stages:
        table.add_row(str(s.index), str(s.nodes), str(len(s.inputs)), str(len(s.outputs)),
                      f"{sum(t.bytes for t in s.outputs):,}", f"{s.mem_bytes / 1e6:.2f}",
                      f"{s.compute_ms:.2f}", f"{s.transfer_ms:.2f}")
    console.print(table)
    v = result.validation
    console.print(f"balance (slowest/mean) {result.balance_ratio:.3f}, slowest "
                  f"{result.slowest_ms:.2f} ms; naive equal-nodes split "
                  f"{result.naive_balance_ratio:.3f}, {result.naive_slowest_ms:.2f} ms; "
                  f"costs from {result.cost_source}")
    console.print(f"no split can beat {result.bound_ms:.2f} ms per stage (largest single node "
                  f"{result.largest_node} {result.largest_node_ms:.2f} ms; even share of "
                  "compute over the stages)")
    exact = "bit-exact" if v.exact else f"within {v.tolerance:g} (max {v.max_abs_diff:.3g})"
    console.print(f"validated on {v.samples} inputs: chained == whole {exact}")


def _report(path: Path, shape_opts: tuple[str, ...] = ()) -> Any:
    from edgekit.model.inspect import inspect_model
    from edgekit.model.shapes import parse_shape_options

    return inspect_model(path, parse_shape_options(shape_opts))


@click.command("shard")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@shard_options
@json_option
def shard_cmd(model: Path, output: Path, force: bool, as_json: bool, **o: Any) -> None:
    """Split an ONNX model into K pipeline stages (one file each) and validate the chain."""
    from edgekit import __version__
    from edgekit.model import assemble, bundle

    result = _run_shard(model, o)
    manifest, payload = assemble.sharded(result, _report(model, o["shape_opts"]), model.stem,
                                         "1", min_edgekit=__version__)
    bundle.write_bundle(output, manifest, payload, overwrite=force)
    emit_json(asdict(manifest)) if as_json else _print_shard(result)


class _BundleGroup(click.Group):
    """`edgekit bundle MODEL ...` builds; `edgekit bundle verify DIR` checks."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["create", *args]
        return super().parse_args(ctx, args)


@click.group("bundle", cls=_BundleGroup)
def bundle_group() -> None:
    """Build a deployable bundle (MODEL ...) or check one (verify DIR)."""


@bundle_group.command("create")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--name", default=None, callback=model_name,
              help="Bundle name (default: file stem).")
@click.option("--version", "version", default="1", show_default=True, callback=version_name)
@click.option("--quantize", "do_quantize", is_flag=True, help="int8-quantize first.")
@click.option("--stages", "k", type=int, default=1, show_default=True)
@click.option("--tar", "tar_path", type=click.Path(path_type=Path), help="Also write a .tar.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@quantize_options
@click.option("--link-mbps", type=float, default=1000.0)
@click.option("--mem-limit", default=None)
@click.option("--speed", default=None)
@click.option("--profile/--no-profile", default=True)
@click.option("--inputs", "input_files", multiple=True, type=click.Path(path_type=Path))
@click.option("--tolerance", type=float, default=1e-5)
@json_option
# reason: a click command takes one parameter per option
def bundle_create(model: Path, output: Path, name: str | None, version: str, do_quantize: bool,
                  k: int, tar_path: Path | None, force: bool, as_json: bool, **o: Any) -> None:
    """Make a bundle folder from MODEL (optionally quantized and sharded)."""
    from edgekit import __version__
    from edgekit.model import assemble, bundle
    from edgekit.model.loader import detect_format

    if name is None and not names.is_name(model.stem):
        raise InputError(f"the file name {model.stem!r} cannot be a bundle name "
                         f"({names.NAME_RULE})", where=str(model), hint="pass --name")
    name = name or model.stem
    pre = _preprocess(o["size"], o["mean"], o["std"], o["layout"], o["channels"])
    extra: dict[str, Any] = {"min_edgekit": __version__}
    if o["calib_dir"] or o["size"]:
        extra["preprocess"] = pre.to_dict()
    with tempfile.TemporaryDirectory(prefix="edgekit-bundle-") as tmp:
        source = model
        if do_quantize:
            if detect_format(model) == "tflite":
                raise InputError("--quantize applies to ONNX models; TFLite is bundled as is")
            source = Path(tmp) / f"{model.stem}.int8.onnx"
            result = _run_quantize(model, source, o, pre)
            if not as_json:
                _print_quant(result)
            check_quant(result, o["min_cosine"], as_json)
            report = asdict(result)
            report.pop("output", None)
            extra["quantization"] = report
        if k > 1:
            o["k"] = k
            shard = _run_shard(source, o)
            manifest, payload = assemble.sharded(shard, _report(source, o["shape_opts"]),
                                                 name, version, **extra)
        else:
            manifest, payload = assemble.single(source, _report(source, o["shape_opts"]),
                                                name, version, **extra)
        bundle.write_bundle(output, manifest, payload, overwrite=force)
    if tar_path:
        bundle.make_tar(output, tar_path)
    if as_json:
        emit_json(asdict(manifest))
    else:
        console.print(f"bundle {name} v{version}: {len(manifest.stages)} stage(s), "
                      f"{len(manifest.files)} file(s) -> {output}")


@bundle_group.command("verify")
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@json_option
def bundle_verify(bundle_dir: Path, as_json: bool) -> None:
    """Check every file's size and sha256 and that the stages chain."""
    from edgekit.model.bundle import verify

    manifest = verify(bundle_dir)
    if as_json:
        emit_json({"ok": True, "name": manifest.name, "version": manifest.version,
                   "stages": len(manifest.stages), "files": len(manifest.files)})
    else:
        console.print(f"ok: {manifest.name} v{manifest.version}, {len(manifest.stages)} stage(s), "
                      f"{len(manifest.files)} file(s) verified")
