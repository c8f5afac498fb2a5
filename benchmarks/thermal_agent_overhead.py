"""Node agent CPU overhead at 1 Hz: CPU time of the sampling (vcgencmd children included)
over wall time, as a fraction of one core. Steady state (interpreter start-up excluded).

    .venv/bin/python benchmarks/thermal_agent_overhead.py [--seconds 30] [--sysroot DIR]

Without --sysroot it reads $EDGEKIT_SYSROOT (default /), so run it on a node, inside a virtual
node's environment, or give the sysroot of a virtual node (its vcgencmd is taken from
DIR/usr/bin when present). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from edgekit.thermal.agent import NodeAgent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--interval-s", type=float, default=1.0)
    ap.add_argument("--sysroot", type=Path)
    ap.add_argument(
        "--no-firmware-clock",
        action="store_true",
        help="skip `vcgencmd measure_clock arm` (one spawn per tick fewer)",
    )
    args = ap.parse_args()
    if args.sysroot:
        os.environ["EDGEKIT_SYSROOT"] = str(args.sysroot)
        vc_dir = args.sysroot / "usr/bin"
        if (vc_dir / "vcgencmd").exists():
            os.environ["PATH"] = f"{vc_dir}:{os.environ['PATH']}"
    agent = NodeAgent("bench", args.interval_s, firmware_clock=not args.no_firmware_clock)
    time.sleep(2 * args.interval_s)  # warm up (first samples, imports)
    t0, wall0 = os.times(), time.monotonic()
    time.sleep(args.seconds)
    t1, wall1 = os.times(), time.monotonic()
    agent.stop()
    cpu_s = sum(
        getattr(t1, f) - getattr(t0, f)
        for f in ("user", "system", "children_user", "children_system")
    )
    own_s = (t1.user - t0.user) + (t1.system - t0.system)
    wall = wall1 - wall0
    samples = agent.since(0)
    ticks = max(1, round(wall / args.interval_s))
    result = {
        "seconds": round(wall, 1),
        "interval_s": args.interval_s,
        "samples_in_ring": len(samples),
        "cpu_frac_of_core": round(cpu_s / wall, 5),
        "python_cpu_frac": round(own_s / wall, 5),
        "vcgencmd_cpu_frac": round((cpu_s - own_s) / wall, 5),
        "cpu_ms_per_sample": round(1000 * cpu_s / ticks, 2),
        "vcgencmd_spawns": agent.info()["vcgencmd_spawns"],
        "power_source": samples[-1].power_w.source if samples else None,
        "throttled_source": samples[-1].throttled.source if samples else None,
    }
    print(f"{'metric':<22}value")
    for k, v in result.items():
        print(f"{k:<22}{v}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
