"""`edgekit prune` and `edgekit native info`: the native kernels' verbs."""

from __future__ import annotations

import click

from edgekit.cli._output import console, emit_json, json_option


@click.group("native")
def native() -> None:
    """Native kernel library: which variant runs here."""


@native.command("info")
@json_option
def info(as_json: bool) -> None:
    """Report the dispatched kernel variant and the CPU features it was chosen from."""
    from edgekit.native import features

    feats = features()
    if as_json:
        emit_json(feats)
        return
    flags = ", ".join(k for k, v in feats.items() if v is True and k != "library") or "none"
    console.print(f"variant: [bold]{feats['variant']}[/]  threads: {feats['threads']}  "
                  f"features: {flags}")


@click.command("prune")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--pattern", default="2:4", show_default=True, help="N:M sparsity: 2:4, 1:4, 1:2.")
@click.option("--layers", multiple=True, help="Only layers (node or weight name; globs) to prune.")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the pruned model.")
@click.option("--min-params", default=16384, show_default=True,
              help="Skip layers with fewer weights.")
@click.option("--inputs", "inputs_npz", type=click.Path(exists=True, dir_okay=False),
              help="Held-out inputs (.npz, one array per model input, leading axis = samples).")
@click.option("--samples", default=8, show_default=True, help="Synthetic inputs when no --inputs.")
@click.option("--calibrate", "calib_npz", type=click.Path(exists=True, dir_okay=False),
              help="Calibration inputs (.npz as --inputs): score weights by |w| x input norm.")
@click.option("--threads", default=0, show_default=True, help="ORT intra-op threads (0: all).")
@json_option
# reason: a click command takes one parameter per option
def prune(model: str, pattern: str, layers: tuple[str, ...], out: str, min_params: int,
          inputs_npz: str | None, samples: int, calib_npz: str | None, threads: int,
          as_json: bool) -> None:
    """Prune MatMul/Gemm weights to N:M, int8-quantize them, run them with our kernel in ORT."""
    from rich.progress import Progress
    from rich.table import Table

    from edgekit.native.prune import Layers, prune_model
    from edgekit.native.prune_eval import evaluate, synth_inputs
    from edgekit.native.sparse import parse_pattern

    n_m = parse_pattern(pattern)
    with Progress(console=console, transient=True, disable=as_json) as bar:
        task = bar.add_task("pruning", total=None)

        def step(done: int, total: int, name: str) -> None:
            bar.update(task, total=total, completed=done, description=f"pruned {name}")

        calibration = _load_feeds(calib_npz) if calib_npz else None
        report, _ = prune_model(model, out, n_m, Layers(list(layers) or None, min_params),
                                calibration=calibration, progress=step)
        bar.update(task, description="evaluating against the dense model", total=None)
        feeds = _load_feeds(inputs_npz) if inputs_npz else synth_inputs(out, samples)
        evaluate(report, feeds, threads)
    if as_json:
        emit_json(report)
        return
    table = Table(title=f"edgekit prune {pattern} ({report.variant})")
    for col in ("layer", "N x K", "sparsity", "MB before", "MB after", "cosine", "fp32 ms",
                "kernel ms"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for lr in report.layers:
        table.add_row(lr.name, f"{lr.shape[0]}x{lr.shape[1]}", f"{lr.sparsity:.0%}",
                      f"{lr.bytes_before / 1e6:.2f}", f"{lr.bytes_after / 1e6:.2f}",
                      f"{lr.cosine:.4f}", f"{lr.dense_ms:.3f}", f"{lr.sparse_ms:.3f}")
    console.print(table)
    console.print(f"{len(report.layers)} layers pruned, {len(report.skipped)} skipped; file "
                  f"{report.size_before / 1e6:.1f} MB -> {report.size_after / 1e6:.1f} MB")
    top1 = "n/a" if report.top1_agreement is None else f"{report.top1_agreement:.2%}"
    console.print(f"vs dense on {len(feeds)} inputs: cosine {report.cosine:.5f}, top-1 {top1}; "
                  f"ORT latency {report.dense_ms:.2f} ms dense -> {report.pruned_ms:.2f} ms pruned")


def _load_feeds(npz: str) -> list[dict]:
    """Samples of an .npz holding one array per model input (leading axis = samples)."""
    import numpy as np

    from edgekit.errors import InputError

    with np.load(npz) as data:
        names = list(data.files)
        count = len(data[names[0]]) if names else 0
        if not names or any(len(data[k]) != count for k in names):
            raise InputError("arrays missing or with different sample counts", where=npz)
        return [{k: data[k][i] for k in names} for i in range(count)]
