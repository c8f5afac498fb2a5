"""Pure thermal model and firmware governor of one virtual node (no I/O, time passed in).

The supervisor calls `tick` four times a second with the node's measured CPU use; tests call
it with a fake clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from edgekit.virtual import boards
from edgekit.virtual.boards import Board, Cooling

BIT_UNDERVOLT, BIT_CAPPED, BIT_THROTTLED, BIT_SOFT_LIMIT = 0, 1, 2, 3
STICKY_SHIFT = 16


@dataclass(frozen=True)
class Conditions:
    """What the room and the cooling are like (changed at run time by `cluster heat`)."""

    cooling: Cooling
    ambient_c: float


@dataclass(frozen=True)
class NodeThermal:
    """State of one node's die and firmware."""

    temp_c: float
    freq_mhz: int
    max_mhz: int
    last_change_s: float = -math.inf
    fan_duty: float = 0.0
    sticky: int = 0  # throttle bits that have occurred since boot (already shifted to 16-19)
    power_w: float = 0.0
    util: float = 0.0  # CPU used / full-speed cap

    @property
    def throttled(self) -> int:
        """The value `vcgencmd get_throttled` prints."""
        return self.sticky | now_bits(self.freq_mhz, self.max_mhz)


def now_bits(freq_mhz: int, max_mhz: int) -> int:
    """Bits 1 (ARM frequency capped) and 2 (throttled) while the clock is held below max."""
    if freq_mhz < max_mhz:
        return (1 << BIT_CAPPED) | (1 << BIT_THROTTLED)
    return 0


def power_w(board: Board, util: float, freq_mhz: int) -> float:
    """Board power: idle plus the dynamic part, scaled by the work done and the clock.

    `util` is CPU used over the node's full-speed cap, so at a lowered clock it cannot exceed
    f/fmax (the cap follows the clock); dynamic power per unit of work falls with the clock as
    the firmware lowers the core voltage with it, hence the second f/fmax factor.
    """
    util = min(max(util, 0.0), 1.0)
    return board.idle_w + (board.full_w - board.idle_w) * util * (freq_mhz / board.max_mhz)


def fan_duty(temp_c: float, prev_duty: float) -> float:
    """Pi 5 Active Cooler default curve with its 5 °C hysteresis on the way down."""
    up = 0.0
    for on_c, duty in boards.FAN_CURVE:
        if temp_c >= on_c:
            up = duty
    if up >= prev_duty:
        return up
    # going down: keep a level until the temperature is 5 °C under where it switched on
    keep = 0.0
    for on_c, duty in boards.FAN_CURVE:
        if temp_c >= on_c - boards.FAN_HYSTERESIS_C and duty <= prev_duty:
            keep = duty
    return max(up, keep)


def r_th(cooling: Cooling, duty: float) -> float:
    if cooling.fan_curve:
        return cooling.r_th_k_per_w / (1.0 + cooling.fan_r_factor * duty)
    return cooling.r_th_k_per_w


def thermal_step(
    temp_c: float, power: float, ambient_c: float, r_th_k_per_w: float, tau_s: float, dt_s: float
) -> float:
    """Exact solution of dT/dt = (T_amb + P*R - T)/tau over dt with P held constant."""
    target = ambient_c + power * r_th_k_per_w
    return target + (temp_c - target) * math.exp(-dt_s / tau_s)


def governor(
    board: Board, temp_c: float, freq_mhz: int, last_change_s: float, now_s: float
) -> tuple[int, float]:
    """Firmware clock choice: (new_freq_mhz, new_last_change_s).

    From 80 °C step down one clock step at most once per interval; from 85 °C go straight
    to the lowest clock; below 80 °C minus the hysteresis step back up, one step per interval.
    """
    steps = board.freqs_mhz
    idx = steps.index(freq_mhz) if freq_mhz in steps else 0
    due = now_s - last_change_s >= boards.governor_interval_s
    if temp_c >= boards.hard_limit_temp_c and idx < len(steps) - 1:
        return steps[-1], now_s
    if temp_c >= boards.throttle_temp_c and due and idx < len(steps) - 1:
        return steps[idx + 1], now_s
    if temp_c < boards.throttle_temp_c - boards.recover_hysteresis_c and due and idx > 0:
        return steps[idx - 1], now_s
    return steps[idx], last_change_s


def utilization(used_cores: float, cap_cores: float) -> float:
    """Share of the node's full-speed CPU cap it used (0 for a node without a cap)."""
    return used_cores / cap_cores if cap_cores > 0 else 0.0


def tick(
    board: Board, state: NodeThermal, cond: Conditions, util: float, now_s: float, dt_s: float
) -> NodeThermal:
    """Advance one node by dt: heat from the CPU it used (``util``, see :func:`utilization`),
    then let the firmware react."""
    power = power_w(board, util, state.freq_mhz)
    duty = fan_duty(state.temp_c, state.fan_duty) if cond.cooling.fan_curve else 0.0
    temp = thermal_step(
        state.temp_c, power, cond.ambient_c, r_th(cond.cooling, duty), cond.cooling.tau_s, dt_s
    )
    freq, changed = governor(board, temp, state.freq_mhz, state.last_change_s, now_s)
    sticky = state.sticky | (now_bits(freq, board.max_mhz) << STICKY_SHIFT)
    return replace(
        state,
        temp_c=temp,
        freq_mhz=freq,
        last_change_s=changed,
        fan_duty=duty,
        sticky=sticky,
        power_w=power,
        util=min(max(util, 0.0), 1.0),
    )


def idle_state(board: Board, cond: Conditions, start_temp_c: float | None = None) -> NodeThermal:
    """A node just booted and settled at idle (or at a given starting temperature)."""
    state = NodeThermal(temp_c=cond.ambient_c, freq_mhz=board.max_mhz, max_mhz=board.max_mhz)
    if start_temp_c is not None:
        return replace(state, temp_c=start_temp_c, power_w=board.idle_w)
    for _ in range(600):  # ten simulated minutes at idle: settled for every profile
        state = tick(board, state, cond, 0.0, now_s=-1e9, dt_s=1.0)
    return replace(state, last_change_s=-math.inf, sticky=0)


def quota_cores(cap_cores: float, board: Board, freq_mhz: int) -> float:
    """CPU the node may use at its current clock: its full-speed cap times f/fmax."""
    return cap_cores * freq_mhz / board.max_mhz
