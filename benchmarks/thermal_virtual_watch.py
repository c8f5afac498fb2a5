"""Does the policy see a poorly cooled node coming before the firmware throttles it?

On a real virtual cluster (sshd, per-node sysroot, RC thermal model, firmware emulation that
throttles at 80 °C through the cgroup quota): 3 Pi 4 nodes, pi3 without cooling. A CPU burn
runs inside pi3 (started over its SSH, so in its cgroup); the controller watches all three
sysroots at 1 Hz with the policy on but no router attached, records the run, and we report
when it decided to shed/drain pi3 versus when the firmware throttled it.

    sudo .venv/bin/python benchmarks/thermal_virtual_watch.py [--seconds 90] [--out DIR]

Serving integration (policy on vs off under real load) is benchmarks/thermal_policy (pending
the serving layer). Prints a table and one JSON line; writes report.html into --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from edgekit.thermal.controller import ThermalController
from edgekit.thermal.report import write_report
from edgekit.thermal.sources import SamplerSource
from edgekit.virtual.cluster import NodeSpec, VirtualCluster


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="thermal-watch-")))
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ekth-home-"))
    specs = [NodeSpec("pi4", "heatsink"), NodeSpec("pi4", "heatsink"), NodeSpec("pi4", "none")]
    with VirtualCluster.up(specs, home=home, budget_cores=1.5) as vc:
        roots = {n.name: vc.sysroot(n.name) for n in vc.nodes}
        ctl = ThermalController(SamplerSource(roots), run_dir=args.out / "run")
        hot = vc.record.node("pi3")
        ssh = [
            "ssh",
            "-i",
            str(vc.identity_path),
            "-o",
            f"UserKnownHostsFile={vc.known_hosts_path}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-p",
            str(hot.port),
            f"{hot.user}@127.0.0.1",
        ]
        burn = subprocess.Popen([*ssh, f"timeout {int(args.seconds)} sh -c 'yes > /dev/null'"])
        first: dict[str, float] = {}
        t0 = time.time()
        try:
            while time.time() - t0 < args.seconds:
                ctl.tick()
                row = ctl.status()["nodes"]["pi3"]
                now = time.time() - t0
                if row["state"] != "serving":
                    first.setdefault(row["state"], now)
                    first.setdefault(f"{row['state']}_temp_c", row["temp_c"])
                if row["throttled_now"]:
                    first.setdefault("throttled", now)
                    first.setdefault("throttled_temp_c", row["temp_c"])
                time.sleep(1.0)
        finally:
            burn.terminate()
            ctl.stop()
    summary = write_report(args.out / "run", args.out / "report.html", "pi3 burn, policy watching")
    result = {
        "first_event_s": {k: round(v, 1) for k, v in first.items()},
        "nodes": summary,
        "report": str(args.out / "report.html"),
    }
    print(f"{'event':<22}{'t (s)':>8}")
    for k, v in first.items():
        print(f"{k:<22}{v:>8.1f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
