"""The node agent: samples every sensor at 1 Hz in a background thread into a ring buffer.

On a cluster it runs as a Ray actor pinned to its node (`start_agent_actor`), so telemetry
rides Ray's authenticated channel and opens no port. One-shot use (the probe, tests):

    python -m edgekit.thermal.agent --once --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit import names, settings
from edgekit.thermal import _procfs, config, firmware, sensors
from edgekit.thermal.reading import Poll, Reading, Sample

ACTOR_PREFIX = "edgekit-thermal-"  # Ray actor name = prefix + node name
RAY_NAMESPACE = "edgekit"

log = logging.getLogger("edgekit.thermal")


class Sampler:
    """Reads every sensor once per `sample()`; keeps what needs state between ticks."""

    def __init__(
        self,
        node: str,
        root: Path | None = None,
        firmware_clock: bool = True,
        clock: Callable[[], float] = time.time,
    ):
        self.node = node
        self.root = root if root is not None else settings.sysroot()
        self.firmware_clock = firmware_clock  # ask vcgencmd for the real clock when capped
        self._clock = clock
        self._vc = firmware.Vcgencmd()
        self._util = _procfs.CpuUtil(self.root)
        self._board = sensors.board_model(self.root)
        self._seq = 0
        self._cpu_last: tuple[float, float] | None = None

    @property
    def vcgencmd_spawns(self) -> int:
        return self._vc.spawns

    def sample(self) -> Sample:
        """Every sensor once; never raises for bad sensor data."""
        t_node = self._clock()
        zones = sensors.thermal_zones(self.root)
        freq = sensors.cpufreq_mhz(self.root)
        throttled = firmware.get_throttled(self._vc)
        # The firmware's real clock differs from cpufreq's request only while it caps the
        # clock, so `measure_clock arm` is spawned only then (or when bits are unreadable).
        capped = not throttled.ok or bool(throttled.value["any_now"])
        arm = firmware.measure_clock_arm(self._vc) if self.firmware_clock and capped else None
        clock = arm if arm is not None and arm.ok else freq["cur"]
        util = self._util.read()
        mem = _procfs.memory_mb(self.root)
        self._seq += 1
        return Sample(
            node=self.node,
            seq=self._seq,
            t_node=t_node,
            board=self._board,
            temp_c=sensors.soc_temp(zones),
            freq_mhz=clock,
            max_freq_mhz=freq["max"],
            throttled=throttled,
            under_voltage=sensors.under_voltage_hwmon(self.root),
            power_w=self._power(util, clock, freq["max"]),
            util=util,
            mem_total_mb=mem["total"],
            mem_available_mb=mem["available"],
            load_1m=_procfs.load_1m(self.root),
            fan_rpm=sensors.fan_rpm(self.root),
            zones=zones,
            agent_cpu_frac=self._own_cpu(t_node),
        )

    def _power(self, util: Reading, clock: Reading, max_mhz: Reading) -> Reading:
        pmic = firmware.pmic_power(self._vc)
        if pmic.ok:
            return pmic
        hw = sensors.hwmon_power(self.root)
        if hw.ok:
            return hw
        return sensors.estimate_power(self._board, util.value, clock.value, max_mhz.value)

    def _own_cpu(self, now: float) -> float | None:
        """This process's CPU (children included: vcgencmd) as a fraction of one core."""
        t = os.times()
        cpu = t.user + t.system + t.children_user + t.children_system
        last, self._cpu_last = self._cpu_last, (now, cpu)
        if last is None or now <= last[0]:
            return None
        return round((cpu - last[1]) / (now - last[0]), 5)


class NodeAgent:
    """Samples in a background thread at `interval_s`; readers take the ring buffer."""

    def __init__(
        self,
        node: str,
        interval_s: float = config.sample_interval_s,
        root: str | None = None,
        firmware_clock: bool = True,
    ):
        self._sampler = Sampler(node, Path(root) if root else None, firmware_clock)
        self.agent_id = os.urandom(6).hex()  # this instance (see Poll.agent_id)
        self._interval_s = interval_s
        self._ring: deque[Sample] = deque(maxlen=config.ring_buffer_len)
        self._error: str | None = None  # the last sampling failure, shown by info()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"agent-{node}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                sample = self._sampler.sample()
            except Exception as exc:  # a bug must not kill telemetry silently: record it
                log.exception("sampling failed on %s", self._sampler.node)
                with self._lock:
                    self._error = f"{time.time():.0f}: {exc!r}"
            else:
                with self._lock:
                    self._ring.append(sample)
            next_t += self._interval_s
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def latest(self) -> Sample | None:
        with self._lock:
            return self._ring[-1] if self._ring else None

    def poll(self, seq: int) -> dict[str, Any]:
        """Samples newer than `seq` plus the node's clock now (the head estimates skew) and
        this agent's id. This is the Ray boundary: the answer is `Poll.to_dict()`."""
        return Poll(time.time(), self.since(seq), self.agent_id).to_dict()

    def since(self, seq: int) -> list[Sample]:
        """Samples newer than `seq` (a reader that missed ticks catches up). A `seq` beyond
        any this agent made was another agent's (this node's, before it rebooted): the
        reader gets everything kept, not nothing until this count passes the old one."""
        with self._lock:
            if self._ring and seq > self._ring[-1].seq:
                seq = 0
            return [s for s in self._ring if s.seq > seq]

    def info(self) -> dict[str, Any]:
        return {
            "node": self._sampler.node,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "sysroot": str(self._sampler.root),
            "vcgencmd_spawns": self._sampler.vcgencmd_spawns,
            "last_error": self._error,
        }

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def start_agent_actor(node: str, interval_s: float = config.sample_interval_s) -> Any:
    """Start (or find) the agent actor for `node`, pinned to the Ray node that carries the
    custom resource `edgekit-node-<node>` (hard node affinity; uses no CPU or resource units).
    Needs `ray.init()` already done by the caller (the API server). Returns the actor handle."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from edgekit.errors import ClusterError

    resource = names.node_resource(node)
    node_ids = [
        n["NodeID"] for n in ray.nodes() if n.get("Alive") and resource in n.get("Resources", {})
    ]
    if not node_ids:
        raise ClusterError(
            f"no live Ray node carries resource {resource!r}",
            where=node,
            hint=f"start the node's raylet with --resources '{{\"{resource}\": 1}}'",
        )
    actor_cls = ray.remote(NodeAgent).options(
        name=ACTOR_PREFIX + node,
        namespace=RAY_NAMESPACE,
        get_if_exists=True,
        lifetime="detached",
        num_cpus=0,
        max_concurrency=4,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_ids[0], soft=False),
    )
    return actor_cls.remote(node, interval_s)


def stop_agent_actor(node: str) -> None:
    """Kill the node's agent actor if it exists (undeploy, tests)."""
    import ray

    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(ACTOR_PREFIX + node, namespace=RAY_NAMESPACE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgekit.thermal.agent",
        description="Read this node's thermal/power sensors.",
    )
    parser.add_argument("--once", action="store_true", help="take one reading and exit")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per line)")
    parser.add_argument("--node", default=socket.gethostname(), help="node name to report")
    parser.add_argument("--interval-s", type=float, default=config.sample_interval_s)
    parser.add_argument("--count", type=int, default=0, help="samples to take (0 = forever)")
    args = parser.parse_args(argv)
    sampler = Sampler(args.node)
    if args.once:  # utilisation needs two points: prime, wait a short moment, read
        sampler.sample()
        time.sleep(min(0.2, args.interval_s))
    n = 0
    while True:
        sample = sampler.sample()
        if args.json:
            print(json.dumps(sample.to_dict()), flush=True)
        else:
            print(_one_line(sample), flush=True)
        n += 1
        if args.once or (args.count and n >= args.count):
            return 0
        time.sleep(args.interval_s)


def _one_line(s: Sample) -> str:
    def v(r: Reading, fmt: str) -> str:
        return format(r.value, fmt) if r.value is not None else "-"

    raw = s.throttle_raw
    return (
        f"{s.node} {v(s.temp_c, '.1f')} C  {v(s.freq_mhz, '.0f')} MHz  "
        f"{v(s.power_w, '.2f')} W ({s.power_w.source})  util {v(s.util, '.0%')}  "
        f"throttled {'?' if raw is None else hex(raw)}"
    )


if __name__ == "__main__":
    sys.exit(main())
