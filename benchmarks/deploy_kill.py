"""SIGKILL `edgekit deploy` at N random points of a rollout (issue 16's acceptance): after
each kill, does `edgekit status` tell the truth, does one rerun converge every node, and
does any node loop?

On a 3-node virtual cluster (tests/deploy's helpers): the real PP-OCR direction classifier
is deployed once; then each point deploys a new version of it (the same model plus
`--pad-mb` of random padding, so the push takes a while) in its own process and kills it
after a random time within one measured rollout's length. Then, per point:

  phase     how far it got: nodes whose `current` switched to the new version, and whether
            the API already served it
  truthful  `edgekit status --json` against reality read directly: every node's `current`
            over SSH and the API's own /edgekit/status (on-disk and served versions equal,
            and a mismatch flagged exactly where they differ; tests/deploy/killpoints.py)
  reboot    (every `--reboot-every`-th point, and the `--after-switch` points, before the
            rerun) one node power-cycled in that state; looped = its Ray service restarted
            or the API recreated its worker more than once within `--watch-s` after its Ray
            is back
  converged one rerun of the same deploy: every node has the version on disk and serves it
  looped    nodes whose Ray service restarted or whose worker the API recreated more than
            once in `--watch-s` after the rerun

The `--after-switch` points (after the random ones) are not random: each deploy is killed
as soon as every node's `current` is the new version, the state a killed deploy most often
left behind (nodes ahead of the API), and a node is power-cycled in it.

    sudo .venv/bin/python benchmarks/deploy_kill.py --points 20 [--pad-mb 4] [--seed 1]
        [--reboot-every 4] [--after-switch 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import deploy_world
from deploy_world import world

MODEL = "ppocr-cls"
NODES = ["pi1", "pi2", "pi3"]


def _first_deploy(inv: Path, scratch: Path) -> Path:
    """Deploy the real model; the bundle folder the state recorded (the later versions'
    base)."""
    from edgekit.deploy.flow import DeployOptions, deploy
    from edgekit.deploy.layout import deployment_dir
    from edgekit.model import samples

    res = deploy(DeployOptions(inv, samples.path(MODEL), name=MODEL, offline=True))
    if not res.ok:
        raise SystemExit(f"the first deploy failed: {json.dumps(res.to_dict())[:2000]}")
    st = json.loads((deployment_dir(inv) / "state.json").read_text())
    return Path(st["apps"][MODEL]["bundle"])


def _version(base: Path, scratch: Path, seed: int, pad_mb: float) -> tuple[Path, str]:
    from helpers import padded_bundle

    from edgekit.deploy import bundle as bundle_mod

    b = padded_bundle(base, scratch / f"v{seed}" / MODEL, int(pad_mb * 1e6), seed=seed)
    return b, bundle_mod.load(b, MODEL).version


def _rollout_s(inv: Path, bundle: Path) -> float:
    """One whole rollout of a new version, timed (the range the kill points are drawn in)."""
    import killpoints

    t0 = time.monotonic()
    proc = killpoints.start_deploy(inv, bundle, MODEL)
    proc.wait()
    return time.monotonic() - t0


def _reboot(vc, inv: Path, node: str, watch_s: float) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Power-cycle `node`, wait for its Ray to run again, then watch it for loops."""
    import killpoints

    t0 = time.monotonic()
    vc.reboot(node)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if killpoints.restarts(inv, [node]) is not None and _raylet(inv, node):
                break
        except Exception:  # its sshd is still coming up
            pass
        time.sleep(0.5)
    back_s = time.monotonic() - t0
    looped = killpoints.looping(inv, [node], MODEL, watch_s)
    return {"node": node, "ray_back_s": round(back_s, 1), "looped": bool(looped)}


def _raylet(inv: Path, node: str) -> bool:
    from edgekit import inventory
    from edgekit.remote.ssh import Connection

    with Connection(inventory.load(inv).get(node)) as c:
        return c.run("ps -u $(id -u) -o comm= | grep -qx raylet").ok


def _point(vc, inv: Path, i: int, at_s: float, bundle: Path, version: str,  # type: ignore[no-untyped-def]
           args: argparse.Namespace) -> dict[str, Any]:
    import killpoints

    from edgekit.deploy.flow import DeployOptions, deploy

    proc = killpoints.start_deploy(inv, bundle, MODEL)
    t0 = time.monotonic()
    if at_s < 0:  # right after every node switched: their disks ahead of the API
        killpoints.wait_switched(inv, NODES, MODEL, version, proc)
        at_s = time.monotonic() - t0
    while time.monotonic() - t0 < at_s and proc.poll() is None:
        time.sleep(0.02)
    finished = proc.poll() is not None
    killpoints.kill(proc)
    st, real, bad = killpoints.truthful_status(inv, NODES, MODEL)
    row: dict[str, Any] = {
        "point": i, "kill_at_s": round(at_s, 2), "finished_before_kill": finished,
        "switched": sum(v == version for v in real.on_disk.values()),
        "api_at_new": real.api_version == version, "status_flagged": st.get("mismatch", []),
        "truthful": not bad, "untruths": bad}
    if (args.reboot_every and i % args.reboot_every == 0) or i > args.points:
        row["reboot"] = _reboot(vc, inv, NODES[i // args.reboot_every % len(NODES)],
                                args.watch_s)
    t1 = time.monotonic()
    res = deploy(DeployOptions(inv, bundle, name=MODEL, offline=True))
    row["rerun_s"] = round(time.monotonic() - t1, 1)
    row["rerun_ok"] = res.ok
    row["not_converged"] = killpoints.converged(inv, NODES, MODEL, version)
    row["converged"] = res.ok and not row["not_converged"]
    row["looped"] = killpoints.looping(inv, NODES, MODEL, args.watch_s)
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'pt':>3} {'kill s':>7} {'switched':>8} {'API new':>7} {'flagged':<16} "
            f"{'truthful':>8} {'reboot loop':>11} {'converged':>9} {'rerun s':>7} looped")
    lines = [head, "-" * len(head)]
    for r in rows:
        rb = r.get("reboot")
        lines.append(
            f"{r['point']:>3} {r['kill_at_s']:>7.2f} {r['switched']:>6}/3 "
            f"{'yes' if r['api_at_new'] else 'no':>7} {','.join(r['status_flagged']) or '-':<16} "
            f"{'yes' if r['truthful'] else 'NO':>8} "
            f"{('-' if rb is None else 'YES' if rb['looped'] else 'no'):>11} "
            f"{'yes' if r['converged'] else 'NO':>9} {r['rerun_s']:>7.1f} "
            f"{','.join(r['looped']) or '-'}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--pad-mb", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reboot-every", type=int, default=4,
                    help="power-cycle a node before the rerun at every k-th point (0: never)")
    ap.add_argument("--after-switch", type=int, default=2,
                    help="more points, each killed right after every node switched (disks "
                         "ahead of the API), with a node power-cycled before the rerun")
    ap.add_argument("--watch-s", type=float, default=5.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    from helpers import sub_inventory


    with world() as (vc, scratch):
        inv = sub_inventory(vc.inventory_path, scratch / "pis.txt", NODES)
        try:
            base = _first_deploy(inv, scratch)
            cal, _ = _version(base, scratch, 10_000, args.pad_mb)
            span = _rollout_s(inv, cal)
            rows = []
            for i in range(1, args.points + args.after_switch + 1):
                bundle, version = _version(base, scratch, i, args.pad_mb)
                at = rng.uniform(0.2, span) if i <= args.points else -1.0
                rows.append(_point(vc, inv, i, at, bundle, version, args))
                print(_table(rows[-1:]).splitlines()[-1], flush=True)
        finally:
            deploy_world.undeploy(inv)
    out = {"rollout_s": round(span, 1), "points": rows,
           "truthful": sum(r["truthful"] for r in rows),
           "converged": sum(r["converged"] for r in rows),
           "looped": sum(bool(r["looped"]) or bool((r.get("reboot") or {}).get("looped"))
                         for r in rows), "n": len(rows)}
    deploy_world.finish(out, args.json, _table(rows))


if __name__ == "__main__":
    main()
