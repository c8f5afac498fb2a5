"""The controller's record of one node (latest agent sample, temperature history, policy
state, marginal energy) and the row (`NodeRow`) that `/edgekit/status`, `edgekit monitor` and
the telemetry recorder show for it. The row becomes a dict only for JSON (`to_dict`) and is
read back by the monitor with `from_dict`."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from edgekit.serve.control import SERVING, NodeStats
from edgekit.serve.energy import EnergyMeter
from edgekit.thermal import config, policy
from edgekit.thermal.reading import Sample


@dataclass
class NodeView:
    name: str
    last: Sample | None = None
    seq: int = 0
    agent_id: str = ""  # the agent whose sample count `seq` is (reading.Poll.agent_id)
    recv_head_s: float | None = None
    skew_s: float | None = None
    temps: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=config.history_len))
    pstate: policy.PolicyMemory = field(default_factory=policy.PolicyMemory)
    decision: policy.Decision | None = None
    applied: tuple[str, float] | None = None
    #: the node's energy (J, telemetry and `edgekit report`; kept without a router too)
    energy: EnergyMeter = field(default_factory=EnergyMeter)
    #: energy above the board's idle power (what routing can change), for the power cap's
    #: weighting. J/inference as shown everywhere is the router's (edgekit.serve.energy).
    marginal: EnergyMeter = field(default_factory=EnergyMeter)

    def temp_sensor(self) -> tuple[str | None, str]:
        """"present", "missing" (with the agent's reason) or None before any sample."""
        if self.last is None:
            return None, ""
        if self.last.temp_c.value is None:
            return "missing", self.last.temp_c.detail or "no temperature in the node's samples"
        return "present", ""


def idle_w(board: str | None) -> float:
    return config.board_power(board)[1]


def account_energy(node: NodeView, watts: float | None, st: NodeStats | None,
                   now: float) -> None:
    """Feed the node's fresh power (total, and above idle) and its completed requests to its
    meters (the same computation the router runs for the figures it shows)."""
    if watts is not None and node.last is not None:
        node.energy.add_power(now, watts)
        node.marginal.add_power(now, max(0.0, watts - idle_w(node.last.board)))
    node.marginal.mark(now, st.completed_total if st else 0)


@dataclass
class NodeRow:
    """What the monitor shows for one node. Every field but `node` may be missing (a router
    without the thermal controller reports traffic only)."""

    node: str
    board: str | None = None
    temp_c: float | None = None
    temp_source: str | None = None
    temp_sensor: str | None = None  # "present", "missing", None before any sample
    temp_sensor_detail: str = ""
    temp_history: list[float] = field(default_factory=list)
    freq_mhz: float | None = None
    max_freq_mhz: float | None = None
    throttled: dict[str, Any] | None = None  # get_throttled flags
    throttled_now: bool | None = None
    throttled_raw: str | None = None
    power_w: float | None = None
    power_source: str | None = None
    util: float | None = None
    mem_available_mb: float | None = None
    load_1m: float | None = None
    fan_rpm: float | None = None
    agent_cpu_frac: float | None = None
    state: str | None = None
    weight: float | None = None
    reason: str = ""
    predicted_c: float | None = None
    slope_c_per_s: float | None = None
    threads_frac: float = 1.0
    stale: bool = False
    age_s: float | None = None
    skew_s: float | None = None
    requests_per_s: float | None = None
    completed_total: int | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    energy_j: float | None = None
    j_per_inference: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeRow:
        """A status row as JSON; keys this build does not know are ignored, and a row that
        has only the throttle flags gets the two fields derived from them."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        flags = kwargs.get("throttled")
        if isinstance(flags, dict):
            kwargs.setdefault("throttled_now", bool(flags.get("any_now")))
            kwargs.setdefault("throttled_raw", hex(int(flags.get("raw") or 0)))
        return cls(**kwargs)


def row(node: NodeView, st: NodeStats | None, *, enabled: bool, stale: bool,
        now: float) -> NodeRow:
    """The row for one node from its last sample, the policy's decision and the router's
    stats (energy per inference included: edgekit.serve.energy, through the router)."""
    s, d = node.last, node.decision
    state, weight = node.applied if node.applied else (SERVING, 1.0)
    if not enabled and st is not None:  # policy off: show what the router does
        state, weight = st.state, st.weight
    extra = st.extra if st else {}
    sensor, sensor_detail = node.temp_sensor()
    out = NodeRow(
        node.name, state=state, weight=weight, stale=stale, skew_s=node.skew_s,
        temp_sensor=sensor, temp_sensor_detail=sensor_detail,
        reason=d.reason if d else "no data yet",
        predicted_c=d.predicted_c if d else None,
        slope_c_per_s=d.slope_c_per_s if d else None,
        threads_frac=d.threads_frac if d else 1.0,
        age_s=round(now - node.recv_head_s, 2) if node.recv_head_s else None,
        requests_per_s=st.requests_per_s if st else None,
        completed_total=st.completed_total if st else None,
        p50_ms=st.p50_ms if st else None, p95_ms=st.p95_ms if st else None,
        energy_j=round(node.energy.energy_j, 2),
        j_per_inference=extra.get("energy_j_per_inference"),
    )
    if s is not None:
        _sample_fields(out, s)
    return out


def _sample_fields(out: NodeRow, s: Sample) -> None:
    raw = s.throttle_raw
    out.board, out.agent_cpu_frac = s.board, s.agent_cpu_frac
    out.temp_c, out.temp_source = s.temp_c.value, s.temp_c.source
    out.freq_mhz, out.max_freq_mhz = s.freq_mhz.value, s.max_freq_mhz.value
    out.throttled, out.throttled_now = s.throttle_flags, s.throttled_any_now
    out.throttled_raw = hex(raw) if raw is not None else None
    out.power_w, out.power_source = s.power_w.value, s.power_w.source
    out.util, out.mem_available_mb = s.util.value, s.mem_available_mb.value
    out.load_1m, out.fan_rpm = s.load_1m.value, s.fan_rpm.value
