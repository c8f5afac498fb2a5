"""`edgekit nodes ...`: look at the boards listed in an inventory."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text

from edgekit import inventory, settings
from edgekit.cli._output import console, emit_json, err_console, json_option
from edgekit.fleet import FleetResult
from edgekit.node import stack
from edgekit.remote.probe import NodeReport, check_nodes
from edgekit.tables import Col, FitTable, short_board

NODES_OPTION = click.option(
    "--nodes", "nodes_file", required=True, type=click.Path(dir_okay=False),
    help="Inventory file: one [user@]host[:port] key=value... line per board.",
)
ACCEPT_OPTION = click.option(
    "--accept-new-host-keys", is_flag=True,
    help="Trust host keys seen for the first time (recorded in ~/.edgekit/known_hosts). "
    "A changed key is always refused.",
)


@click.group()
def nodes() -> None:
    """Inspect the boards in an inventory (reachability, identity, fitness to serve)."""


@nodes.command("check")
@NODES_OPTION
@ACCEPT_OPTION
@click.option("--timeout", "timeout_s", type=float, default=settings.ssh_connect_timeout_s,
              show_default=True, help="Seconds to wait for each node's SSH connection.")
@json_option
def check(nodes_file: str, accept_new_host_keys: bool, timeout_s: float, as_json: bool) -> None:
    """Probe every node in parallel; exit 4 if any node is not ready."""
    inv = inventory.load(nodes_file)
    progress = Progress(TextColumn("probing"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.description}"), console=err_console,
                        disable=as_json or not err_console.is_terminal, transient=True)
    with progress:
        task = progress.add_task("", total=len(inv))

        def done(rep: NodeReport) -> None:
            progress.update(task, advance=1, description=rep.name)

        reports = check_nodes(list(inv), accept_new_host_keys=accept_new_host_keys,
                              connect_timeout_s=timeout_s, on_done=done)
    ready = sum(r.ready for r in reports)
    if as_json:
        fleet = FleetResult("nodes check", {r.node: r for r in reports})
        emit_json({**fleet.to_dict(), "inventory": str(inv.path), "ready": ready,
                   "total": len(reports)})
    else:
        console.print(_table(reports))
        for line in runtime_lines({r.name: (r.onnxruntime, r.litert) for r in reports
                                   if r.native}):
            console.print(f"node runtime: {line}")
        for rep in reports:
            for warning in rep.warnings:
                console.print(f"[yellow]warning[/] {rep.name}: {escape(warning)}")
        colour = "green" if ready == len(reports) else "red"
        console.print(f"[{colour}]{ready}/{len(reports)} nodes ready[/]")
    if ready != len(reports):
        raise SystemExit(4)


#: nodes check's columns; rank 0 stays at any width, higher ranks drop first (edgekit.tables)
CHECK_COLUMNS = [
    Col("node"), Col("board", wrap=True, min_width=14), Col("arch", 3), Col("cpu\nkernels", 4),
    Col("RAM free", 2), Col("disk", 5), Col("py", 5), Col("temp", 1), Col("clock", 4),
    Col("thr", 2), Col("verdict"), Col("reason", wrap=True, min_width=24, hide_empty=True),
]


def _table(reports: list[NodeReport]) -> FitTable:
    """Every node's name, board, verdict and reason at any width; the other columns as many
    as fit (`--json` has every field)."""
    table = FitTable(CHECK_COLUMNS)
    for r in reports:
        reason = "; ".join(r.problems) if not r.ready else ""
        if not r.reachable:
            table.add_row(r.name, short_board(r.model), *[""] * 8, Text("unreachable", "red"),
                          reason)
            continue
        mem = f"{r.mem_avail_mb / 1024:.1f}/{r.mem_total_mb / 1024:.0f}G" if r.mem_total_mb else "?"
        clock = f"{r.freq_mhz}/{r.max_freq_mhz}" if r.freq_mhz else "?"
        temp = f"{r.temp_c:.0f}°C" if r.temp_c is not None else "?"
        cpu = Text(f"{r.cores or '?'}x " + ("+".join(x for x in r.simd if x != "asimdhp") or "-"))
        cpu.append("\n").append_text(kernels_text(r.native))
        disk = f"{r.disk_free_mb / 1024:.0f}G" if r.disk_free_mb is not None else "?"
        verdict = Text("ready", "green") if r.ready else Text("not ready", "red")
        table.add_row(r.name, short_board(r.model), r.arch, cpu, mem, disk, r.python or "-", temp,
                      clock, r.throttled or "?", verdict, reason)
    return table


def kernels_text(variant: str) -> Text:
    """kernels_cell as a Text (for edgekit.tables, whose cells are never markup)."""
    return Text.from_markup(kernels_cell(variant))


def kernels_cell(variant: str) -> str:
    """The kernel variant a node runtime runs; the numpy fallback as a yellow "numpy" (its
    warning line says why; "-": no runtime installed yet, it comes with the first deploy)."""
    if not variant:
        return "-"
    return "[yellow]numpy[/]" if variant == stack.FALLBACK else variant


def runtime_lines(versions: dict[str, tuple[str, str]]) -> list[str]:
    """node -> (onnxruntime, litert) as one line per distinct pair (nodes usually agree)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for node, pair in versions.items():
        groups.setdefault(pair, []).append(node)
    return [f"onnxruntime {ort or '-'}, ai-edge-litert {lite or '-'}: {', '.join(nodes)}"
            for (ort, lite), nodes in groups.items()]
