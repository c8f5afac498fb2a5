"""`edgekit demo`: the main job end to end on the built-in virtual Pi cluster.

It uses only the pieces a user would call by hand, through their Python APIs: `cluster up`,
`nodes check`, `deploy` of a real model, `bench` against the cluster's inference API,
`undeploy` and `cluster down`.
"""

from __future__ import annotations

import time
from typing import Any

import click

from edgekit.cli._output import console, emit_json, err_console, json_option

DEFAULT_BOARDS = ("pi4:heatsink", "pi4:none", "pi5:fan")
DEFAULT_MODEL = "ppocr-cls"  # PP-OCRv4 text-direction classifier from rapidocr-onnxruntime


@click.command()
@click.option("--boards", default=",".join(DEFAULT_BOARDS), show_default=True,
              help="Comma list of BOARD:COOLING for the virtual nodes.")
@click.option("--model", "model_name", default=DEFAULT_MODEL, show_default=True,
              help="Sample model to deploy (see edgekit.model.samples).")
@click.option("--bench-seconds", type=float, default=10.0, show_default=True)
@click.option("--keep", is_flag=True, help="Leave the cluster and the deployment running.")
@json_option
def demo(boards: str, model_name: str, bench_seconds: float, keep: bool, as_json: bool) -> None:
    """Virtual Pi cluster: up, check over SSH, deploy a real model, bench it, tear down."""
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
    deployed = failed = False  # a deploy that failed half way is undeployed too
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
        deployed = failed = True
        summary["deploy"], url = _deploy(cluster.inventory_path, model_name, step, as_json)
        step("bench", seconds=bench_seconds)
        summary["bench"] = _bench(cluster.inventory_path, url, model_name, bench_seconds)
        if not as_json:
            _print_bench(summary["bench"])
        failed = False
    finally:
        if not keep and deployed:
            _undeploy(cluster.inventory_path, step, quiet=failed)
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


def _undeploy(inv: Any, step: Any, quiet: bool) -> None:
    """Take the deployment down (the host's head services too, which `cluster.down` does not
    stop). After a failure its own error is printed, not raised: the first one is the news."""
    from edgekit.deploy import ops

    step("undeploy")
    try:
        ops.undeploy(inv).raise_if_failed("the demo's undeploy failed")
    except Exception as exc:
        if not quiet:
            raise
        err_console.print(f"[yellow]undeploy after the failure: {exc}[/]", highlight=False)


def _deploy(inv: Any, model_name: str, step: Any, as_json: bool) -> tuple[dict[str, Any], str]:
    from edgekit.deploy.flow import DeployOptions, deploy
    from edgekit.model import samples

    model = samples.path(model_name)
    step("deploy", model=f"{model_name} ({model.name})")
    from edgekit.cli.deploy import _Bars, _progress

    with _progress(as_json) as progress:  # disabled under --json
        res = deploy(DeployOptions(inv, model, name=model_name, offline=True), _Bars(progress))
    res.raise_if_failed("the demo's deploy failed")  # FleetError: every node's outcome
    if not res.head.get("api_url"):
        raise click.ClickException("the demo's deploy gave no API URL")
    info = {"seconds": round(res.seconds, 1), "api_url": res.head["api_url"],
            "nodes": {n: r.version for n, r in res.nodes.items()}}
    return info, res.head["api_url"]


def _bench(inv: Any, url: str, model_name: str, seconds: float) -> dict[str, Any]:
    import asyncio

    import numpy as np

    from edgekit.client import Client
    from edgekit.deploy.layout import deployment_dir
    from edgekit.serve.loadgen import BenchSettings, run_bench
    from edgekit.serve.tensors import OIP_TO_NUMPY

    token = (deployment_dir(inv) / "api-token").read_text().strip()
    meta = Client(url, token=token).metadata(model_name)
    rng = np.random.default_rng(0)
    feeds = {spec["name"]: rng.random([d if d > 0 else 1 for d in spec["shape"]])
             .astype(OIP_TO_NUMPY[spec["datatype"]]) for spec in meta["inputs"]}
    settings = BenchSettings(seconds, concurrency=4, token=token)
    report = asyncio.run(run_bench(url, model_name, feeds, settings))
    return report.summary()


def _print_bench(result: dict[str, Any]) -> None:
    lat = result["latency_ms"]
    console.print(
        f"[bold]{result['model']}[/]: {result['throughput_per_s']} inferences/s over "
        f"{result['duration_s']} s, p50 {lat['p50']} ms, p95 {lat['p95']} ms, "
        f"p99 {lat['p99']} ms, errors {result['errors']}, refused {result['refused_503']}"
    )
    share = ", ".join(f"{n} {v:.0%}" for n, v in result["node_share"].items())
    console.print(f"per-node share: {share}")


def _spec(node_spec: Any, item: str) -> Any:
    board, _, cooling = item.strip().partition(":")
    return node_spec(board=board, cooling=cooling or "heatsink")
