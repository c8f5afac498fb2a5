"""A node whose agent answers but has no temperature sensor (a host, a VM, a board without a
thermal zone): routed at full weight with the real router, the power cap still applied from
its (estimated) power, and `status()` (what `/edgekit/status` shows under "thermal") says
the sensor is missing. Before, such a node got the stale weight 0.5, which halved its queue
bound: a cluster of them refused most of a bench with 503s."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import make_sysroot, set_stat, write
from fakes import ManualClock

from edgekit.serve.router import Replica, Router, Saturated
from edgekit.thermal.controller import ThermalController
from edgekit.thermal.sources import SamplerSource

MAX_QUEUE = 4


def build(tmp_path: Path, *, sensor: dict[str, bool]):
    roots = {n: make_sysroot(tmp_path / n, temp_mc=55000 if has else None)
             for n, has in sensor.items()}
    clock = ManualClock()
    router = Router(clock=clock)
    for n in roots:
        router.add(Replica("m", (n,), None, MAX_QUEUE))
    ctl = ThermalController(SamplerSource(roots, firmware_clock=False, clock=clock), clock=clock,
                            run_dir=tmp_path / "run")
    ctl.attach(router)
    return roots, clock, router, ctl


def tick(ctl: ThermalController, clock: ManualClock, roots: dict[str, Path], i: int,
         busy_per_tick: int = 100) -> None:
    for root in roots.values():
        set_stat(root, busy=1000 + busy_per_tick * (i + 1), idle=1000)
    ctl.tick()
    clock.t += 1.0


def acquirable(router: Router, node: str) -> int:
    """How many requests the node's replica takes before the router refuses (then released)."""
    taken = []
    others = {id(r) for r in router.replicas if r.nodes != (node,)}
    try:
        while True:
            taken.append(router.acquire("m", exclude=others))
    except Saturated:
        pass
    for r in taken:
        router.release(r, True, 1.0, 1.0)
    return len(taken)


def test_sensorless_node_keeps_full_weight_and_status_says_sensor_missing(
    tmp_path: Path, no_vcgencmd
) -> None:
    roots, clock, router, ctl = build(tmp_path, sensor={"pi1": True, "pi2": False})
    for i in range(6):
        tick(ctl, clock, roots, i)
    stats = router.node_stats()
    assert stats["pi2"].weight == 1.0 and stats["pi2"].state == "serving"
    assert acquirable(router, "pi2") == MAX_QUEUE == acquirable(router, "pi1")
    st = ctl.status()
    row = st["nodes"]["pi2"]
    assert row["temp_sensor"] == "missing" and "thermal" in row["temp_sensor_detail"]
    assert row["state"] == "unknown" and row["weight"] == 1.0 and not row["stale"]
    assert "no temperature sensor" in row["reason"] and "unchanged" in row["reason"]
    assert st["nodes"]["pi1"]["temp_sensor"] == "present"
    assert st["temp_sensor_missing"] == ["pi2"]
    assert row["power_w"] is not None  # estimated from CPU use: the power cap can still act


def test_power_cap_still_applies_to_sensorless_nodes(tmp_path: Path, no_vcgencmd) -> None:
    roots, clock, router, ctl = build(tmp_path, sensor={"pi1": False, "pi2": False})
    ctl.power_cap_w = 8.0  # two Pi 4 boards at full load draw ~12 W (estimated)
    for r in router.replicas:  # requests in flight, as under load
        for _ in range(MAX_QUEUE):
            router.acquire("m", exclude={id(o) for o in router.replicas if o is not r})
    for i in range(6):
        tick(ctl, clock, roots, i, busy_per_tick=1000)  # fully busy
    assert router.max_in_flight is not None and router.max_in_flight < 2 * MAX_QUEUE
    assert "over power cap" in ctl.status()["cap_reason"]
    assert {s.weight for s in router.node_stats().values()} == {1.0}


def test_sensor_that_vanishes_is_not_steered_by_its_last_reading(
    tmp_path: Path, no_vcgencmd
) -> None:
    roots, clock, router, ctl = build(tmp_path, sensor={"pi1": True})
    zone = roots["pi1"] / "sys/class/thermal/thermal_zone0"
    for i in range(15):  # heating fast: shed, then drained
        write(zone / "temp", f"{(66 + i) * 1000}\n")
        tick(ctl, clock, roots, i)
    assert ctl.status()["nodes"]["pi1"]["state"] in ("shedding", "drained")
    shutil.rmtree(zone)
    for i in range(15, 18):
        tick(ctl, clock, roots, i)
    row = ctl.status()["nodes"]["pi1"]
    assert row["temp_sensor"] == "missing" and row["state"] == "unknown"
    assert router.node_stats()["pi1"].weight == 1.0
    assert router.node_stats()["pi1"].state == "serving"
