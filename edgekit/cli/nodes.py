"""`edgekit nodes ...`: look at the boards listed in an inventory."""

from __future__ import annotations

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from edgekit import inventory, settings
from edgekit.cli._output import console, emit_json, err_console, json_option
from edgekit.remote.probe import NodeReport, check_nodes

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
        emit_json({"inventory": str(inv.path), "ready": ready, "total": len(reports),
                   "nodes": [r.to_dict() for r in reports]})
    else:
        console.print(_table(reports))
        for rep in reports:
            for warning in rep.warnings:
                console.print(f"[yellow]warning[/] {rep.name}: {warning}")
        colour = "green" if ready == len(reports) else "red"
        console.print(f"[{colour}]{ready}/{len(reports)} nodes ready[/]")
    if ready != len(reports):
        raise SystemExit(4)


def _table(reports: list[NodeReport]) -> Table:
    table = Table(show_lines=False)
    for col in ("node", "address", "board", "arch", "cores", "simd", "RAM free/total",
                "disk free", "OS / python", "temp", "clock", "throttled", "verdict"):
        table.add_column(col, overflow="fold")
    for r in reports:
        if not r.reachable:
            table.add_row(r.name, r.address, *[""] * 10, f"[red]{r.verdict}[/]")
            continue
        mem = f"{r.mem_avail_mb}/{r.mem_total_mb} MB" if r.mem_total_mb else "?"
        clock = f"{r.freq_mhz}/{r.max_freq_mhz} MHz" if r.freq_mhz else "?"
        temp = f"{r.temp_c:.1f} °C" if r.temp_c is not None else "?"
        throttled = r.throttled or "?"
        if r.throttled_flags:
            throttled += " (" + ", ".join(r.throttled_flags) + ")"
        verdict = "[green]ready[/]" if r.ready else f"[red]{r.verdict}[/]"
        table.add_row(
            r.name, r.address, r.model or "?", r.arch, str(r.cores or "?"),
            " ".join(r.simd) or "-", mem,
            f"{r.disk_free_mb} MB" if r.disk_free_mb is not None else "?",
            f"{r.os} / {r.python or '-'}", temp, clock, throttled, verdict,
        )
    return table
