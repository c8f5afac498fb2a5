"""`edgekit monitor` (live dashboard of a running server) and `edgekit report` (pictures of a
recorded run)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from edgekit.cli._endpoint import NODES_OPTION, endpoint
from edgekit.cli._output import console, emit_json, json_option


def _token(token_file: Path | None) -> str | None:
    if token_file is not None:
        from edgekit.tokenfile import read_token

        return read_token(token_file)
    return os.environ.get("EDGEKIT_SERVE_TOKEN") or None


@click.command()
@click.option("--url", default=None,
              help="Base URL of `edgekit serve` [default: http://127.0.0.1:8000].")
@NODES_OPTION
@click.option("--once", is_flag=True, help="Show one frame and exit.")
@click.option(
    "--interval-s",
    type=float,
    default=1.0,
    show_default=True,
    help="Refresh period of the live view.",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Bearer token for the API (default: $EDGEKIT_SERVE_TOKEN).",
)
@json_option
def monitor(
    url: str | None, nodes_file: Path | None, once: bool, interval_s: float,
    token_file: Path | None, as_json: bool
) -> None:
    """Live per-node temperature, clock, throttling, power, load and routing state."""
    with endpoint(url, token_file, nodes_file) as (base, token_path):
        _monitor(base, once, interval_s, _token(token_path), as_json)


def _monitor(url: str, once: bool, interval_s: float, token: str | None, as_json: bool) -> None:
    from edgekit.thermal.monitor import fetch_status, render, snapshot

    if as_json:
        if not once:
            raise click.UsageError("--json prints one snapshot: use it with --once")
        emit_json(snapshot(fetch_status(url, token)))
        return
    if once:
        console.print(render(fetch_status(url, token)))
        return
    from rich.live import Live

    with Live(render(fetch_status(url, token)), console=console, refresh_per_second=4) as live:
        while True:
            time.sleep(interval_s)
            live.update(render(fetch_status(url, token)))


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Picture to write: .html (charts + summary), .svg or .png.",
)
@click.option("--title", help="Title shown on the page (default: the run folder).")
@json_option
def report(run_dir: Path, out: Path, title: str | None, as_json: bool) -> None:
    """Plot temperature, clock, throughput and power per node from a recorded run."""
    from edgekit.thermal.report import write_report

    summary = write_report(run_dir, out, title)
    if as_json:
        emit_json({"output": str(out), "nodes": summary})
        return
    from rich.table import Table

    table = Table("node", "max °C", "s throttled", "mean W", "energy J", "requests", "duration s")
    for node, s in summary.items():
        table.add_row(node, *("-" if v is None else str(v) for v in s.values()))
    console.print(table)
    console.print(f"wrote {out}")
