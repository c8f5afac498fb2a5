"""`edgekit serve`, `edgekit infer`, `edgekit bench`: the API server and its two clients."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from edgekit.cli._endpoint import NODES_OPTION, endpoint
from edgekit.cli._output import console, emit_json, err_console, json_option
from edgekit.errors import InputError

_URL = click.option("--url", default=None,
                    help="edgekit API server (default: http://127.0.0.1:8000, or the one "
                    "deployed for --nodes).")
_TOKEN = click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
                      help="File holding the bearer token (else $EDGEKIT_SERVE_TOKEN).")
_INSECURE = click.option("--insecure", is_flag=True,
                         help="https:// without verifying the server's certificate (the "
                         "token can then go to whoever answers).")
_RETRY = click.option("--retry-for", default=10.0, show_default=True, type=float,
                      help="Seconds to keep retrying while the API is unreachable or answers "
                      "503 with Retry-After (0: never).")


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    from edgekit.tokenfile import read_token

    return read_token(path)


@click.command()
@click.argument("model_args", metavar="[MODEL_FILE | NAME=PATH]...", nargs=-1)
@click.option("--local", is_flag=True,
              help="Start a one-node Ray of its own on this machine (token auth, stopped on "
              "exit) and serve the model there: the fastest way to try a model.")
@click.option("--ray-address", default=None,
              help="Ray cluster address (default: auto, the edgekit cluster on this machine; "
              "refused fast if it is not one).")
@click.option("--model", "models", multiple=True,
              help="NAME=BUNDLE_DIR_OR_MODEL_FILE (repeatable; or give them as arguments).")
@click.option("--nodes", default=None, help="Comma-separated node names (default: all).")
@click.option("--min-nodes", default=1, show_default=True, type=click.IntRange(min=1),
              help="Of --nodes, serve once this many are in the Ray cluster; the others "
              "join when they come up.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@_TOKEN
@click.option("--max-queue", default=4, show_default=True, type=int,
              help="Requests in flight per replica before 503.")
@click.option("--threads", default=None, type=int,
              help="Runtime threads per worker (default: the node's Ray CPUs).")
@click.option("--compress", is_flag=True, help="int8-compress tensors between pipeline stages.")
@click.option("--transport", type=click.Choice(["direct", "ray"]), default="direct",
              show_default=True, help="Request tensors over the authenticated direct channel "
              "to each worker, or as Ray actor calls (slower; the baseline).")
@click.option("--node-bundles", is_flag=True,
              help="Workers load the copy `edgekit deploy` pushed to their node (sha256-checked).")
@click.option("--batch", "batches", multiple=True,
              help="MODEL=MAX_BATCH[:MAX_WAIT_MS] dynamic batching (repeatable).")
@click.option("--controller", "controllers", multiple=True,
              help="Routing controller: 'thermal' or module:Class (repeatable).")
@click.option("--max-body-mb", default=64, show_default=True, type=int,
              help="Largest body (binary tensors); fixed-shape models get their exact size.")
@click.option("--max-json-mb", default=16, show_default=True, type=int,
              help="Largest JSON text (it costs ~12x its size to parse).")
@click.option("--memory-budget-mb", default=None, type=int,
              help="Memory the request bodies in flight may cost (default: RAM/8, "
              "64..1024 MiB); over it: 503 + Retry-After.")
@click.option("--deadline", "deadlines", multiple=True,
              help="[MODEL=]SECONDS a worker call may take before 504 (default: 10x the "
              "model's p99 on that replica, at least 10 s; 300 s before it has one; "
              "repeatable).")
@click.option("--idle-timeout", default=15.0, show_default=True, type=float,
              help="Seconds before an idle connection (or one still sending headers) closes.")
@click.option("--body-timeout", default=10.0, show_default=True, type=float,
              help="Seconds without a body byte before a request is cut off (408).")
@click.option("--allow-unauthenticated", is_flag=True,
              help="Serve off loopback without a bearer token (refused otherwise).")
@click.option("--power-cap", "power_cap_w", type=float, default=None,
              help="Cluster power cap in watts (turns on the thermal controller).")
@json_option
# reason: a click command takes one parameter per option
def serve(model_args, local, ray_address, models, nodes, min_nodes, host, port, token_file,
          max_queue, threads, compress, transport, node_bundles, batches, controllers, max_body_mb,
          max_json_mb, memory_budget_mb, deadlines, idle_timeout, body_timeout,
          allow_unauthenticated, power_cap_w, as_json) -> None:
    """Place workers on the Ray nodes and serve the inference API until stopped.

    `edgekit serve --local model.onnx` serves one model file on this machine alone."""
    import contextlib

    from edgekit.serve.preflight import check_models
    from edgekit.tokenfile import check_private

    models = (*models, *model_args)
    if local and (ray_address or nodes or node_bundles):
        raise click.UsageError("--local starts its own Ray: it takes no --ray-address, "
                               "--nodes or --node-bundles")
    if token_file is not None:  # before Ray or a worker is touched
        check_private(token_file)
    check_models(models)  # a wrong path is named now, not after joining Ray
    if local:
        from edgekit.serve.local import local_ray

        own_ray = local_ray(host, port)  # its token is in our env before Ray is imported
    else:
        own_ray = contextlib.nullcontext()
    with own_ray as node:
        _serve(node, {**click.get_current_context().params, "models": models})


def _serve(node, p: dict) -> None:
    """The serve command once its input is checked; `node`: the --local Ray, if any."""
    from edgekit.serve.preflight import check_cluster
    from edgekit.serve.server import check_exposure, run

    config = _config(p)
    check_exposure(config, config.token())  # before Ray is touched
    if p["allow_unauthenticated"] and config.token() is None:
        err_console.print(f"[yellow]warning:[/] serving on {config.host} without a bearer "
                          "token (--allow-unauthenticated)")
    if node is not None:
        if not p["as_json"]:
            err_console.print(f"starting a one-node Ray on this machine ({node.cpus} CPUs, "
                              f"token auth, in {node.root})…")
        config.ray_address = node.start()
    else:  # fails fast on an unreachable, foreign or non-edgekit Ray cluster
        config.ray_address = check_cluster(p["ray_address"], config.nodes, config.min_nodes)
    if not p["as_json"]:
        err_console.print("placing workers on the Ray nodes…")
    run(config, _on_ready(node, p))


def _config(p: dict):
    """The ServeConfig the command's options describe."""
    import dataclasses
    import os

    from edgekit.serve.server import ServeConfig
    from edgekit.serve.settings import Tunables

    controllers = list(p["controllers"])
    if p["power_cap_w"] is not None:  # the thermal controller reads it when it is built
        os.environ["EDGEKIT_POWER_CAP_W"] = str(p["power_cap_w"])
        controllers += [] if "thermal" in controllers else ["thermal"]
    tunables = dataclasses.replace(Tunables(), keepalive_timeout_s=p["idle_timeout"],
                                   body_idle_timeout_s=p["body_timeout"])
    mib = 1024 * 1024
    return ServeConfig(
        models=list(p["models"]), ray_address=p["ray_address"],
        nodes=[n for n in p["nodes"].split(",") if n] if p["nodes"] else None,
        min_nodes=p["min_nodes"],
        host=p["host"], port=p["port"], token_file=p["token_file"],
        max_body_bytes=p["max_body_mb"] * mib, max_json_bytes=p["max_json_mb"] * mib,
        memory_budget_bytes=p["memory_budget_mb"] * mib if p["memory_budget_mb"] else None,
        deadlines=_pairs(p["deadlines"], "--deadline", "[MODEL=]SECONDS", float, "*"),
        allow_unauthenticated=p["allow_unauthenticated"], max_queue=p["max_queue"],
        threads=p["threads"], compress=p["compress"], transport=p["transport"],
        batching=_batching(p["batches"]), controllers=controllers,
        node_bundles=p["node_bundles"], tunables=tunables)


def _on_ready(node, p: dict):
    """What to print once serving: the URL, and with --local how to call it."""
    url = f"http://{p['host']}:{p['port']}"

    def ready(state) -> None:
        info = {"url": url, "models": sorted(state.pool.models),
                "replicas": state.pool.describe()}
        if node is not None:
            from edgekit.serve.local import how_to_call

            info["local_ray"] = {"address": node.address, "folder": str(node.root)}
            info["try"] = how_to_call(url, info["models"], p["token_file"])
        if p["as_json"]:
            emit_json(info)
            return
        console.print(f"serving {', '.join(info['models'])} on {url} "
                      f"({len(info['replicas'])} replicas); Ctrl-C stops")
        for line in info.get("try", []):
            console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)

    return ready


def _batching(batches: tuple[str, ...]) -> dict[str, tuple[int, float]]:
    batching: dict[str, tuple[int, float]] = {}
    for b in batches:
        name, _, spec = b.partition("=")
        size, _, wait = spec.partition(":")
        try:
            batching[name] = (int(size), float(wait or 2.0))
        except ValueError:
            raise InputError(f"--batch expects MODEL=MAX_BATCH[:MAX_WAIT_MS], got '{b}'") from None
    return batching


def _pairs(values: tuple[str, ...], option: str, form: str, conv, default_key: str) -> dict:
    """`NAME=VALUE` or a bare `VALUE` (for every model: `default_key`) into a dict."""
    out = {}
    for v in values:
        name, _, value = v.rpartition("=")
        try:
            parsed = conv(value)
        except ValueError:
            parsed = None
        if parsed is None or not 0 < parsed < float("inf"):
            raise InputError(f"{option} expects {form} with a positive number, got '{v}'")
        out[name or default_key] = parsed
    return out


def _load_input(path: Path, meta: dict) -> dict:
    import numpy as np

    inputs = meta["inputs"]
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    arr = np.load(path) if path.suffix == ".npy" else _image(path, inputs[0])
    if len(inputs) != 1:
        raise InputError(f"model has {len(inputs)} inputs: give an .npz with each by name")
    want = inputs[0]["datatype"]
    from edgekit.oipwire import OIP_TO_NUMPY

    return {inputs[0]["name"]: arr.astype(OIP_TO_NUMPY[want], copy=False)}


def _image(path: Path, spec: dict):
    """An image resized to the input's H,W, scaled to [0,1], NCHW or NHWC by the shape."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    shape = spec["shape"]
    if len(shape) != 4:
        raise InputError(f"input '{spec['name']}' has shape {shape}: not an image input")
    nhwc = shape[3] in (1, 3)
    h, w = (shape[1], shape[2]) if nhwc else (shape[2], shape[3])
    h, w = (h if h > 0 else 224), (w if w > 0 else 224)
    try:
        img = Image.open(path).convert("RGB").resize((w, h))
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read image: {exc}", where=str(path)) from exc
    arr = np.asarray(img, dtype=np.float32)[None] / 255.0
    return arr if nhwc else arr.transpose(0, 3, 1, 2)


@click.command()
@_URL
@click.option("--model", required=True)
@click.option("--input", "input_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=".npy (single input), .npz (by name) or an image.")
@click.option("--top-k", default=5, show_default=True, type=int)
@click.option("--labels", "labels_path", type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path),
              help="Class labels, one per line: read a [1, N] output as N classes.")
@_TOKEN
@_INSECURE
@_RETRY
@NODES_OPTION
@json_option
# reason: a click command takes one parameter per option
def infer(url, model, input_path, top_k, labels_path, token_file, insecure, retry_for,
          nodes_file, as_json) -> None:
    """Send one request and print the outputs: the top-k classes of a classifier (a [1, N]
    softmax, or any [1, N] output given --labels), else the tensor or its summary."""
    from edgekit.cli._clientview import entry_lines, output_entry, read_labels
    from edgekit.client import Client

    labels = read_labels(labels_path) if labels_path is not None else None

    # open (a tunnel to a head node's API) until the command ends
    url, token_file = click.get_current_context().with_resource(
        endpoint(url, token_file, nodes_file))
    client = Client(url, token=_read_token(token_file), insecure=insecure, retry_for_s=retry_for)
    feeds = _load_input(input_path, client.metadata(model))
    out = client.infer(model, feeds)
    result = {"model": model, "node": client.last_node, "compute_ms": client.last_compute_ms,
              "outputs": {}}
    for name, arr in out.items():
        result["outputs"][name] = output_entry(name, arr, top_k, labels)
    if as_json:
        emit_json(result)
        return
    console.print(f"[bold]{model}[/] on {result['node']} ({result['compute_ms']} ms compute)")
    for name, entry in result["outputs"].items():
        for line in entry_lines(name, entry):
            console.print(line, markup=False, highlight=False)


@click.command()
@_URL
@click.option("--model", required=True)
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False,
                                                        path_type=Path),
              help="Input file (default: random data of --shape or the model's shape).")
@click.option("--shape", default=None, help="Shape for random input, e.g. 1,3,48,192.")
@click.option("--concurrency", default=4, show_default=True, type=int, help="Closed loop.")
@click.option("--rate", default=None, type=float, help="Open loop: requests per second.")
@click.option("--duration", default=10.0, show_default=True, type=float, help="Seconds.")
@click.option("--max-refused", default=0.5, show_default=True,
              type=click.FloatRange(0.0, 1.0),
              help="Largest share of requests refused with 503 (overload) for a passing run.")
@_TOKEN
@_INSECURE
@_RETRY
@NODES_OPTION
@json_option
# reason: a click command takes one parameter per option
def bench(url, model, input_path, shape, concurrency, rate, duration, max_refused, token_file,
          insecure, retry_for, nodes_file, as_json) -> None:
    """Load-test a served model: throughput, p50/p95/p99/max, errors, per-node share.

    Exit 1 when the run failed: any request errored, more than --max-refused of them were
    refused (503), or none succeeded; the last line (and `verdict` in --json) says which.
    """
    import asyncio
    import time

    import numpy as np
    from rich.progress import Progress

    from edgekit.client import Client
    from edgekit.oipwire import OIP_TO_NUMPY
    from edgekit.serve.loadgen import BenchSettings, run_bench

    # open (a tunnel to a head node's API) until the command ends
    url, token_file = click.get_current_context().with_resource(
        endpoint(url, token_file, nodes_file))
    token = _read_token(token_file)
    meta = Client(url, token=token, insecure=insecure, retry_for_s=retry_for).metadata(model)
    if input_path is not None:
        feeds = _load_input(input_path, meta)
    else:
        feeds = {}
        for spec in meta["inputs"]:
            dims = [int(d) for d in shape.split(",")] if shape else [
                d if d > 0 else 1 for d in spec["shape"]]
            feeds[spec["name"]] = np.random.default_rng(0).random(dims).astype(
                OIP_TO_NUMPY[spec["datatype"]])
    with Progress(console=err_console, transient=True, disable=as_json) as progress:
        task = progress.add_task(f"bench {model}", total=duration)
        start = time.perf_counter()

        def tick() -> None:
            progress.update(task, completed=min(duration, time.perf_counter() - start))

        report = asyncio.run(run_bench(url, model, feeds, BenchSettings(
            duration, concurrency, rate, token, insecure=insecure, retry_for_s=retry_for,
            progress=tick)))
    s = report.summary()
    from edgekit.cli._clientview import EXIT_BENCH_FAILED, bench_verdict

    s["verdict"] = verdict = bench_verdict(s, max_refused)
    if as_json:
        emit_json(s)
    else:
        _print_bench(s)
    if not verdict["passed"]:
        raise SystemExit(EXIT_BENCH_FAILED)


def _print_bench(s: dict) -> None:
    lat, verdict = s["latency_ms"], s["verdict"]
    console.print(f"[bold]{s['model']}[/] {s['mode']}, {s['duration_s']} s: "
                  f"{s['throughput_per_s']} req/s, {s['requests']} requests: ok {s['ok']}, "
                  f"refused (503) {s['refused_503']} ({verdict['refused_share']:.0%}), "
                  f"errors {s['errors']}")
    if s["retried"]:
        console.print(f"  API unreachable: {s['retried']} retries, longest outage "
                      f"ridden out {s['outage_s']} s")
    console.print(f"  latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  "
                  f"max {lat['max']}")
    console.print("  node share: " + ", ".join(f"{n} {v:.0%}"
                                                for n, v in s["node_share"].items()))
    if s["energy"]:
        e = s["energy"]
        nodes = ", ".join(f"{n} {v:.3g}" for n, v in e["nodes"].items() if v is not None)
        console.print(f"  energy: {e['j_per_inference']} J/inference at {e['power_w']} W "
                      f"(cluster); per node J/inference: {nodes or 'n/a'}")
    for e in s["error_samples"]:
        console.print(f"  [red]error:[/] {escape(str(e))}")
    if verdict["passed"]:
        console.print("[green]passed[/]")
    else:
        console.print(f"[red]FAILED:[/] {escape('; '.join(verdict['problems']))}")
