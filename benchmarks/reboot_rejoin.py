"""After a node reboots, how long from its Ray rejoining the cluster until (a) its thermal
data flows in the API again and (b) it has its full routing weight back? Target: both
within 10 s (issue 16: a rebooted node's agent was not recreated, or its samples were
ignored, and it stayed at half weight until the API restarted).

A virtual cluster of two boards (a Pi 4 and a Pi 5, both with a systemd user manager so
their services come back after a power cycle, as lingering units do on a Pi) serves the
real PP-OCR direction classifier through `edgekit deploy` with the thermal controller on.
Each run power-cycles one node (edgekit.virtual.power.reboot) and polls every 0.2 s:

  join      a live Ray node with the node's `edgekit-node-<name>` resource and a new NodeID
            (a Ray driver on the deployment's head, token auth)
  thermal   the API's /edgekit/status thermal row for the node is fresh (not stale) with a
            sample received after the join
  weight    the router's weight for the node is 1.0 (serving) and the thermal row's too,
            with such a sample
  worker    the API's replica on that node is alive again (edgekit.serve's recreation)

Times are from the reboot call's start (reboot_s: the call itself, i.e. power-off and the
node's sshd and user manager up) and, for thermal/weight/worker, also after the join.

    sudo .venv/bin/python benchmarks/reboot_rejoin.py [--runs 3] [--node pi2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import deploy_world
from deploy_world import SPECS, world

MODEL = "ppocr-cls"
NODES = ["pi1", "pi2"]
TARGET_S = 10.0


def _ray_driver(inv: Path) -> None:
    """Join the deployment's Ray cluster as a driver (token auth from the host's state)."""
    from edgekit.deploy.layout import deployment_dir
    from edgekit.node.raynode import PYTHON_MATCH_ENV

    dep = deployment_dir(inv)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(dep / "ray-token"),
                      **PYTHON_MATCH_ENV)
    import ray

    address = json.loads((dep / "state.json").read_text())["head"]["ray_address"]
    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False,
             namespace="bench-reboot")


def _ray_node_id(node: str) -> str | None:
    import ray

    from edgekit import names

    res = names.node_resource(node)
    return next((n["NodeID"] for n in ray.nodes() if n.get("Alive")
                 and res in n.get("Resources", {})), None)


def _look(inv: Path, node: str) -> dict[str, Any]:
    """The node's thermal row, router stats and replica liveness from the API, now."""
    import killpoints

    doc = killpoints.api_status(inv) or {}
    row = (((doc.get("controllers") or {}).get("thermal") or {}).get("nodes") or {}).get(node)
    routed = (doc.get("nodes") or {}).get(node) or {}
    alive = any(r.get("alive") and node in r.get("nodes", []) for r in doc.get("replicas", []))
    return {"row": row or {}, "routed": routed, "alive": alive, "t": time.time()}


def _fresh_since(look: dict[str, Any], t_wall: float) -> bool:
    """A sample received after `t_wall`, and the row not stale."""
    row = look["row"]
    age = row.get("age_s")
    return bool(row) and not row.get("stale") and age is not None and \
        look["t"] - float(age) > t_wall


def _full_weight(look: dict[str, Any]) -> bool:
    routed, row = look["routed"], look["row"]
    return (float(routed.get("weight") or 0) >= 0.999 and routed.get("state") == "serving"
            and float(row.get("weight") or 0) >= 0.999)


def _wait_steady(inv: Path, node: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        look = _look(inv, node)
        if look["alive"] and _full_weight(look) and _fresh_since(look, time.time() - 3):
            return
        time.sleep(0.5)
    raise SystemExit(f"{node} never reached full weight with fresh telemetry: {look}")


def _run(vc, inv: Path, node: str, timeout_s: float = 240) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    _wait_steady(inv, node)
    old = _ray_node_id(node)
    t0 = time.monotonic()
    vc.reboot(node)
    marks: dict[str, float] = {"reboot_s": time.monotonic() - t0}
    join_wall = None
    while time.monotonic() - t0 < timeout_s and len(marks) < 5:
        now = time.monotonic() - t0
        nid = _ray_node_id(node)
        if join_wall is None and nid and nid != old:
            join_wall, marks["join_s"] = time.time(), now
        if join_wall is not None:
            look = _look(inv, node)
            if "thermal_s" not in marks and _fresh_since(look, join_wall):
                marks["thermal_s"] = now
            if "weight_s" not in marks and _fresh_since(look, join_wall) and _full_weight(look):
                marks["weight_s"] = now
            if "worker_s" not in marks and look["alive"]:
                marks["worker_s"] = now
        time.sleep(0.2)
    out = {k: round(v, 2) for k, v in marks.items()}
    for key in ("thermal_s", "weight_s", "worker_s"):
        if key in marks and "join_s" in marks:
            out[key.replace("_s", "_after_join_s")] = round(marks[key] - marks["join_s"], 2)
    return out


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if key in r]
    return round(statistics.median(vals), 2) if vals else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--node", default="pi2", choices=NODES)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from helpers import sub_inventory

    from edgekit.deploy.flow import DeployOptions, deploy
    from edgekit.model import samples

    runs: list[dict[str, Any]] = []
    with world(SPECS[:2]) as (vc, scratch):
        inv = sub_inventory(vc.inventory_path, scratch / "pis.txt", NODES)
        try:
            res = deploy(DeployOptions(inv, samples.path(MODEL), name=MODEL, offline=True))
            if not res.ok:
                raise SystemExit(f"deploy failed: {json.dumps(res.to_dict())[:2000]}")
            _ray_driver(inv)
            for i in range(args.runs):
                runs.append(_run(vc, inv, args.node))
                print(f"run {i + 1}: {json.dumps(runs[-1])}", flush=True)
        finally:
            deploy_world.undeploy(inv)
    keys = ("join_s", "thermal_after_join_s", "weight_after_join_s", "worker_after_join_s")
    out = {"node": args.node, "runs": runs, "median": {k: _median(runs, k) for k in keys},
           "target_s": TARGET_S}
    out["within_target"] = all(
        r.get("thermal_after_join_s", 1e9) <= TARGET_S
        and r.get("weight_after_join_s", 1e9) <= TARGET_S for r in runs)
    deploy_world.finish(out, args.json)


if __name__ == "__main__":
    main()
