"""Routing logic with fakes and an injected clock (no Ray, no HTTP)."""

from __future__ import annotations

import pytest

from edgekit.serve.control import DRAINED, SHEDDING
from edgekit.serve.router import NoCapacity, Replica, Router, Saturated


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(nodes=("pi1", "pi2"), max_queue=4):
    r = Router(clock=Clock())
    reps = {n: Replica("m", (n,), None, max_queue) for n in nodes}
    for rep in reps.values():
        r.add(rep)
    return r, reps


def test_least_outstanding_spreads_requests():
    r, _reps = make()
    picked = [r.acquire("m").nodes[0] for _ in range(4)]
    assert sorted(picked) == ["pi1", "pi1", "pi2", "pi2"]


def test_bounded_queue_then_saturated_with_retry_after():
    r, _ = make(max_queue=2)
    for _ in range(4):
        r.acquire("m")
    with pytest.raises(Saturated) as exc:
        r.acquire("m")
    assert exc.value.retry_after_s >= 1


def test_weight_shifts_share_and_shrinks_queue():
    r, _reps = make(max_queue=4)
    r.set_weight("pi2", 0.5, "hot")
    assert r.node_stats()["pi2"].state == SHEDDING
    picks = [r.acquire("m").nodes[0] for _ in range(6)]
    assert picks.count("pi1") == 4 and picks.count("pi2") == 2  # pi2 capped at 4*0.5


def test_drain_and_readmit():
    r, _reps = make()
    r.drain("pi1", "maintenance")
    assert r.node_stats()["pi1"].state == DRAINED
    assert {r.acquire("m").nodes[0] for _ in range(3)} == {"pi2"}
    r.readmit("pi1", "cool again")
    assert r.acquire("m").nodes[0] == "pi1"


def test_dead_replica_excluded_and_no_capacity():
    r, reps = make()
    r.mark_dead(reps["pi1"], "actor died")
    assert r.capacity("m") == (1, 2)
    assert r.acquire("m").nodes[0] == "pi2"
    r.mark_dead(reps["pi2"], "actor died")
    with pytest.raises(NoCapacity):
        r.acquire("m")
    r.mark_alive(reps["pi1"], "ping")
    assert r.node_stats()["pi1"].alive


def test_admission_limit():
    r, _ = make()
    r.admission_limit(1, "power budget")
    rep = r.acquire("m")
    with pytest.raises(Saturated):
        r.acquire("m")
    r.release(rep, True, 5.0, 4.0)
    r.acquire("m")


def test_stats_window():
    r, _reps = make()
    clock = r.clock
    for _ in range(30):
        rep = r.acquire("m")
        r.release(rep, True, 10.0, 8.0)
    st = r.node_stats()["pi1"]
    assert st.completed_total == 15 and st.p50_ms == 10.0 and st.compute_ms_mean == 8.0
    assert "energy_j_per_inference" not in st.extra  # no power reported: no figure
    clock.t = 100.0
    assert r.node_stats()["pi1"].requests_per_s == 0.0


def serve_for(r: Router, seconds: int, per_s: dict[str, int], watts: dict[str, float]) -> None:
    """Each second: complete per_s[node] requests on each node, then report its power."""
    for _ in range(seconds):
        r.clock.t += 1.0
        for node, n in per_s.items():
            for _ in range(n):
                rep = r.acquire(node)
                r.release(rep, True, 5.0, 4.0)
        for node, w in watts.items():
            r.report_power(node, w)


def test_energy_per_inference_is_integrated_power_over_completed_requests():
    r = Router(clock=Clock())
    for n in ("pi1", "pi2"):
        r.add(Replica(n, (n,), None, 4))  # one model per node: the test picks the node
    serve_for(r, 10, {"pi1": 10, "pi2": 2}, {"pi1": 6.0, "pi2": 4.0})
    st = r.node_stats()
    assert st["pi1"].extra["energy_j_per_inference"] == pytest.approx(0.6)  # 6 W / 10 per s
    assert st["pi2"].extra["energy_j_per_inference"] == pytest.approx(2.0)
    assert r.nodes["pi1"].energy.energy_j == pytest.approx(54.0)  # 9 intervals after the 1st
    e = r.energy()
    assert e["j_per_inference"] == pytest.approx(10.0 / 12, abs=1e-3)  # 10 W over 12 req/s
    assert e["nodes"] == {"pi1": pytest.approx(0.6), "pi2": pytest.approx(2.0)}
    assert e["power_w"] == 10.0
    # a power step inside the window counts for as long as it lasted, not as the last reading
    serve_for(r, 10, {"pi1": 10}, {"pi1": 12.0})
    assert r.node_stats()["pi1"].extra["energy_j_per_inference"] == pytest.approx(
        (6.0 * 9 + 12.0 * 10) / 190, abs=1e-3)


def test_energy_skips_stale_gaps_and_expires_without_reports():
    r = Router(clock=Clock())
    r.add(Replica("pi1", ("pi1",), None, 4))
    serve_for(r, 3, {"pi1": 5}, {"pi1": 5.0})
    r.clock.t += 60.0  # telemetry silent for a minute: no energy invented for the gap
    serve_for(r, 2, {"pi1": 5}, {"pi1": 5.0})
    assert r.nodes["pi1"].energy.energy_j == pytest.approx(5.0 * 3)
    r.clock.t += 31.0  # no report within the window: no figure rather than an old one
    assert "energy_j_per_inference" not in r.node_stats()["pi1"].extra
    assert r.energy()["nodes"]["pi1"] is None
    assert r.energy()["j_per_inference"] is None


def test_pipeline_request_counts_once_for_the_cluster():
    r = Router(clock=Clock())
    r.add(Replica("p", ("pi1", "pi2"), None, 4))
    serve_for(r, 5, {"p": 4}, {"pi1": 3.0, "pi2": 3.0})
    e = r.energy()
    assert e["nodes"]["pi1"] == pytest.approx(0.75)  # each node: 3 W over its 4 requests/s
    assert e["j_per_inference"] == pytest.approx(1.5)  # both nodes' 6 W over 4 requests/s


def test_power_report_for_an_unknown_node_names_it():
    r, _ = make()
    with pytest.raises(KeyError, match="pi9"):
        r.report_power("pi9", 3.0)


def test_pipeline_replica_uses_its_slowest_node_weight():
    r = Router(clock=Clock())
    pipe = Replica("p", ("pi1", "pi2"), None, 4)
    r.add(pipe)
    r.drain("pi2", "x")
    with pytest.raises(NoCapacity):
        r.acquire("p")


def test_router_state_is_safe_from_a_controller_thread():
    """Issue 12 (9): the event loop acquires/releases while the thermal controller's thread
    reads stats and re-weights; unguarded, `_retry_after` iterated a latency window that
    `node_stats` trimmed ("deque mutated during iteration": one HTTP 500 under load)."""
    import sys
    import threading
    import time

    r = Router(window_s=0.0005)  # real clock, tiny window: node_stats trims on every call
    for n in ("pi1", "pi2", "pi3"):
        r.add(Replica("m", (n,), None, 2))
    errors: list[BaseException] = []
    stop = threading.Event()

    def loop_side() -> None:
        while not stop.is_set():
            held = []
            try:
                while True:
                    held.append(r.acquire("m"))
            except Saturated:  # full: Retry-After is computed from every node's window
                pass
            except BaseException as exc:
                errors.append(exc)
                return
            for rep in held:
                r.release(rep, True, 5.0, 4.0)

    def controller_side() -> None:
        i = 0
        while not stop.is_set():
            try:
                r.node_stats()
                r.energy()
                r.set_weight("pi2", 0.5 + (i % 2) / 2, "hot")
                r.report_power("pi1", 5.0)
                r.recent_events(10)
            except BaseException as exc:
                errors.append(exc)
                return
            i += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    threads = [threading.Thread(target=f) for f in (loop_side, controller_side)]
    try:
        for t in threads:
            t.start()
        time.sleep(3.0)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        sys.setswitchinterval(old)
    assert errors == []
    assert r.in_flight == 0 and all(rep.outstanding == 0 for rep in r.replicas)
