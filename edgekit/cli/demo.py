"""`edgekit demo`: the main job end to end on the built-in virtual Pi cluster.

It uses only public pieces a user would call by hand: `cluster up`, `nodes check`, and then
whatever later stages exist (deploy, bench), each through its own Python API, and `cluster down`.
"""

from __future__ import annotations

import time
from typing import Any

import click

from edgekit.cli._output import console, emit_json, err_console, json_option

DEFAULT_BOARDS = ("pi4:heatsink", "pi4:none", "pi5:fan")


@click.command()
@click.option("--boards", default=",".join(DEFAULT_BOARDS), show_default=True,
              help="Comma list of BOARD:COOLING for the virtual nodes.")
@click.option("--keep", is_flag=True, help="Leave the virtual cluster running at the end.")
@json_option
def demo(boards: str, keep: bool, as_json: bool) -> None:
    """Bring up a virtual Pi cluster, check it over SSH, and tear it down."""
    from edgekit.remote.probe import check_nodes
    from edgekit.virtual.cluster import NodeSpec, VirtualCluster

    specs = [_spec(NodeSpec, item) for item in boards.split(",") if item.strip()]
    summary: dict[str, Any] = {"steps": []}
    started = time.monotonic()

    def step(name: str, **info: Any) -> None:
        summary["steps"].append({"step": name, "at_s": round(time.monotonic() - started, 1),
                                 **info})
        if not as_json:
            err_console.print(f"[bold cyan]==>[/] {name}")

    step("cluster up", boards=boards)
    cluster = VirtualCluster.up(specs, progress=lambda msg: None if as_json
                                else err_console.print(f"    {msg}", highlight=False))
    try:
        from edgekit import inventory

        inv = inventory.load(cluster.inventory_path)
        step("nodes check", inventory=str(cluster.inventory_path))
        reports = check_nodes(list(inv))
        summary["nodes"] = [r.to_dict() for r in reports]
        if not as_json:
            from edgekit.cli.nodes import _table

            console.print(_table(reports))
        ready = sum(r.ready for r in reports)
        summary["ready"] = f"{ready}/{len(reports)}"
        if ready != len(reports):
            raise click.ClickException(f"only {ready}/{len(reports)} virtual nodes are ready")
    finally:
        if keep:
            step("kept running", inventory=str(cluster.inventory_path))
        else:
            step("cluster down")
            cluster.down()
    summary["seconds"] = round(time.monotonic() - started, 1)
    if as_json:
        emit_json(summary)
    else:
        console.print(f"[green]demo finished in {summary['seconds']} s[/]")


def _spec(node_spec: Any, item: str) -> Any:
    board, _, cooling = item.strip().partition(":")
    return node_spec(board=board, cooling=cooling or "heatsink")
