"""The pure thermal model and firmware governor, driven by a fake clock."""

from __future__ import annotations

from edgekit.virtual import boards, thermal
from edgekit.virtual.boards import BOARDS, COOLING


def run_load(board: str, cooling: str, seconds: float, ambient: float = 25.0, load: float = 1.0,
             state: thermal.NodeThermal | None = None, t0: float = 0.0):  # fmt: skip
    """Simulate `seconds` of CPU load (share of the full-speed cap) at 4 Hz; the node uses
    at most its clock-scaled quota, as the cgroup enforces. Returns (states, times)."""
    b = BOARDS[board]
    cond = thermal.Conditions(COOLING[(board, cooling)], ambient)
    s = state or thermal.idle_state(b, cond)
    states, times, now = [], [], t0
    for _ in range(int(seconds / boards.tick_s)):
        now += boards.tick_s
        used = min(load, thermal.quota_cores(1.0, b, s.freq_mhz))
        s = thermal.tick(b, s, cond, thermal.utilization(used, 1.0), now, boards.tick_s)
        states.append(s)
        times.append(now)
    return states, times


def test_power_rises_with_load_and_clock():
    b = BOARDS["pi4"]
    assert thermal.power_w(b, 0.0, 1500) == b.idle_w
    assert thermal.power_w(b, 1.0, 1500) == b.full_w
    assert thermal.power_w(b, 0.5, 1500) < thermal.power_w(b, 1.0, 1500)
    assert thermal.power_w(b, 1.0, 600) < thermal.power_w(b, 1.0, 1500)


def test_thermal_step_approaches_steady_state_from_both_sides():
    target = 25 + 5 * 10
    up = thermal.thermal_step(40.0, 5.0, 25.0, 10.0, 15.0, 1.0)
    down = thermal.thermal_step(90.0, 5.0, 25.0, 10.0, 15.0, 1.0)
    assert 40 < up < target < down < 90
    settled = 40.0
    for _ in range(400):
        settled = thermal.thermal_step(settled, 5.0, 25.0, 10.0, 15.0, 1.0)
    assert abs(settled - target) < 0.01


def test_uncooled_pi4_passes_80_within_30_s_then_throttles_and_holds_below_85():
    states, times = run_load("pi4", "none", 120)
    first_hot = next(t for s, t in zip(states, times, strict=True) if s.temp_c >= 80)
    assert first_hot <= 30
    assert states[0].temp_c < 65  # it started from idle
    assert min(s.freq_mhz for s in states) < 1500
    assert max(s.temp_c for s in states) < boards.hard_limit_temp_c
    last = states[-1]
    assert last.throttled & 0b110 == 0b110  # still capped now
    assert last.throttled & (0b110 << 16) == 0b110 << 16


def test_fan_cooled_nodes_stay_cool_under_full_load():
    for board in ("pi4", "pi5"):
        states, _ = run_load(board, "fan", 600)
        assert 50 <= states[-1].temp_c <= 65, (board, states[-1].temp_c)
        assert all(s.throttled == 0 for s in states)
    pi5, _ = run_load("pi5", "fan", 600)
    assert pi5[-1].fan_duty > 0


def test_governor_steps_at_most_once_per_interval():
    b = BOARDS["pi4"]
    f, changed = thermal.governor(b, 81.0, 1500, -1e9, 10.0)
    assert (f, changed) == (1000, 10.0)
    assert thermal.governor(b, 82.0, f, changed, 10.5) == (1000, 10.0)  # too soon
    assert thermal.governor(b, 82.0, f, changed, 11.0) == (750, 11.0)
    assert thermal.governor(b, 82.0, 600, 11.0, 20.0) == (600, 11.0)  # floor


def test_governor_hard_limit_goes_straight_to_the_lowest_clock():
    b = BOARDS["pi5"]
    assert thermal.governor(b, 85.5, 2400, 9.9, 10.0)[0] == b.min_mhz


def test_governor_recovers_only_below_the_hysteresis_band():
    b = BOARDS["pi4"]
    assert thermal.governor(b, 78.0, 750, 0.0, 5.0) == (750, 0.0)  # inside the band: hold
    assert thermal.governor(b, 76.0, 750, 0.0, 5.0) == (1000, 5.0)
    assert thermal.governor(b, 60.0, 1500, 0.0, 5.0) == (1500, 0.0)


def test_throttle_bits_clear_on_recovery_but_sticky_bits_stay():
    hot, times = run_load("pi4", "none", 60, ambient=35.0)
    assert hot[-1].throttled & 0b110 == 0b110
    cool, _ = run_load("pi4", "none", 60, ambient=20.0, load=0.0, state=hot[-1], t0=times[-1])
    assert cool[-1].freq_mhz == 1500
    assert cool[-1].throttled == 0x60000


def test_idle_node_does_not_throttle():
    states, _ = run_load("pi4", "none", 300, load=0.0)
    assert all(s.throttled == 0 for s in states)


def test_fan_curve_with_hysteresis():
    assert thermal.fan_duty(45.0, 0.0) == 0.0
    assert thermal.fan_duty(50.0, 0.0) == 0.3
    assert thermal.fan_duty(61.0, 0.3) == 0.5
    assert thermal.fan_duty(57.0, 0.5) == 0.5  # within 5 °C of 60: keeps 50 %
    assert thermal.fan_duty(54.0, 0.5) == 0.3
    assert thermal.fan_duty(44.0, 0.3) == 0.0


def test_caps_split_by_board_speed_within_budget():
    caps = boards.split_caps([BOARDS["pi4"], BOARDS["pi5"], BOARDS["pi4"]], 1.8)
    assert abs(sum(caps) - 1.8) < 1e-3
    assert caps[1] > 2 * caps[0]
    assert thermal.quota_cores(0.9, BOARDS["pi4"], 750) < 0.9
