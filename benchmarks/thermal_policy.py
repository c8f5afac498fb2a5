"""Thermal policy off vs on (and a power cap) under the same steady load, on the virtual cluster.

    sudo .venv/bin/python benchmarks/thermal_policy.py [--seconds 180] [--out DIR]
        [--model ppocr-rec] [--rate R] [--load-frac 0.65] [--cap-w W] [--wheel-cache DIR]

Three virtual Pi 4 nodes (real sshd, cgroup CPU caps, RC thermal model, firmware that
throttles at 80 °C by cutting the node's quota): pi1 and pi2 with heatsinks, pi3 without
cooling in a 30 °C corner (at full load it would settle near 98 °C; it passes 80 °C within
about 15 s). `edgekit deploy --offline` installs the node runtime and starts a Ray worker on
each node over SSH; the deploy's own API server is then replaced by `edgekit serve
--controller thermal` (same Ray, same token) so each run can set the policy by environment:

1. calibration: pi3 temporarily given a heatsink, closed loop (concurrency 8) for 30 s ->
   capacity of the healthy cluster; the open-loop rate is `--load-frac` of it (or `--rate`);
2. `EDGEKIT_THERMAL_POLICY=off` (plain least-loaded routing, telemetry recorded);
3. policy on;
4. policy on with `EDGEKIT_POWER_CAP_W` (default: 95 % of run 3's mean power; lower caps are
   infeasible here: three idle 0.4-core nodes with Ray on them plus one request in flight
   already draw about 12.9 W of the 14.2 W at full offered load).

Once each run's server is up (loading the model heats the nodes) they are brought back to
their idle temperature (the room is made cold until each node is at or below its idle
equilibrium, then restored); the load starts then. Per run: max °C and
seconds throttled per node (firmware bits in the recorded telemetry), requests, throughput,
p50/p99, energy per inference (J, from the controller's integrated node power). Writes
`<out>/<run>/report.html` (edgekit report) and `<out>/results.json`; prints a table and the
acceptance checks. The wheel cache defaults to $EDGEKIT_TEST_WHEEL_CACHE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ["RAY_AUTH_MODE"] = "token"

from edgekit import settings
from edgekit.deploy import head, verify
from edgekit.deploy.flow import DeployOptions, deploy
from edgekit.deploy.layout import deployment_dir
from edgekit.model import samples
from edgekit.node.raynode import PYTHON_MATCH_ENV
from edgekit.serve.loadgen import BenchSettings, run_bench
from edgekit.thermal.monitor import fetch_status
from edgekit.thermal.report import _load, summarize, write_report
from edgekit.virtual import boards
from edgekit.virtual.cluster import NodeSpec, VirtualCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "thermal"))
from raynodes import RayOnNodes

NODES = ["pi1", "pi2", "pi3"]
SPECS = [NodeSpec("pi4", "heatsink"), NodeSpec("pi4", "heatsink"),
         NodeSpec("pi4", "none", ambient_c=30.0)]
BUDGET_CORES = 1.2  # 0.4 core per node: leaves this 2-core host room for the API and loadgen
COLD_ROOM_C = -20.0  # room temperature used to bring nodes back to idle quickly
SHAPES = {"ppocr-rec": "x=1,3,48,320", "ppocr-cls": "x=1,3,48,192"}


def build_bundle(model: str, out: Path) -> Path:
    shape = SHAPES[model]
    dims = [int(d) for d in shape.split("=")[1].split(",")]
    subprocess.run([sys.executable, "-m", "edgekit.cli.main", "bundle", "create",
                    str(samples.path(model)), "-o", str(out), "--name", model,
                    "--shape", shape, "--force"], check=True, capture_output=True)
    (out.parent / f"{model}.shape.json").write_text(json.dumps(dims))
    return out


def deploy_workers(inv: Path, bundle: Path, dep: Path) -> tuple[str, Path]:
    """`edgekit deploy --offline` (a node that failed is retried once: provisioning three
    nodes at once on a busy 2-core host has failed transiently), then stop its API server:
    the supervisor stops a service whose file goes; ours runs per policy setting."""
    res = deploy(DeployOptions(inv, bundle, offline=True))
    if not res.ok:
        print(f"deploy failed, retrying once: {json.dumps(res.to_dict())[:1500]}", flush=True)
        res = deploy(DeployOptions(inv, bundle, offline=True))
    if not res.ok:
        raise SystemExit(f"deploy failed: {json.dumps(res.to_dict())[:2000]}")
    (dep / "head" / "services" / "api.json").unlink()
    cfg = json.loads((dep / "head" / "run" / "ray.json").read_text())
    return f"{cfg['node_ip']}:{cfg['port']}", dep / "ray-token"


class Server:
    """`edgekit serve --controller thermal` against the deployment's Ray, as a subprocess."""

    def __init__(self, ctx: dict[str, Any], home: Path, env: dict[str, str]):
        dep, model = ctx["dep"], ctx["model"]
        self.port = head.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token_file = dep / "api-token"
        self.token = self.token_file.read_text().strip()
        home.mkdir(parents=True, exist_ok=True)
        penv = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
        penv.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(ctx["ray_token"]),
                    EDGEKIT_HOME=str(home), **PYTHON_MATCH_ENV, **env)
        self.log = (home / "serve.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgekit.cli.main", "serve", "--ray-address", ctx["ray"],
             "--model", f"{model}={ctx['bundle']}", "--nodes", ",".join(NODES), "--port",
             str(self.port), "--token-file", str(self.token_file), "--controller", "thermal"],
            env=penv, stdout=self.log, stderr=subprocess.STDOUT)
        h = verify.wait(self.url, self.token, [model], NODES, 300.0)
        if not h.ready:
            self.stop()
            raise SystemExit(f"server not ready: {h.error}; see {home / 'serve.log'}")

    def status(self) -> dict[str, Any]:
        return fetch_status(self.url, self.token)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def node_temps(vc: VirtualCluster) -> dict[str, float]:
    return {r["name"]: float(r["temp_c"]) for r in vc.status() if r.get("temp_c") is not None}


def cool_down(vc: VirtualCluster) -> dict[str, float]:
    """Cold room until every node is at/below its idle equilibrium, then the real room again."""
    idle = {}
    for spec, name in zip(SPECS, NODES, strict=True):
        board = boards.board(spec.board)
        idle[name] = spec.ambient_c + board.idle_w * boards.cooling(spec.board,
                                                                    spec.cooling).r_th_k_per_w
        vc.heat(name, ambient_c=COLD_ROOM_C)
    pending = set(NODES)
    deadline = time.monotonic() + 600
    while pending and time.monotonic() < deadline:
        temps = node_temps(vc)
        for name in list(pending):
            if temps.get(name, 999.0) <= idle[name]:
                vc.heat(name, ambient_c=SPECS[NODES.index(name)].ambient_c)
                pending.discard(name)
        time.sleep(0.5)
    for name in pending:
        vc.heat(name, ambient_c=SPECS[NODES.index(name)].ambient_c)
    time.sleep(3)  # let each node settle at its idle temperature
    return node_temps(vc)


def bench(server: Server, model: str, dims: list[int], seconds: float,
          rate: float | None, concurrency: int = 8) -> dict[str, Any]:
    feeds = {"x": np.random.default_rng(0).random(dims, dtype=np.float32)}
    rep = asyncio.run(run_bench(server.url, model, feeds, BenchSettings(
        seconds, concurrency=concurrency, rate=rate, token=server.token)))
    return rep.summary()


def window_energy(rows: list[dict[str, Any]], t0: float, t1: float) -> dict[str, Any]:
    """Energy (J) and completed requests per node inside [t0, t1] from the recorded ticks."""
    out: dict[str, Any] = {}
    for node in NODES:
        rs = [r for r in rows if r["node"] == node and t0 <= r["t_head_s"] <= t1]
        if len(rs) < 2:
            continue
        e = (rs[-1]["energy_j"] or 0) - (rs[0]["energy_j"] or 0)
        done = (rs[-1]["completed_total"] or 0) - (rs[0]["completed_total"] or 0)
        out[node] = {"energy_j": round(e, 1), "completed": int(done),
                     "j_per_inference": round(e / done, 3) if done else None,
                     "mean_power_w": round(e / (rs[-1]["t_head_s"] - rs[0]["t_head_s"]), 2)}
    e_all = sum(v["energy_j"] for v in out.values())
    n_all = sum(v["completed"] for v in out.values())
    out["cluster"] = {"energy_j": round(e_all, 1), "completed": n_all,
                      "j_per_inference": round(e_all / n_all, 3) if n_all else None}
    return out


def cluster_power(rows: list[dict[str, Any]], t0: float, t1: float) -> dict[str, float]:
    """Total node power per tick inside the window: mean, max of 5-s means."""
    by_t: dict[float, float] = {}
    for r in rows:
        if t0 <= r["t_head_s"] <= t1 and r["power_w"] is not None:
            by_t[r["t_head_s"]] = by_t.get(r["t_head_s"], 0.0) + r["power_w"]
    series = [by_t[t] for t in sorted(by_t)]
    if not series:
        return {}
    smooth = [float(np.mean(series[i:i + 5])) for i in range(max(1, len(series) - 4))]
    return {"mean_w": round(float(np.mean(series)), 2), "max_5s_w": round(max(smooth), 2),
            "max_w": round(max(series), 2)}


def one_run(label: str, vc: VirtualCluster, ctx: dict[str, Any], env: dict[str, str],
            seconds: float, rate: float) -> dict[str, Any]:
    server = Server(ctx, ctx["out"] / label / "home", env)
    try:
        # loading the model into each node's worker heats pi3 by ~15 °C before the
        # controller has a sample: cool after start-up, so every run starts from idle
        start_temps = cool_down(vc)
        load = os.getloadavg()[0]
        t0 = time.time()
        rep = bench(server, ctx["model"], ctx["dims"], seconds, rate)
        t1 = time.time()
        st = server.status()
    finally:
        server.stop()
    run_dir = Path(st["controllers"]["thermal"]["run_dir"])
    rows = _load(run_dir)
    summary = write_report(run_dir, ctx["out"] / label / "report.html", f"{label}: {rate}/s")
    inside = summarize([r for r in rows if t0 <= r["t_head_s"] <= t1])
    return {
        "label": label, "env": env, "rate": rate, "load_1m_before": round(load, 2),
        "start_temps": start_temps, "bench": rep,
        "nodes": {n: {"max_temp_c": inside[n]["max_temp_c"],
                      "throttled_s": inside[n]["throttled_s"],
                      "throttled_s_whole_server_run": summary[n]["throttled_s"]}
                  for n in inside},
        "energy": window_energy(rows, t0, t1), "power": cluster_power(rows, t0, t1),
        "status_energy": st.get("energy"), "run_dir": str(run_dir),
        "report": str(ctx["out"] / label / "report.html"),
    }


def table(runs: list[dict[str, Any]]) -> str:
    lines = [f"{'run':<10}{'node':<6}{'max °C':>8}{'thr s':>7}{'J/inf':>8}"
             f"{'ok':>7}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'503':>6}"]
    for r in runs:
        b = r["bench"]
        for n in NODES:
            nd, en = r["nodes"].get(n, {}), r["energy"].get(n, {})
            jpi = en.get("j_per_inference") or 0
            lines.append(f"{r['label']:<10}{n:<6}{nd.get('max_temp_c') or 0:>8.1f}"
                         f"{nd.get('throttled_s') or 0:>7.1f}{jpi:>8.3f}")
        lines.append(f"{r['label']:<10}{'all':<6}{'':>8}{'':>7}"
                     f"{r['energy']['cluster']['j_per_inference'] or 0:>8.3f}{b['ok']:>7}"
                     f"{b['throughput_per_s']:>8.2f}{b['latency_ms']['p50']:>9.1f}"
                     f"{b['latency_ms']['p99']:>9.1f}{b['refused_503']:>6}")
    return "\n".join(lines)


def acceptance(off: dict[str, Any], on: dict[str, Any], cap: dict[str, Any] | None,
               cap_w: float | None) -> dict[str, Any]:
    t_off, t_on = off["bench"]["throughput_per_s"], on["bench"]["throughput_per_s"]
    p_off, p_on = off["bench"]["latency_ms"]["p99"], on["bench"]["latency_ms"]["p99"]
    out = {
        "on_max_temp_c": max(v["max_temp_c"] or 0 for v in on["nodes"].values()),
        "on_throttled_s": sum(v["throttled_s"] for v in on["nodes"].values()),
        "off_pi3_throttled_s": off["nodes"].get("pi3", {}).get("throttled_s"),
        "throughput_ratio": round(t_on / t_off, 3) if t_off else None,
        "p99_reduction": round(1 - p_on / p_off, 3) if p_off else None,
    }
    out["pass"] = {
        "on_no_throttle": out["on_throttled_s"] == 0 and out["on_max_temp_c"] < 80.0,
        "on_throughput_95pct": bool(out["throughput_ratio"] and out["throughput_ratio"] >= 0.95),
        "on_p99_30pct_lower": bool(out["p99_reduction"] and out["p99_reduction"] >= 0.30),
        "off_pi3_throttles": bool(out["off_pi3_throttled_s"]),
    }
    if cap is not None and cap_w is not None:
        out["cap_w"] = cap_w
        out["cap_power"] = cap["power"]
        held = cap["power"].get("mean_w", 1e9) <= cap_w
        out["pass"]["cap_held"] = held and cap["power"].get("max_5s_w", 1e9) <= cap_w * 1.05
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="thermal-policy-")))
    ap.add_argument("--model", default="ppocr-rec", choices=sorted(SHAPES))
    ap.add_argument("--rate", type=float, default=None, help="skip calibration, use this req/s")
    ap.add_argument("--load-frac", type=float, default=0.65)
    ap.add_argument("--cap-w", type=float, default=None)
    ap.add_argument("--no-cap-run", action="store_true")
    ap.add_argument("--cap-only", action="store_true", help="only the power-cap run (--cap-w)")
    ap.add_argument("--direct", action="store_true",
                    help="Ray nodes in the virtual nodes' cgroups (tests/thermal/raynodes.py) "
                         "instead of edgekit deploy")
    ap.add_argument("--wheel-cache", default=os.environ.get("EDGEKIT_TEST_WHEEL_CACHE"))
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="ekthp-"))
    os.environ["EDGEKIT_HOME"] = str(home)
    settings.EDGEKIT_HOME = home
    if args.wheel_cache:
        (home / "wheelhouse").symlink_to(args.wheel_cache)
    bundle = build_bundle(args.model, home / "bundles" / args.model)
    dims = json.loads((home / "bundles" / f"{args.model}.shape.json").read_text())
    with VirtualCluster.up(SPECS, home=home, budget_cores=BUDGET_CORES) as vc:
        ray_nodes = None
        dep = deployment_dir(vc.inventory_path)
        try:
            t = time.monotonic()
            if args.direct:
                ray_nodes = RayOnNodes(vc).start()
                ray_addr, ray_token = ray_nodes.address, ray_nodes.token_path
                (dep / "api-token").parent.mkdir(parents=True, exist_ok=True)
                (dep / "api-token").write_text("bench-" + os.urandom(8).hex())
            else:
                ray_addr, ray_token = deploy_workers(vc.inventory_path, bundle, dep)
            print(f"workers up: {time.monotonic() - t:.0f} s", flush=True)
            ctx = {"dep": dep, "ray": ray_addr, "ray_token": ray_token, "model": args.model,
                   "bundle": bundle, "dims": dims, "out": out}
            rate = args.rate
            calib = None
            if rate is None:
                vc.heat("pi3", cooling="heatsink")
                cool_down(vc)
                server = Server(ctx, out / "calib" / "home", {"EDGEKIT_THERMAL_POLICY": "off"})
                try:
                    bench(server, args.model, dims, 10.0, None)  # warm-up
                    calib = bench(server, args.model, dims, 30.0, None)
                finally:
                    server.stop()
                    vc.heat("pi3", cooling="none")
                rate = round(args.load_frac * calib["throughput_per_s"], 2)
                print(f"capacity {calib['throughput_per_s']} req/s -> rate {rate}/s", flush=True)
            runs = []
            if not args.cap_only:
                runs.append(one_run("off", vc, ctx, {"EDGEKIT_THERMAL_POLICY": "off"},
                                    args.seconds, rate))
                runs.append(one_run("on", vc, ctx, {"EDGEKIT_THERMAL_POLICY": "on"},
                                    args.seconds, rate))
            cap_w = args.cap_w
            if cap_w is None:  # 5 % under the policy-on run's mean power: more is infeasible
                # here (one request in flight already keeps the nodes near 12.9 W)
                cap_w = round(0.95 * (runs[1]["power"].get("mean_w") if runs else 15.0), 1)
            if not args.no_cap_run:
                runs.append(one_run("cap", vc, ctx, {"EDGEKIT_THERMAL_POLICY": "on",
                                                     "EDGEKIT_POWER_CAP_W": str(cap_w)},
                                    args.seconds, rate))
        finally:
            if ray_nodes is not None:
                ray_nodes.stop()
            head.stop(dep / "head")
    cap = runs[-1] if runs and runs[-1]["label"] == "cap" else None
    result = {"model": args.model, "seconds": args.seconds, "rate": rate, "calibration": calib,
              "runs": runs, "cap_w": cap_w, "cap_power": cap["power"] if cap else None}
    if len(runs) >= 2:
        result["acceptance"] = acceptance(runs[0], runs[1], cap, cap_w if cap else None)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    print(table(runs))
    for r in runs:
        print(f"{r['label']}: load before {r['load_1m_before']}, power {r['power']}, "
              f"report {r['report']}")
    print(json.dumps(result.get("acceptance") or {"cap_w": cap_w,
                                                  "cap_power": result["cap_power"]}))


if __name__ == "__main__":
    main()
