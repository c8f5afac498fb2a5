"""`edgekit deploy | status | rollback | undeploy | logs`: the cluster from one inventory."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.progress import Progress

from edgekit.cli._deployview import Bars, exit_code, progress, result_view
from edgekit.cli._output import console, emit_json, err_console, json_option
from edgekit.cli._params import model_name, version_name
from edgekit.cli.nodes import ACCEPT_OPTION, NODES_OPTION, runtime_lines

_Bars = Bars  # (`edgekit demo` draws its deploy with these two)


def _progress(as_json: bool) -> Progress:
    """Per-node deploy progress on stderr; off under --json or when stderr is not a terminal."""
    return progress(err_console, as_json or not err_console.is_terminal)


def _finish(res, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    if as_json:
        emit_json(res.to_dict())
    else:
        console.print(result_view(res))
        if res.head.get("warning"):
            err_console.print(f"[yellow]warning:[/] {escape(res.head['warning'])}")
    code = exit_code(res)
    if code:
        raise SystemExit(code)


@click.command("deploy")
@NODES_OPTION
@ACCEPT_OPTION
@click.argument("target", type=click.Path(exists=True, path_type=Path))
@click.option("--name", default=None, callback=model_name,
              help="Model name (default: the bundle's).")
@click.option("--replicas", type=int, default=None, help="At most this many replicas.")
@click.option("--stages", type=int, default=None, help="Bundle a model file as K stages.")
@click.option("--offline", is_flag=True, help="Install the runtime from a host-built wheelhouse.")
@click.option("--strict", is_flag=True, help="Abort before touching any node if one is unfit.")
@click.option("--dry-run", is_flag=True, help="Check and plan only.")
@click.option("--keep", "keep_versions", type=int, default=3, show_default=True,
              help="Versions kept on each node for rollback.")
@click.option("--timeout", "verify_timeout_s", type=float, default=240.0, show_default=True,
              help="Seconds to wait for every worker's health check.")
@click.option("--min-nodes", "min_nodes", type=click.IntRange(min=1), default=1,
              show_default=True,
              help="Succeed once this many nodes serve (Ray up, self-test passed); the others "
                   "are named with why, exit 8, and join by themselves when they come up. "
                   "Default 1: a shelf is never all up, and one board down or slow must not "
                   "keep the rest from serving. Raise it when fewer boards cannot carry the "
                   "load; the API then also waits for that many after a restart.")
@click.option("--selftest/--no-selftest", default=True, show_default=True,
              help="Run the model once on each node and compare with the host before it "
                   "gets traffic (a node that answers wrongly or cannot load it is refused).")
@click.option("--selftest-timeout", "selftest_timeout_s", type=float, default=600.0,
              show_default=True, help="Seconds a node's self-test may take (emulated nodes "
                                      "are slow).")
@click.option("--port", "api_port", type=int, default=None, help="API port on the head.")
@click.option("--api-host", default="127.0.0.1", show_default=True,
              help="Address the API binds on the head (0.0.0.0: the LAN; the bearer token is "
                   "always required). On a role=head node's loopback, edgekit's own commands "
                   "reach it through an SSH tunnel.")
@click.option("--thermal/--no-thermal", default=True, show_default=True,
              help="Steer routing by node temperature and power (edgekit.thermal).")
@click.option("--power-cap", "power_cap_w", type=float, default=None,
              help="Cluster power cap in watts (admission control + routing weights).")
@json_option
def deploy(nodes_file: str, accept_new_host_keys: bool, target: Path, as_json: bool,
           **opts: object) -> None:
    """Provision the nodes, push MODEL_OR_BUNDLE over SSH, start Ray and the API, verify.

    Exit 0: every node serves (or, with --dry-run, was checked and planned). Exit 8: served,
    degraded: at least --min-nodes nodes serve the model, others do not (the result names
    each with why, and whether it joins by itself). Exit 4: failed, fewer than --min-nodes
    serve. Exit 3: bad input.
    """
    from edgekit.deploy.flow import DeployOptions
    from edgekit.deploy.flow import deploy as run

    options = DeployOptions(Path(nodes_file), target,
                            accept_new_host_keys=accept_new_host_keys, **opts)  # type: ignore[arg-type]
    with _progress(as_json) as bars:
        res = run(options, Bars(bars))
    if not as_json and res.plan:
        console.print("plan:\n  " + "\n  ".join(res.plan), highlight=False)
    _finish(res, as_json)


@click.command("status")
@NODES_OPTION
@ACCEPT_OPTION
@json_option
def status(nodes_file: str, accept_new_host_keys: bool, as_json: bool) -> None:
    """What runs where, per node: the version on disk and the one its workers serve (a
    mismatch is flagged, with what to do), services, health, temperature, throttling,
    drain and weight. Exit 4 when the API is not ready, a node does not serve, or a
    node's disk and workers disagree."""
    from edgekit.deploy import ops

    st = ops.status(Path(nodes_file), accept_new_host_keys).to_dict()
    if as_json:
        emit_json(st)
    else:
        from edgekit.cli._deployview import status_boards, status_view

        console.print(status_view(st, status_boards(Path(nodes_file))))
        workers = st["nodes"].items()
        for line in runtime_lines({k: (n["onnxruntime"], n["litert"]) for k, n in workers
                                   if n.get("kernels")}):
            console.print(f"workers: {line}", highlight=False)
    if (not st["api_ready"] or st["mismatch"]
            or not all(n["healthy"] for n in st["nodes"].values())):
        raise SystemExit(4)


@click.command("rollback")
@NODES_OPTION
@ACCEPT_OPTION
@click.option("--model", default=None, callback=model_name,
              help="Model to roll back (default: the deployed one).")
@click.option("--to", "to", default=None, callback=version_name,
              help="Version id (default: the previous one).")
@json_option
def rollback(nodes_file: str, accept_new_host_keys: bool, model: str | None, to: str | None,
             as_json: bool) -> None:
    """Switch every node back to the previous version (same atomic switch as deploy)."""
    from edgekit.deploy import ops

    _finish(ops.rollback(Path(nodes_file), model, to, accept_new_host_keys), as_json)


@click.command("undeploy")
@NODES_OPTION
@ACCEPT_OPTION
@click.option("--purge", is_flag=True, help="Also remove the cached node runtime.")
@json_option
def undeploy(nodes_file: str, accept_new_host_keys: bool, purge: bool, as_json: bool) -> None:
    """Stop every service and remove deployed files (the runtime stays unless --purge)."""
    from edgekit.deploy import ops

    _finish(ops.undeploy(Path(nodes_file), purge, accept_new_host_keys), as_json)


@click.command("logs")
@NODES_OPTION
@ACCEPT_OPTION
@click.argument("node")
@click.option("--service", default="ray-worker", show_default=True,
              type=click.Choice(["ray-worker", "agent", "supervisor", "api", "ray-head"]))
@click.option("-n", "--lines", type=int, default=50, show_default=True)
@json_option
def logs(nodes_file: str, accept_new_host_keys: bool, node: str, service: str, lines: int,
         as_json: bool) -> None:
    """Show the tail of a service's log on NODE (`head`: where the Ray head and API run; on a
    role=head node `ray-head` is its ray-worker service, started as the head)."""
    from edgekit.deploy import ops

    text = ops.logs(Path(nodes_file), node, service, lines, accept_new_host_keys)
    if as_json:
        emit_json({"node": node, "service": service, "log": text})
    else:
        click.echo(text, nl=not text.endswith("\n"))
