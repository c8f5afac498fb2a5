"""Overload and an API crash on a real deployment (issue 12 acceptance, point 3).

    sudo .venv/bin/python benchmarks/serve_outage.py [--overload-s 60] [--json F]
    sudo .venv/bin/python benchmarks/serve_outage.py --inventory INV --model NAME

Without --inventory it brings up the demo's virtual cluster (pi4:heatsink, pi4:none, pi5:fan),
deploys ppocr-cls with the head on this host (Ray head + API under edgekit's supervisor, the
thermal controller attached), and tears everything down at the end. Then two phases:

1. Overload: closed-loop clients at 4x the cluster's queue capacity (replicas x the API's
   max queue per replica) for `--overload-s`. Every answer must be a 200, or a 503 that
   carries `Retry-After`; anything else (a 500, a 503 without Retry-After, a dropped
   connection) is counted as a failure.
2. Crash: a 4-client `edgekit bench` (retrying by default) and a probe that sends one request
   every 20 ms without retries; the API process is SIGKILLed; the supervisor restarts it.
   Measured: from the kill to the probe's first 200 (the outage, restart and worker reload
   included), and what the bench lost (must be nothing).

Run it alone: it measures time on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("RAY_AUTH_MODE", "token")

BOARDS = ("pi4:heatsink", "pi4:none", "pi5:fan")


def _feeds(url: str, token: str, model: str) -> dict[str, np.ndarray]:
    from edgekit.client import Client
    from edgekit.serve.tensors import OIP_TO_NUMPY

    meta = Client(url, token=token).metadata(model)
    rng = np.random.default_rng(0)
    return {s["name"]: rng.random([d if d > 0 else 1 for d in s["shape"]])
            .astype(OIP_TO_NUMPY[s["datatype"]]) for s in meta["inputs"]}


async def _overload(url: str, token: str, model: str, feeds: dict, clients: int,
                    seconds: float) -> dict[str, Any]:
    """Closed loop, no retries: count every answer by status (and Retry-After on 503s)."""
    import aiohttp

    from edgekit.client import HEADER_LENGTH, encode

    body, n = encode(feeds)
    headers = {"Authorization": f"Bearer {token}", HEADER_LENGTH: str(n),
               "Content-Type": "application/octet-stream"}
    seen: Counter = Counter()
    samples: list[str] = []
    deadline = time.perf_counter() + seconds

    async def loop(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            try:
                async with session.post(f"{url}/v2/models/{model}/infer", data=body,
                                        headers=headers) as r:
                    data = await r.read()
                    kind = str(r.status)
                    if r.status == 503:
                        kind = "503+Retry-After" if r.headers.get("Retry-After") else "503 bare"
                    seen[kind] += 1
                    if r.status not in (200, 503) and len(samples) < 5:
                        samples.append(f"{r.status}: {data[:160]!r}")
                    if r.status == 503:
                        await asyncio.sleep(0.01)  # a polite client would wait Retry-After
            except (aiohttp.ClientError, TimeoutError) as exc:
                seen[f"error {type(exc).__name__}"] += 1

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(loop(session) for _ in range(clients)))
    bad = sum(c for k, c in seen.items() if k not in ("200", "503+Retry-After"))
    return {"clients": clients, "seconds": seconds, "answers": dict(seen), "failures": bad,
            "samples": samples, "pass": bad == 0 and seen["200"] > 0}


def _api_pid(head_root: Path) -> int:
    from edgekit.node import supervisor

    svc = supervisor.status(head_root)["services"].get("api") or {}
    if not svc.get("pid"):
        raise SystemExit(f"no running api service under {head_root}")
    return int(svc["pid"])


def _probe(url: str, token: str, model: str, feeds: dict, stop: threading.Event,
           log: list[tuple[float, bool]]) -> None:
    """One request every 20 ms, no retries: (time, answered 200) per attempt."""
    from edgekit.client import Client, ServeError

    client = Client(url, token=token, timeout_s=5.0, retry_for_s=0)
    while not stop.is_set():
        try:
            client.infer(model, feeds)
            ok = True
        except (ServeError, OSError):
            ok = False
        log.append((time.monotonic(), ok))
        time.sleep(0.02)


def _crash(url: str, token: str, model: str, feeds: dict, head_root: Path,
           seconds: float) -> dict[str, Any]:
    from edgekit.serve.loadgen import BenchSettings, run_bench

    out: dict[str, Any] = {}
    stop, probes = threading.Event(), []
    bench = threading.Thread(target=lambda: out.setdefault("bench", asyncio.run(run_bench(
        url, model, feeds, BenchSettings(seconds, concurrency=4, token=token, retry_for_s=60),
    )).summary()))
    probe = threading.Thread(target=_probe, args=(url, token, model, feeds, stop, probes))
    bench.start()
    probe.start()
    time.sleep(min(8.0, seconds / 3))
    pid = _api_pid(head_root)
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    bench.join()
    stop.set()
    probe.join()
    back = next((t for t, ok in probes if t > killed and ok), None)
    new_pid = _api_pid(head_root)
    rep = out["bench"]
    return {"killed_pid": pid, "restarted_pid": new_pid,
            "outage_s": round(back - killed, 2) if back else None,
            "probe_failures": sum(1 for t, ok in probes if t > killed and not ok),
            "bench": {k: rep[k] for k in ("requests", "ok", "refused_503", "errors",
                                          "retried", "outage_s", "error_samples")},
            "pass": bool(back) and back - killed <= 5.0 and rep["errors"] == 0}


def _deploy(model: str) -> tuple[Any, Path]:
    from edgekit.deploy.flow import DeployOptions, deploy
    from edgekit.model import samples
    from edgekit.virtual.cluster import NodeSpec, VirtualCluster

    specs = [NodeSpec(board=b.split(":")[0], cooling=b.split(":")[1]) for b in BOARDS]
    cluster = VirtualCluster.up(specs, progress=lambda m: print(f"  {m}", flush=True))
    try:
        res = deploy(DeployOptions(cluster.inventory_path, samples.path(model), name=model,
                                   offline=True))
        if res.error or not res.head.get("api_url"):
            raise SystemExit(f"deploy failed: {res.error or res.nodes}")
    except BaseException:
        cluster.down()
        raise
    return cluster, cluster.inventory_path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inventory", type=Path, help="an existing deployment's inventory")
    ap.add_argument("--model", default="ppocr-cls")
    ap.add_argument("--overload-s", type=float, default=60.0)
    ap.add_argument("--crash-s", type=float, default=25.0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    from edgekit.deploy.layout import deployment_dir

    cluster = None
    if args.inventory is None:
        print("bringing up the virtual cluster and deploying", args.model, flush=True)
        cluster, args.inventory = _deploy(args.model)
    try:
        ddir = deployment_dir(args.inventory)
        token = (ddir / "api-token").read_text().strip()
        url = json.loads((ddir / "state.json").read_text())["head"]["api_url"]
        feeds = _feeds(url, token, args.model)
        status = _status(url, token)
        capacity = sum(r["max_queue"] for r in status["replicas"] if r["model"] == args.model)
        clients = 4 * capacity
        print(f"overload: {clients} clients (4 x queue capacity {capacity}) for "
              f"{args.overload_s:.0f} s; controllers {sorted(status['controllers'])}", flush=True)
        result = {"controllers": sorted(status["controllers"]),
                  "overload": asyncio.run(_overload(url, token, args.model, feeds, clients,
                                                    args.overload_s))}
        print(json.dumps(result["overload"]), flush=True)
        time.sleep(3.0)
        print("crash: SIGKILL the API under a 4-client bench", flush=True)
        result["crash"] = _crash(url, token, args.model, feeds, ddir / "head", args.crash_s)
        print(json.dumps(result["crash"]), flush=True)
    finally:
        if cluster is not None:
            from edgekit.deploy import ops

            with contextlib.suppress(Exception):
                ops.undeploy(args.inventory)
            cluster.down()
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    ok = result["overload"]["pass"] and result["crash"]["pass"]
    print("PASS" if ok else "FAIL", flush=True)
    return 0 if ok else 1


def _status(url: str, token: str) -> dict[str, Any]:
    """The API's /edgekit/status (replicas with their max queue, controllers attached)."""
    import urllib.request

    req = urllib.request.Request(f"{url}/edgekit/status",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


if __name__ == "__main__":
    sys.exit(main())
