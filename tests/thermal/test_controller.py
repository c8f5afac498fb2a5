"""The controller with real samplers over sysroot folders, a fake router and a manual clock."""

from __future__ import annotations

from pathlib import Path

from conftest import make_sysroot, set_stat, write
from fakes import FakeControl, ManualClock

from edgekit.serve.control import NodeStats
from edgekit.serve.router import Replica, Router
from edgekit.thermal.controller import ThermalController
from edgekit.thermal.recorder import read_telemetry
from edgekit.thermal.sources import SamplerSource


def set_temp(root: Path, temp_c: float) -> None:
    write(root / "sys/class/thermal/thermal_zone0/temp", f"{int(temp_c * 1000)}\n")


def cluster(tmp_path: Path):
    roots = {n: make_sysroot(tmp_path / n) for n in ("pi1", "pi2", "pi3")}
    clock = ManualClock()
    source = SamplerSource(roots, firmware_clock=False, clock=clock)
    control = FakeControl({n: NodeStats(n, requests_per_s=5.0) for n in roots})
    ctl = ThermalController(source, clock=clock, run_dir=tmp_path / "run")
    ctl.attach(control)
    return roots, source, control, clock, ctl


def step(ctl, clock, roots, temps: dict[str, float], busy: int, idle: int | None = None) -> None:
    for n, root in roots.items():
        set_temp(root, temps.get(n, 50.0))
        set_stat(root, busy=busy, idle=busy if idle is None else idle)
    ctl.tick()
    clock.t += 1.0


def test_hot_node_is_shed_then_drained_then_readmitted(tmp_path: Path, no_vcgencmd) -> None:
    roots, _, control, clock, ctl = cluster(tmp_path)
    for i in range(30):  # pi3 heats 1 °C/s from 60 °C
        step(ctl, clock, roots, {"pi3": 60 + i}, busy=1000 + 100 * (i + 1))
        states = {n: r["state"] for n, r in ctl.status()["nodes"].items()}
        if states["pi3"] == "drained":
            break
    assert ("drain", "pi3") in control.calls
    assert ctl.status()["nodes"]["pi3"]["temp_c"] < 78.0  # drained before the threshold
    assert any(c[0] == "set_weight" and c[1] == "pi3" and c[2] < 1 for c in control.calls)
    assert states["pi1"] == states["pi2"] == "serving"
    t = 78.0
    for _ in range(40):  # cool down, then hold
        t = max(65.0, t - 1.0)
        step(ctl, clock, roots, {"pi3": t}, busy=5000)
    assert ("readmit", "pi3") in control.calls
    assert [c for c in control.calls if c == ("drain", "pi3")] == [("drain", "pi3")]
    st = ctl.status()
    assert st["nodes"]["pi3"]["state"] == "serving"
    reasons = [d["reason"] for d in st["decisions"] if d["node"] == "pi3"]
    assert any(r.startswith("drain:") for r in reasons) and any("readmit" in r for r in reasons)
    rows = read_telemetry(tmp_path / "run")
    assert {r["node"] for r in rows} == {"pi1", "pi2", "pi3"}
    assert max(r["temp_c"] for r in rows if r["node"] == "pi3") < 80.0
    assert (tmp_path / "run/decisions.csv").read_text().count("pi3") >= 2


def test_dead_agent_goes_stale_untrusted_routing_keeps_working(tmp_path: Path, no_vcgencmd) -> None:
    roots, source, control, clock, ctl = cluster(tmp_path)
    for i in range(3):
        step(ctl, clock, roots, {}, busy=1000 + 100 * (i + 1))
    source.dead.add("pi2")
    for i in range(8):
        step(ctl, clock, roots, {}, busy=2000 + 100 * (i + 1))
    row = ctl.status()["nodes"]["pi2"]
    assert row["stale"] and "stale" in row["reason"] and row["weight"] == 0.5
    assert ("drain", "pi2") not in control.calls  # still routed, at a neutral weight
    assert ctl.node_power_w()["pi2"] is None and ctl.node_power_w()["pi1"] is not None


def test_clock_skew_reported_and_does_not_break_staleness(tmp_path: Path, no_vcgencmd) -> None:
    roots = {"pi1": make_sysroot(tmp_path / "pi1")}
    head, node = ManualClock(1000.0), ManualClock(4600.0)  # node clock an hour ahead
    ctl = ThermalController(SamplerSource(roots, False, clock=node), clock=head)
    ctl.attach(FakeControl())
    for i in range(3):
        set_stat(roots["pi1"], busy=1000 + 100 * (i + 1), idle=1000)
        ctl.tick()
        head.t += 1.0
        node.t += 1.0
    row = ctl.status()["nodes"]["pi1"]
    assert abs(row["skew_s"] - 3600.0) < 5.0 and not row["stale"]


def test_power_cap_turns_into_admission_limit(tmp_path: Path, no_vcgencmd) -> None:
    roots, _, control, clock, ctl = cluster(tmp_path)
    ctl.power_cap_w = 12.0  # 3 Pi 4 boards at full load draw ~18 W (estimated)
    for st in control.stats.values():
        st.outstanding = 4
    for i in range(6):
        step(ctl, clock, roots, {}, busy=1000 + 1000 * (i + 1))  # fully busy
    assert control.limit is not None and control.limit < 12
    assert "over power cap" in ctl.status()["cap_reason"]
    for i in range(80):
        step(ctl, clock, roots, {}, busy=8000, idle=8000 + 100 * (i + 1))  # idle ~9.3 W
    assert control.limit is None


def routed_cluster(tmp_path: Path):
    """Three nodes behind the real router (one model per node, so a test picks the node)."""
    roots = {n: make_sysroot(tmp_path / n) for n in ("pi1", "pi2", "pi3")}
    clock = ManualClock()
    router = Router(clock=clock)
    for n in roots:
        router.add(Replica(n, (n,), None, 4))
    ctl = ThermalController(SamplerSource(roots, firmware_clock=False, clock=clock),
                            clock=clock, run_dir=tmp_path / "run")
    ctl.attach(router)
    return roots, router, clock, ctl


def serve(router: Router, node: str, n: int) -> None:
    for _ in range(n):
        router.release(router.acquire(node), True, 5.0, 4.0)


def test_energy_per_inference(tmp_path: Path, no_vcgencmd) -> None:
    roots, router, clock, ctl = routed_cluster(tmp_path)
    for i in range(11):
        for n in roots:
            serve(router, n, 10)
        step(ctl, clock, roots, {}, busy=1000 + 100 * (i + 1))
    st = ctl.status()
    jpi = st["nodes"]["pi1"]["j_per_inference"]
    assert jpi is not None and 0.3 < jpi < 0.7  # ~4.6 W at 50 % util / 10 inferences per s
    assert abs(st["cluster"]["j_per_inference"] - jpi) < 0.01
    # one figure: the controller shows the router's, which /edgekit/status and /metrics show
    energy = router.energy()
    assert energy["nodes"]["pi1"] == jpi and energy["j_per_inference"] == st["cluster"][
        "j_per_inference"]
    assert router.node_stats()["pi1"].extra["power_w"] == ctl.node_power_w()["pi1"]


def test_policy_off_watches_but_does_not_steer(tmp_path: Path, no_vcgencmd) -> None:
    roots, _, control, clock, ctl = cluster(tmp_path)
    ctl.enabled = False
    for i in range(20):
        step(ctl, clock, roots, {"pi3": 70 + i}, busy=1000 + 100 * (i + 1))
    assert control.calls == []
    assert any("policy off" in d["reason"] for d in ctl.status()["decisions"])


def test_power_cap_weighs_marginal_energy_so_a_quiet_node_is_not_starved(
    tmp_path: Path, no_vcgencmd
) -> None:
    """Same boards, same CPU per inference; pi3 gets a fifth of the requests. Its total J per
    inference is high (its idle power is spread over few requests) but its marginal cost is the
    same, so under a cap its weight is not cut (it was: the feedback starved it further)."""
    roots, router, clock, ctl = routed_cluster(tmp_path)
    ctl.power_cap_w = 10.0  # 4.6 + 4.6 + 3.4 W estimated: over the cap
    share = {"pi1": 10, "pi2": 10, "pi3": 2}  # requests and 5 % util per request, per tick
    for i in range(1, 12):
        for n, root in roots.items():
            set_temp(root, 50.0)
            set_stat(root, busy=1000 + 50 * share[n] * i, idle=1000 + (100 - 5 * share[n]) * 10 * i)
            serve(router, n, share[n])
        ctl.tick()
        clock.t += 1.0
    rows = ctl.status()["nodes"]
    assert router.max_in_flight is not None
    assert rows["pi3"]["j_per_inference"] > 3 * rows["pi1"]["j_per_inference"]  # total: idle too
    assert router.node_stats()["pi3"].weight >= 0.9


def test_a_watched_node_the_router_does_not_route_to_breaks_nothing(tmp_path: Path,
                                                                    no_vcgencmd) -> None:
    """The controller watches every edgekit node; the router knows only those serving a model
    (a deploy that placed nothing on pi3). Its power must not reach the router (a KeyError
    there failed every tick: no steering at all, seen in the deploy tests)."""
    roots = {n: make_sysroot(tmp_path / n) for n in ("pi1", "pi2", "pi3")}
    clock = ManualClock()
    router = Router(clock=clock)
    for n in ("pi1", "pi2"):
        router.add(Replica(n, (n,), None, 4))
    ctl = ThermalController(SamplerSource(roots, firmware_clock=False, clock=clock),
                            clock=clock, run_dir=tmp_path / "run")
    ctl.attach(router)
    for i in range(4):
        serve(router, "pi1", 5)
        step(ctl, clock, roots, {"pi2": 79.5}, busy=1000 + 100 * (i + 1))
    stats = router.node_stats()
    assert "power_w" in stats["pi1"].extra and "pi3" not in stats
    assert stats["pi2"].state == "drained"  # the tick ran to the end: the hot node steered
    assert "pi3" in ctl.status()["nodes"]  # still watched
