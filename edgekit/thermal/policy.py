"""The thermal/power policy: pure functions of readings, state and an injected time.

Per node: fit the temperature slope (least squares over `slope_window_s`), predict the
temperature `lookahead_s` ahead, and turn the headroom to the drain threshold into a routing
weight. Linear extrapolation of a heating RC response (T_inf - (T_inf - T) e^{-t/tau}, concave)
over-predicts, so the prediction errs towards shedding early. A node that is about to throttle,
or is throttling, is drained; it comes back only below `readmit_temp_c` and not rising for
`readmit_hold_s` (hysteresis: no flapping). Across the cluster, a power cap becomes an
admission limit (AIMD on requests in flight) and efficiency-scaled weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from edgekit.serve.control import DRAINED, SERVING, SHEDDING
from edgekit.thermal.config import PolicyConfig

#: a node with no temperature sensor: routed at full weight, shown as such
UNKNOWN = "unknown"


@dataclass(frozen=True)
class NodeInput:
    """What the policy sees about one node at one tick."""

    node: str
    now_s: float  # head clock
    temps: tuple[tuple[float, float], ...] = ()  # (node timestamp s, °C), oldest first
    throttled_now: bool = False  # get_throttled bits 1-3 now
    under_voltage_now: bool = False  # get_throttled bit 0 or hwmon in0_lcrit_alarm
    stale: bool = False  # no fresh sample within stale_after_s (head clock)
    sensor_detail: str = ""  # why there is no temperature (the agent's reason), if none


@dataclass(frozen=True)
class PolicyMemory:
    """Policy memory per node between ticks."""

    state: str = SERVING
    weight: float = 1.0
    drained_at_s: float | None = None
    cool_since_s: float | None = None
    readmitted_at_s: float | None = None  # when it last came back from a drain
    flaps: int = 0  # drains in a row that came soon after a readmit (each doubles the wait)


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one node at one tick, with the reason shown to operators."""

    node: str
    state: str
    weight: float
    reason: str
    temp_c: float | None = None
    slope_c_per_s: float | None = None
    predicted_c: float | None = None
    threads_frac: float = 1.0  # suggested share of worker threads (1 = all)


def slope_c_per_s(temps: tuple[tuple[float, float], ...], now_t: float, window_s: float) -> float:
    """Least-squares slope of the samples within `window_s` of the newest (0 if < 2 points)."""
    pts = [(t, c) for t, c in temps if t >= now_t - window_s]
    if len(pts) < 2:
        return 0.0
    mean_t = sum(t for t, _ in pts) / len(pts)
    mean_c = sum(c for _, c in pts) / len(pts)
    var = sum((t - mean_t) ** 2 for t, _ in pts)
    if var <= 0:
        return 0.0
    return sum((t - mean_t) * (c - mean_c) for t, c in pts) / var


def weight_for(predicted_c: float, cfg: PolicyConfig) -> float:
    """1 below `shed_start_temp_c`, falling linearly to `min_weight` at `drain_temp_c`."""
    if predicted_c <= cfg.shed_start_temp_c:
        return 1.0
    span = cfg.drain_temp_c - cfg.shed_start_temp_c
    frac = (cfg.drain_temp_c - predicted_c) / span if span > 0 else 0.0
    return round(max(cfg.min_weight, min(1.0, frac)), 3)


@dataclass(frozen=True)
class _Facts:
    """One tick's temperature facts for a node with a sensor, and the decision they make."""

    inp: NodeInput
    temp_c: float
    slope: float
    predicted: float
    threads: float
    text: str  # "T=... slope=... predicted ..." for the reason

    def out(self, state: PolicyMemory, reason: str) -> tuple[PolicyMemory, Decision]:
        return state, Decision(self.inp.node, state.state, state.weight, reason,
                               round(self.temp_c, 2), round(self.slope, 4),
                               round(self.predicted, 2), self.threads)


def decide(prev: PolicyMemory, inp: NodeInput, cfg: PolicyConfig) -> tuple[PolicyMemory, Decision]:
    """One tick for one node: new policy state and the decision to apply."""
    if inp.stale:
        reason = f"telemetry stale: not trusted; neutral weight {cfg.stale_weight}"
        new = PolicyMemory(SHEDDING, cfg.stale_weight)
        return new, Decision(inp.node, SHEDDING, cfg.stale_weight, reason)
    if not inp.temps:
        return _unknown_temperature(inp, cfg)
    t_last, temp_c = inp.temps[-1]
    slope = slope_c_per_s(inp.temps, t_last, cfg.slope_window_s)
    predicted = temp_c + slope * cfg.lookahead_s
    facts = _Facts(
        inp, temp_c, slope, predicted,
        cfg.hot_threads_frac if temp_c >= cfg.hot_threads_temp_c else 1.0,
        f"T={temp_c:.1f}°C slope={slope:+.2f}°C/s "
        f"predicted {predicted:.1f}°C in {cfg.lookahead_s:g}s",
    )
    trigger = _drain_trigger(facts, cfg)
    if trigger:
        if prev.state == DRAINED:
            new = replace(prev, cool_since_s=None)
        else:  # drained again soon after coming back: it will wait longer this time
            soon = (prev.readmitted_at_s is not None
                    and inp.now_s - prev.readmitted_at_s < cfg.flap_window_s)
            new = PolicyMemory(DRAINED, cfg.min_weight, inp.now_s, None, None,
                               prev.flaps + 1 if soon else 0)
        return facts.out(new, f"drain: {trigger} ({facts.text})")
    if prev.state == DRAINED:
        return _while_drained(prev, facts, cfg)
    return _by_prediction(prev, facts, cfg)


def _drain_trigger(f: _Facts, cfg: PolicyConfig) -> str | None:
    """Why the node must be drained now, or None."""
    if f.inp.throttled_now:
        return "firmware reports throttling now"
    if f.temp_c >= cfg.drain_temp_c:
        return f"T at/above drain {cfg.drain_temp_c:g}°C"
    if f.predicted >= cfg.drain_temp_c:
        return f"predicted at/above drain {cfg.drain_temp_c:g}°C"
    return None


def drain_hold_s(flaps: int, cfg: PolicyConfig) -> float:
    """How long a drained node stays out at least: `min_drain_s`, doubled for each drain in a
    row that followed a readmit within `flap_window_s`, up to `max_drain_s`. A node whose
    idle temperature sits just under `readmit_temp_c` heats past the drain point within
    seconds of taking load; without this it was drained and readmitted over and over."""
    return min(cfg.max_drain_s, cfg.min_drain_s * 2 ** min(flaps, 16))


def _while_drained(prev: PolicyMemory, f: _Facts,
                   cfg: PolicyConfig) -> tuple[PolicyMemory, Decision]:
    """Readmit only after `drain_hold_s` out and `readmit_hold_s` below `readmit_temp_c`
    without rising (hysteresis); otherwise stay drained, saying what it waits for."""
    now = f.inp.now_s
    cool = f.temp_c < cfg.readmit_temp_c and f.slope <= cfg.rising_eps_c_per_s
    drained_at = prev.drained_at_s if prev.drained_at_s is not None else now
    cool_since = (prev.cool_since_s if prev.cool_since_s is not None else now) if cool else None
    hold = drain_hold_s(prev.flaps, cfg)
    if (cool_since is not None and now - drained_at >= hold
            and now - cool_since >= cfg.readmit_hold_s):
        weight = weight_for(f.predicted, cfg)
        state = SHEDDING if weight < 1.0 else SERVING
        return f.out(
            PolicyMemory(state, weight, readmitted_at_s=now, flaps=prev.flaps),
            f"readmit: below {cfg.readmit_temp_c:g}°C and "
            f"not rising for {now - cool_since:.0f}s ({f.text})",
        )
    wait = "cooling" if cool else f"waiting for < {cfg.readmit_temp_c:g}°C and not rising"
    if prev.flaps:
        wait += f"; out for at least {hold:.0f}s (drained {prev.flaps + 1} times in a row)"
    return f.out(replace(prev, cool_since_s=cool_since), f"stay drained: {wait} ({f.text})")


def _by_prediction(prev: PolicyMemory, f: _Facts,
                   cfg: PolicyConfig) -> tuple[PolicyMemory, Decision]:
    """Serving or shedding by the predicted temperature; under-voltage sheds to the minimum."""
    weight = weight_for(f.predicted, cfg)
    text = f.text
    if f.inp.under_voltage_now:
        weight = cfg.min_weight
        text = "under-voltage now; " + text
    state = SHEDDING if weight < 1.0 else SERVING
    if state == SHEDDING:
        reason = f"shed: weight {weight:.2f} ({text})"
    else:
        reason = f"serve: headroom to {cfg.drain_temp_c:g}°C ({text})"
    if prev.readmitted_at_s is not None and f.inp.now_s - prev.readmitted_at_s >= cfg.flap_window_s:
        prev = PolicyMemory()  # served long enough since its readmit: no longer flapping
    return f.out(replace(prev, state=state, weight=weight, drained_at_s=None,
                         cool_since_s=None), reason)


def _unknown_temperature(inp: NodeInput, cfg: PolicyConfig) -> tuple[PolicyMemory, Decision]:
    """A node whose agent answers but has no temperature sensor (a board without a thermal
    zone, a host or VM): its thermal state is unknown, which is no reason to send it less.
    Halving its weight (the stale rule) halved its queue share: a cluster of such nodes
    refused most of a bench with 503s. Firmware throttling or under-voltage, where reported,
    still sheds it; the power cap works from power alone."""
    facts = f"no temperature sensor{f' ({inp.sensor_detail})' if inp.sensor_detail else ''}"
    if inp.throttled_now or inp.under_voltage_now:
        why = "firmware reports throttling now" if inp.throttled_now else "under-voltage now"
        reason = f"shed: {why}; {facts}"
        return PolicyMemory(SHEDDING, cfg.min_weight), Decision(
            inp.node, SHEDDING, cfg.min_weight, reason)
    reason = f"{facts}: thermal state unknown, weight unchanged"
    return PolicyMemory(UNKNOWN, 1.0), Decision(inp.node, UNKNOWN, 1.0, reason)


# --- cluster power cap ------------------------------------------------------------------


@dataclass(frozen=True)
class CapDecision:
    """Admission limit (None = no cap beyond per-replica queues) and why."""

    limit: int | None
    reason: str


def power_cap_step(
    prev_limit: int | None,
    cap_w: float | None,
    total_w: float | None,
    in_flight: int,
    idle_floor_w: float,
    cfg: PolicyConfig,
) -> CapDecision:
    """AIMD on the cluster's in-flight limit so that total node power stays under `cap_w`.

    Over the cap: multiply the limit (initially the current in-flight count) by `cap_backoff`.
    Below `cap_release_frac` of the cap: add one; reaching `cap_max_in_flight` lifts the limit.
    """
    if cap_w is None:
        return CapDecision(None, "no power cap")
    if total_w is None:
        return CapDecision(prev_limit, "power cap: no power reading, limit held")
    facts = f"{total_w:.1f} W of cap {cap_w:.1f} W"
    if idle_floor_w >= cap_w:
        return CapDecision(
            cfg.cap_min_in_flight,
            f"power cap below the nodes' idle power {idle_floor_w:.1f} W ({facts})",
        )
    if total_w > cap_w:
        if prev_limit == cfg.cap_min_in_flight:  # nothing left to cut while still serving
            return CapDecision(
                prev_limit,
                f"over power cap at the minimum in-flight limit {prev_limit}: the cap is below "
                f"what the nodes draw while serving at all ({facts})",
            )
        base = prev_limit if prev_limit is not None else max(in_flight, cfg.cap_min_in_flight)
        limit = max(cfg.cap_min_in_flight, math.floor(base * cfg.cap_backoff))
        return CapDecision(limit, f"over power cap: in-flight limit {limit} ({facts})")
    if prev_limit is None:
        return CapDecision(None, f"under power cap ({facts})")
    if total_w < cfg.cap_release_frac * cap_w:
        limit = prev_limit + 1
        if limit >= cfg.cap_max_in_flight:
            return CapDecision(None, f"well under power cap: limit lifted ({facts})")
        return CapDecision(limit, f"under power cap: in-flight limit {limit} ({facts})")
    return CapDecision(prev_limit, f"near power cap: in-flight limit {prev_limit} held ({facts})")


def efficiency_factors(joules_per_inference: dict[str, float | None]) -> dict[str, float]:
    """Under a power cap, favour nodes that spend fewer joules per inference (factor in
    [0.25, 1]: the most efficient node keeps 1). Nodes without a figure keep 1."""
    known = {n: j for n, j in joules_per_inference.items() if j is not None and j > 0}
    best = min(known.values(), default=None)
    return {
        n: (max(0.25, min(1.0, best / known[n])) if best and n in known else 1.0)
        for n in joules_per_inference
    }
