"""The per-cluster daemon that plays firmware: it heats each node from the CPU its processes
really used, throttles the clock (and with it the node's CPU quota), and publishes the files
and `vcgencmd` answers node code reads. Run by `edgekit cluster up` as
`python -m edgekit.virtual.supervisor <EDGEKIT_HOME>`; stops on SIGTERM or when the cluster
record disappears.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edgekit.virtual import boards, state, thermal
from edgekit.virtual.cgroups import NodeGroup
from edgekit.virtual.sysroot import Reading, publish, write_atomic

log = logging.getLogger("edgekit.virtual.supervisor")
USER_HZ = 100  # proc/stat counts jiffies of 1/100 s on Raspberry Pi OS kernels
CORES = 4  # both boards have four cores


@dataclass
class _Node:
    rec: state.NodeRecord
    board: boards.Board
    group: NodeGroup
    sysroot: Path
    thermal: thermal.NodeThermal
    last_usage_ns: int
    quota_cores: float
    busy_jiffies: float = 0.0
    total_jiffies: float = 0.0


def conditions(home: Path, rec: state.NodeRecord) -> thermal.Conditions:
    """The node's cooling and ambient: as set by `up`, overridden by `cluster heat`."""
    wanted = state.read_json(state.state_dir(home) / "conditions.json").get(rec.name, {})
    cooling = boards.cooling(rec.board, wanted.get("cooling", rec.cooling))
    return thermal.Conditions(cooling, float(wanted.get("ambient_c", rec.ambient_c)))


def initial(home: Path, cluster: state.ClusterRecord, rec: state.NodeRecord) -> _Node:
    board = boards.board(rec.board)
    group = NodeGroup(cluster.id, rec.name)
    therm = thermal.idle_state(board, conditions(home, rec), rec.start_temp_c)
    quota = thermal.quota_cores(rec.cap_cores, board, therm.freq_mhz)
    group.set_cpu(quota)
    return _Node(rec, board, group, rec.sysroot(cluster.run_dir), therm, group.usage_ns(), quota)


def step(home: Path, node: _Node, now_s: float, dt_s: float) -> None:
    usage = node.group.usage_ns()
    used_cores = max(usage - node.last_usage_ns, 0) / 1e9 / dt_s if dt_s > 0 else 0.0
    node.last_usage_ns = usage
    cond = conditions(home, node.rec)
    util = thermal.utilization(used_cores, node.rec.cap_cores)
    node.thermal = thermal.tick(node.board, node.thermal, cond, util, now_s, dt_s)
    quota = thermal.quota_cores(node.rec.cap_cores, node.board, node.thermal.freq_mhz)
    if quota != node.quota_cores:
        node.group.set_cpu(quota)
        node.quota_cores = quota
    t = node.thermal
    reading = Reading(
        temp_c=t.temp_c,
        freq_mhz=t.freq_mhz,
        throttled=t.throttled,
        power_w=t.power_w,
        util=t.util,
        fan_duty=t.fan_duty,
        mem_used_bytes=node.group.memory_bytes(),
    )
    publish(node.sysroot, node.board, node.rec.ram_bytes, reading)
    publish_stat(node, used_cores, dt_s)


def publish_stat(node: _Node, used_cores: float, dt_s: float) -> None:
    """proc/stat for the node's four cores as its own processes keep them busy.

    A board whose clock is capped is still 100 % busy when saturated, so busy time is measured
    against the node's current quota (its capacity at the current clock), not its full cap.
    """
    busy_frac = min(1.0, used_cores / node.quota_cores) if node.quota_cores > 0 else 0.0
    ticks = max(dt_s, 0.0) * USER_HZ
    node.busy_jiffies += busy_frac * ticks * CORES
    node.total_jiffies += ticks * CORES
    busy, idle = int(node.busy_jiffies), int(node.total_jiffies - node.busy_jiffies)
    lines = [f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0"]
    lines += [
        f"cpu{i} {busy // CORES} 0 0 {idle // CORES} 0 0 0 0 0 0" for i in range(CORES)
    ]
    write_atomic(node.sysroot / "proc/stat", "\n".join(lines) + "\n")


def status_entry(node: _Node, home: Path) -> dict[str, object]:
    t, cond = node.thermal, conditions(home, node.rec)
    return {
        "temp_c": round(t.temp_c, 2),
        "freq_mhz": t.freq_mhz,
        "throttled": f"{t.throttled:#x}",
        "power_w": round(t.power_w, 2),
        "util": round(t.util, 3),
        "cap_cores": node.rec.cap_cores,
        "quota_cores": round(node.quota_cores, 4),
        "fan_duty": t.fan_duty,
        "cooling": cond.cooling.name,
        "ambient_c": cond.ambient_c,
    }


def run(home: Path) -> int:
    cluster = state.load(home)
    if cluster is None:
        log.error("no cluster record under %s", state.state_dir(home))
        return 1
    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    write_atomic(state.state_dir(home) / "supervisor.pid", f"{os.getpid()}\n")
    nodes = [initial(home, cluster, rec) for rec in cluster.nodes]
    status_path = state.state_dir(home) / "status.json"
    last = time.monotonic()
    while not stop:
        current = state.load(home)
        if current is None or current.id != cluster.id:
            log.info("cluster record gone: stopping")
            break
        now = time.monotonic()
        for node in nodes:
            try:
                step(home, node, now, now - last)
            except (OSError, ValueError) as exc:  # a node being torn down: keep the others
                log.warning("%s: %s", node.rec.name, exc)
        last = now
        status = {
            "id": cluster.id,
            "updated": time.time(),
            "nodes": {n.rec.name: status_entry(n, home) for n in nodes},
        }
        write_atomic(status_path, json.dumps(status, indent=1) + "\n")
        time.sleep(max(0.0, boards.tick_s - (time.monotonic() - now)))
    return 0


def main() -> None:
    home = Path(sys.argv[1])
    logging.basicConfig(
        filename=state.state_dir(home) / "supervisor.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    sys.exit(run(home))


if __name__ == "__main__":
    main()
