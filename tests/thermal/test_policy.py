"""The policy as pure functions, driven by a fake clock."""

from __future__ import annotations

from edgekit.thermal import policy
from edgekit.thermal.config import PolicyConfig

CFG = PolicyConfig()


def series(temps: list[float], t0: float = 0.0) -> tuple[tuple[float, float], ...]:
    return tuple((t0 + i, c) for i, c in enumerate(temps))


def run(temps_by_tick: list[float], state: policy.PolicyMemory | None = None, **kw):
    """Feed one new temperature per second; return every decision."""
    st = state or policy.PolicyMemory()
    out = []
    for i in range(len(temps_by_tick)):
        inp = policy.NodeInput("pi1", float(i), series(temps_by_tick[: i + 1]), **kw)
        st, d = policy.decide(st, inp, CFG)
        out.append(d)
    return st, out


def test_slope_least_squares() -> None:
    assert abs(policy.slope_c_per_s(series([50, 51, 52, 53]), 3, 10) - 1.0) < 1e-9
    assert policy.slope_c_per_s(series([50]), 0, 10) == 0.0


def test_cool_node_serves_at_full_weight() -> None:
    _, ds = run([50, 50.2, 50.1, 50.3])
    assert ds[-1].state == "serving" and ds[-1].weight == 1.0 and "headroom" in ds[-1].reason


def test_rising_node_sheds_before_reaching_the_threshold() -> None:
    _, ds = run([64, 65, 66, 67, 68])  # 1 °C/s: predicted 74 °C
    d = ds[-1]
    assert d.state == "shedding" and 0.1 < d.weight < 1.0 and d.predicted_c == 74.0


def test_drain_on_prediction_and_on_throttle_bits() -> None:
    _, ds = run([70, 71.5, 73, 74.5])  # 1.5 °C/s -> predicted 83.5 °C
    assert ds[-1].state == "drained" and "predicted" in ds[-1].reason
    _, ds = run([60, 60, 60], throttled_now=True)
    assert ds[-1].state == "drained" and "throttling" in ds[-1].reason


def test_readmit_needs_cool_and_not_rising_for_hold_time_no_flapping() -> None:
    st = policy.PolicyMemory("drained", 0.1, drained_at_s=0.0)
    temps: list[float] = [79.0]
    states = []
    # cool down to 71 then hover around 71.5 with noise: must come back exactly once
    for i in range(1, 40):
        temps.append(max(71.0, 79.0 - 0.5 * i) + (0.3 if i % 2 else -0.3))
        inp = policy.NodeInput("pi1", float(i), series(temps))
        st, d = policy.decide(st, inp, CFG)
        states.append(d.state)
    first_back = next(i for i, s in enumerate(states) if s != "drained")
    assert all(s != "drained" for s in states[first_back:])  # no flapping
    assert temps[first_back + 1] < CFG.readmit_temp_c + 0.31


def test_stale_node_gets_neutral_weight() -> None:
    _, d = policy.decide(policy.PolicyMemory(), policy.NodeInput("pi1", 5.0, stale=True), CFG)
    assert d.weight == CFG.stale_weight and "stale" in d.reason


def test_sensorless_node_is_unknown_at_full_weight() -> None:
    """No temperature is no reason to send a node less (it halved every such node's queue)."""
    inp = policy.NodeInput("pi1", 5.0, sensor_detail="no thermal zone under sys/class/thermal")
    st, d = policy.decide(policy.PolicyMemory(), inp, CFG)
    assert (d.state, d.weight, st.weight) == (policy.UNKNOWN, 1.0, 1.0)
    assert "no temperature sensor (no thermal zone" in d.reason and "unchanged" in d.reason
    assert d.temp_c is None and d.predicted_c is None


def test_sensorless_node_still_sheds_on_firmware_throttling_or_under_voltage() -> None:
    for kw, why in (({"throttled_now": True}, "throttling"), ({"under_voltage_now": True},
                                                               "under-voltage")):
        _, d = policy.decide(policy.PolicyMemory(), policy.NodeInput("pi1", 5.0, **kw), CFG)
        assert d.state == "shedding" and d.weight == CFG.min_weight
        assert why in d.reason and "no temperature sensor" in d.reason


def test_under_voltage_sheds_to_min_weight() -> None:
    _, ds = run([50, 50], under_voltage_now=True)
    assert ds[-1].weight == CFG.min_weight and "under-voltage" in ds[-1].reason


def test_power_cap_aimd() -> None:
    d = policy.power_cap_step(None, 15.0, 18.0, 10, 9.3, CFG)
    assert d.limit == 8 and "over power cap" in d.reason
    d = policy.power_cap_step(8, 15.0, 14.0, 8, 9.3, CFG)
    assert d.limit == 8 and "held" in d.reason
    d = policy.power_cap_step(8, 15.0, 12.0, 8, 9.3, CFG)
    assert d.limit == 9
    assert policy.power_cap_step(63, 15.0, 10.0, 1, 9.3, CFG).limit is None
    assert policy.power_cap_step(None, None, 30.0, 5, 9.3, CFG).limit is None
    assert "idle power" in policy.power_cap_step(None, 5.0, 9.0, 5, 9.3, CFG).reason
    floor = policy.power_cap_step(1, 13.6, 14.1, 1, 9.3, CFG)  # benchmark: 1 in flight, 14.1 W
    assert floor.limit == 1 and "minimum in-flight limit" in floor.reason


def test_efficiency_factors() -> None:
    f = policy.efficiency_factors({"a": 0.5, "b": 1.0, "c": None, "d": 10.0})
    assert f == {"a": 1.0, "b": 0.5, "c": 1.0, "d": 0.25}


def _simulate(seconds: int, idle_c: float, loaded_c: float) -> tuple[int, list[str]]:
    """A node whose idle temperature sits just under readmit_temp_c and that heats past the
    drain point within seconds of taking load (2 °C/s up while routed to, 1 °C/s down while
    drained): readmits counted over `seconds` ticks of 1 s."""
    mem, temps, t, readmits, reasons = policy.PolicyMemory(), [idle_c], idle_c, 0, []
    for now in range(seconds):
        inp = policy.NodeInput("pi1", float(now), series(temps[-15:], now - len(temps[-15:]) + 1))
        prev = mem.state
        mem, d = policy.decide(mem, inp, CFG)
        readmits += prev == policy.DRAINED and d.state != policy.DRAINED
        reasons.append(d.reason)
        t = min(loaded_c, t + 2.0) if d.state != policy.DRAINED else max(idle_c, t - 1.0)
        temps.append(t)
    return readmits, reasons


def test_a_node_that_heats_again_at_once_is_kept_out_longer_each_time() -> None:
    """Issue #16: near its idle temperature a heated node was drained and readmitted over
    and over (every ~15 s); each drain that follows a readmit within flap_window_s doubles
    the time out, up to max_drain_s."""
    readmits, reasons = _simulate(600, idle_c=70.0, loaded_c=80.0)
    assert 3 <= readmits <= 8, readmits  # fixed 5 s holds gave ~40 in 10 minutes
    assert any("drained 4 times in a row" in r for r in reasons), reasons[-5:]
    assert policy.drain_hold_s(20, CFG) == CFG.max_drain_s


def test_flapping_is_forgotten_after_serving_for_the_flap_window() -> None:
    mem = policy.PolicyMemory(policy.SERVING, 1.0, readmitted_at_s=0.0, flaps=3)
    inp = policy.NodeInput("pi1", CFG.flap_window_s + 1, series([60.0, 60.0], CFG.flap_window_s))
    mem, _ = policy.decide(mem, inp, CFG)
    assert mem.flaps == 0 and mem.readmitted_at_s is None
    mem = policy.PolicyMemory(policy.SERVING, 1.0, readmitted_at_s=0.0, flaps=3)
    inp = policy.NodeInput("pi1", 10.0, series([60.0, 60.0], 9.0))
    assert policy.decide(mem, inp, CFG)[0].flaps == 3  # still within the window
