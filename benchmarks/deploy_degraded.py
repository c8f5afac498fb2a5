"""8 virtual boards, 2 of them unable to start Ray (issue 16's first acceptance point): does
`edgekit deploy` end within its timeout, serve on the other 6 and name the 2, and do the 2
join once fixed, without a redeploy?

A virtual cluster of 8 boards (the demo's mix: Pi 4, Pi 4, Pi 5, repeated; heatsinks and
fans, no bare board, so no node drains for heat during the run) and the real PP-OCR
direction classifier:

  1. prepare   deploy all 8 once (installs the node runtimes), then `undeploy` without
               --purge: the runtimes stay, everything else (services, API, model files) goes,
               so the measured deploy starts the API from nothing without 8 runtime installs
  2. break     pi3 (Pi 5, systemd user units) and pi7 (Pi 4, edgekit's supervisor) get the
               .pth fault of test_deploy_degraded.py: every `ray start` there exits 1
  3. deploy    `edgekit deploy --nodes ... --json --timeout T` through the CLI, default
               --min-nodes: wall time, exit code (8 expected), each failed node's kind and
               hint; then `edgekit bench --nodes ...` (per-node share from the Edgekit-Node
               header) and the API's readiness
  4. heal      the fault removed from both at once: seconds from then until each has a
               live worker (/edgekit/status, polled every 0.5 s) and until it answers
               requests (1 s loadgen bursts once it is live), no deploy run; the API's
               uptime says whether it restarted
  5. teardown  undeploy --purge and the cluster down, also when a step fails

    sudo .venv/bin/python benchmarks/deploy_degraded.py [--timeout 900] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import deploy_world
from deploy_world import world

from edgekit.virtual.cluster import NodeSpec

MODEL = "ppocr-cls"
#: the demo's boards (edgekit/cli/demo.py) repeated to 8; its bare Pi 4 gets a heatsink
SPECS = [NodeSpec("pi4", cooling="heatsink"), NodeSpec("pi4", cooling="fan"),
         NodeSpec("pi5", cooling="fan"), NodeSpec("pi4", cooling="heatsink"),
         NodeSpec("pi4", cooling="fan"), NodeSpec("pi5", cooling="fan"),
         NodeSpec("pi4", cooling="heatsink", init="none"), NodeSpec("pi4", cooling="fan")]
NODES = [f"pi{i + 1}" for i in range(len(SPECS))]
#: a Pi 5 whose Ray runs as a user unit and a Pi 4 under edgekit's supervisor: both paths
SICK = ["pi3", "pi7"]
JOIN_WAIT_S = 600.0
#: the heal phase's resolution: a status poll every POLL_S until a healed node is live, then
#: loadgen bursts of BURST_S (between two status polls) until it answers
POLL_S = 0.5
BURST_S = 1.0


def _conn(inv: Path, node: str):  # type: ignore[no-untyped-def]
    from edgekit import inventory
    from edgekit.remote.ssh import Connection

    return Connection(inventory.load(inv).get(node))


def _prepare(inv: Path, timeout_s: float) -> dict[str, Any]:
    """Deploy all 8 (runtimes installed), then undeploy keeping the runtimes."""
    from edgekit.deploy import ops
    from edgekit.deploy.flow import DeployOptions, deploy
    from edgekit.model import samples

    t0 = time.monotonic()
    res = deploy(DeployOptions(inv, samples.path(MODEL), name=MODEL, offline=True,
                               verify_timeout_s=timeout_s))
    first = {"seconds": round(time.monotonic() - t0, 1), "outcome": res.outcome,
             "serving": res.serving}
    if res.outcome == "failed":  # degraded still installed the runtimes: go on, recorded
        raise SystemExit(f"the first deploy failed: {json.dumps(res.to_dict())[:3000]}")
    t0 = time.monotonic()
    ops.undeploy(inv).raise_if_failed("undeploy (keeping the runtimes) failed")
    kept = {}
    for node in NODES:
        with _conn(inv, node) as c:
            kept[node] = c.run("test -x $HOME/.edgekit/runtime/bin/python").ok
    if not all(kept.values()):  # then the measured deploy would install them again
        raise SystemExit(f"undeploy without --purge did not keep every runtime: {kept}")
    return {"first_deploy": first, "undeploy_s": round(time.monotonic() - t0, 1),
            "runtimes_kept": sorted(kept)}


def _cli(args: list[str], timeout_s: float) -> tuple[int, dict[str, Any], str, float]:
    """An edgekit command in its own process: exit code, its --json, stderr's tail, seconds."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "edgekit.cli.main", *args, "--json"],
                          capture_output=True, text=True, timeout=timeout_s,
                          env=os.environ.copy(), check=False)
    took = time.monotonic() - t0
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except ValueError:
        out = {"unparsed_stdout": proc.stdout[-3000:]}
    return proc.returncode, out, proc.stderr[-3000:], took


def _degraded_deploy(inv: Path, timeout_s: float) -> dict[str, Any]:
    from edgekit.model import samples

    code, out, err, took = _cli(["deploy", "--nodes", str(inv), str(samples.path(MODEL)),
                                 "--name", MODEL, "--offline", "--timeout", str(int(timeout_s))],
                                timeout_s + 300)
    nodes = {n["node"]: n for n in out.get("nodes", [])}
    failed = {n: {k: r.get(k) for k in ("step", "kind", "detail", "hint", "joins_later")}
              for n, r in nodes.items() if not r.get("ok")}
    return {"exit": code, "wall_s": round(took, 1), "timeout_s": timeout_s,
            "outcome": out.get("outcome"), "serving": out.get("serving", []),
            "failed": failed, "error": out.get("error"), "api_url": (out.get("head") or {})
            .get("api_url"), "stderr_tail": err if code not in (0, 8) else ""}


def _bench(inv: Path, seconds: float) -> dict[str, Any]:
    code, out, err, _ = _cli(["bench", "--nodes", str(inv), "--model", MODEL,
                              "--duration", str(seconds)], seconds + 120)
    keep = ("requests", "ok", "errors", "refused_503", "throughput_per_s", "node_share")
    return {"exit": code, **{k: out.get(k) for k in keep},
            **({"stderr_tail": err} if code else {})}


def _api(inv: Path, api_url: str):  # type: ignore[no-untyped-def]
    from edgekit.client import Client
    from edgekit.deploy.layout import deployment_dir

    token = (deployment_dir(inv) / "api-token").read_text().strip()
    return Client(api_url, token=token), token


def _feeds(client) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    import numpy as np

    from edgekit.serve.tensors import OIP_TO_NUMPY

    meta = client.metadata(MODEL)
    rng = np.random.default_rng(0)
    return {s["name"]: rng.random([d if d > 0 else 1 for d in s["shape"]])
            .astype(OIP_TO_NUMPY[s["datatype"]]) for s in meta["inputs"]}


def _burst(api_url: str, token: str, feeds: dict[str, Any], seconds: float) -> set[str]:
    """The nodes that answered a short closed-loop burst (loadgen, Edgekit-Node header)."""
    import asyncio

    from edgekit.serve.loadgen import BenchSettings, run_bench

    rep = asyncio.run(run_bench(api_url, MODEL, feeds,
                                BenchSettings(seconds, concurrency=4, token=token)))
    return {n for n, c in rep.nodes.items() if c}


def _heal_and_watch(inv: Path, api_url: str) -> dict[str, Any]:
    """Remove both faults at once; per node, seconds until a live worker and until it
    answers requests. No deploy is run."""
    from helpers import heal_ray

    from edgekit.deploy import verify

    client, token = _api(inv, api_url)
    feeds, uptime0 = _feeds(client), float(client.status()["uptime_s"])
    t0 = time.monotonic()
    for node in SICK:
        with _conn(inv, node) as c:
            heal_ray(c)
    live: dict[str, float] = {}
    answering: dict[str, float] = {}
    while time.monotonic() - t0 < JOIN_WAIT_S and len(answering) < len(SICK):
        alive = verify.check(api_url, token, [MODEL]).alive_nodes
        now = time.monotonic() - t0
        live.update({n: round(now, 1) for n in SICK if n in alive and n not in live})
        if set(live) - set(answering):  # it takes traffic once its telemetry flows
            seen = _burst(api_url, token, feeds, BURST_S)
            now = time.monotonic() - t0
            answering.update({n: round(now, 1) for n in SICK
                              if n in seen and n not in answering})
        else:
            time.sleep(POLL_S)
    for n, at in answering.items():  # live during a burst, before the next status poll
        live.setdefault(n, at)
    elapsed = time.monotonic() - t0
    st = client.status()
    restarted = float(st["uptime_s"]) < uptime0 + elapsed - 5.0
    return {"live_s": live, "answering_s": answering, "watched_s": round(elapsed, 1),
            "readiness": st["readiness"], "api_restarted": restarted}


def _acceptance(out: dict[str, Any]) -> dict[str, Any]:
    d, h, b6 = out["deploy"], out.get("heal", {}), out.get("bench_degraded", {})
    others = sorted(set(NODES) - set(SICK))
    share6 = sorted(n for n, v in (b6.get("node_share") or {}).items() if v)
    missing = " ".join((out.get("readiness_degraded") or {}).get("missing", []))
    return {
        "deploy_within_timeout": d["wall_s"] < d["timeout_s"] and d["exit"] == 8,
        "served_on_6": sorted(d["serving"]) == others and share6 == others
        and b6.get("errors") == 0,
        "named_the_2": sorted(d["failed"]) == sorted(SICK)
        and all(f.get("joins_later") for f in d["failed"].values())
        and all(f"{n} " in missing for n in SICK),
        "both_joined": sorted(h.get("answering_s", {})) == sorted(SICK),
        "redeploys": 0, "api_restarted": h.get("api_restarted"),
    }


def _report(out: dict[str, Any]) -> str:
    d, a = out["deploy"], out["acceptance"]
    lines = [f"prepare: first deploy {out['prepare']['first_deploy']['seconds']} s, undeploy "
             f"(runtimes kept) {out['prepare']['undeploy_s']} s",
             f"deploy of 8 with {', '.join(SICK)} unable to start Ray: exit {d['exit']} "
             f"({d['outcome']}) after {d['wall_s']} s of --timeout {d['timeout_s']:.0f}",
             f"  serving: {', '.join(d['serving']) or '-'}"]
    for n, f in sorted(d["failed"].items()):
        lines.append(f"  {n}: {f['step']}/{f['kind']}, joins_later={f['joins_later']}: "
                     f"{(f['detail'] or '')[:160]}\n      hint: {f['hint']}")
    rd = out.get("readiness_degraded")
    if rd:
        lines.append(f"API readiness after the deploy: ready={rd['ready']}, degraded="
                     f"{rd['degraded']}, missing: {', '.join(rd['missing']) or '-'}")
    for key in ("bench_degraded", "bench_healed"):
        b = out.get(key)
        if b:
            share = ", ".join(f"{n} {v:.0%}" for n, v in (b["node_share"] or {}).items())
            lines.append(f"{key}: exit {b['exit']}, {b['ok']} ok, {b['errors']} errors, "
                         f"{b['refused_503']} refused, {b['throughput_per_s']}/s; {share}")
    h = out.get("heal")
    if h:
        for n in SICK:
            lines.append(f"  {n} healed: live worker after {h['live_s'].get(n, '-')} s, "
                         f"answering after {h['answering_s'].get(n, '-')} s")
        lines.append(f"  API restarted: {h['api_restarted']}; readiness degraded: "
                     f"{h['readiness'].get('degraded')}")
    lines.append("acceptance: " + ", ".join(f"{k}={v}" for k, v in a.items()))
    return "\n".join(lines)


def _run(inv: Path, timeout_s: float, bench_s: float) -> dict[str, Any]:
    from helpers import break_ray

    out: dict[str, Any] = {"nodes": NODES, "sick": SICK, "model": MODEL}
    out["prepare"] = _prepare(inv, timeout_s)
    for node in SICK:
        with _conn(inv, node) as c:
            break_ray(c)
    out["deploy"] = d = _degraded_deploy(inv, timeout_s)
    print(json.dumps(d, indent=1), flush=True)
    if d["exit"] in (0, 8) and d["api_url"]:
        out["bench_degraded"] = _bench(inv, bench_s)
        client, _ = _api(inv, d["api_url"])
        out["readiness_degraded"] = client.status()["readiness"]
        out["heal"] = _heal_and_watch(inv, d["api_url"])
        out["bench_healed"] = _bench(inv, bench_s)
    out["acceptance"] = _acceptance(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", type=float, default=900.0,
                    help="deploy's --timeout, well above what a degraded deploy should take")
    ap.add_argument("--bench-s", type=float, default=10.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from helpers import heal_ray, sub_inventory


    t0 = time.monotonic()
    with world(SPECS) as (vc, scratch):
        inv = sub_inventory(vc.inventory_path, scratch / "pis.txt", NODES)
        try:
            out = _run(inv, args.timeout, args.bench_s)
        finally:
            for node in SICK:  # so undeploy's stop is not racing a failing Ray
                try:
                    with _conn(inv, node) as c:
                        heal_ray(c)
                except Exception as exc:  # the cluster goes down next anyway
                    print(f"{node}: could not remove the fault: {exc}", file=sys.stderr)
            deploy_world.undeploy(inv)
    out["total_s"] = round(time.monotonic() - t0, 1)
    deploy_world.finish(out, args.json, _report(out))


if __name__ == "__main__":
    main()
