"""One sensor value and where it came from (`Reading`), one node's sample of every sensor
(`Sample`) and one poll of a node's agent (`Poll`).

These stay typed objects from the agent to the controller, the policy and the status rows.
They become dicts at exactly two boundaries, through the `to_dict` / `from_dict` pairs here:
the Ray call from the head to a node's agent actor (the head and a node may run different
edgekit builds during a rollout, and a dict of plain values unpickles on either side), and
JSON (`agent.json`, `python -m edgekit.thermal.agent --json`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from edgekit.errors import ClusterError

MEASURED, ESTIMATED, ABSENT = "measured", "estimated", "absent"

#: get_throttled flags that mean "the clock is held down now" (bits 1-3; bit 0 is voltage)
_CAPPED_NOW = ("freq_capped_now", "throttled_now", "soft_temp_limit_now")


@dataclass(frozen=True)
class Reading:
    """A value with its unit and provenance: measured, estimated, or absent (value None)."""

    value: Any
    unit: str
    source: str = MEASURED
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.source != ABSENT and self.value is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Reading:
        if not isinstance(data, dict) or "unit" not in data:
            raise ClusterError(f"not a sensor reading: {data!r:.80}", where=where)
        return cls(data.get("value"), str(data["unit"]), str(data.get("source", MEASURED)),
                   str(data.get("detail", "")))


def absent(unit: str, reason: str) -> Reading:
    """A sensor that is missing or gave unusable data; `reason` names the path/command."""
    return Reading(None, unit, ABSENT, reason)


def _missing(unit: str) -> Reading:
    return absent(unit, "not sampled")


@dataclass(frozen=True)
class Sample:
    """Every sensor of one node at one tick (`edgekit.thermal.agent.Sampler.sample`)."""

    node: str
    seq: int
    t_node: float  # the node's clock (s); only compared with the same node's samples
    board: str = ""
    temp_c: Reading = field(default_factory=lambda: _missing("C"))
    freq_mhz: Reading = field(default_factory=lambda: _missing("MHz"))
    max_freq_mhz: Reading = field(default_factory=lambda: _missing("MHz"))
    throttled: Reading = field(default_factory=lambda: _missing("flags"))  # value: flag dict
    under_voltage: Reading = field(default_factory=lambda: _missing("bool"))
    power_w: Reading = field(default_factory=lambda: _missing("W"))
    util: Reading = field(default_factory=lambda: _missing("frac"))
    mem_total_mb: Reading = field(default_factory=lambda: _missing("MB"))
    mem_available_mb: Reading = field(default_factory=lambda: _missing("MB"))
    load_1m: Reading = field(default_factory=lambda: _missing("load"))
    fan_rpm: Reading = field(default_factory=lambda: _missing("rpm"))
    zones: dict[str, Reading] = field(default_factory=dict)
    agent_cpu_frac: float | None = None

    # --- what the head asks of a sample (the throttle flags are decoded in one place) ---
    @property
    def throttle_flags(self) -> dict[str, Any] | None:
        """`vcgencmd get_throttled` decoded (`raw`, `any_now`, `<flag>_now` ...), None if
        unreadable."""
        return self.throttled.value if self.throttled.ok else None

    @property
    def throttle_raw(self) -> int | None:
        """The raw `get_throttled` bits, None if unreadable."""
        flags = self.throttle_flags
        return int(flags["raw"]) if flags else None

    @property
    def throttled_any_now(self) -> bool | None:
        """Any of bits 0-3 set now (the monitor's "NOW"), None if unreadable."""
        flags = self.throttle_flags
        return bool(flags["any_now"]) if flags else None

    @property
    def capped_now(self) -> bool:
        """The firmware holds the clock down now (frequency capped, throttled, soft limit)."""
        flags = self.throttle_flags or {}
        return any(bool(flags.get(k)) for k in _CAPPED_NOW)

    @property
    def under_voltage_now(self) -> bool:
        """Under-voltage now, from the firmware's bit 0 or the hwmon alarm."""
        flags = self.throttle_flags or {}
        return bool(flags.get("under_voltage_now")) or bool(self.under_voltage.value)

    # --- the Ray / JSON boundary ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, in the shape `agent.json` and `--json` have always had."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Reading):
                value = value.to_json()
            elif f.name == "zones":
                value = {k: r.to_json() for k, r in value.items()}
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Sample:
        """The inverse of `to_dict`; a malformed sample is a ClusterError naming the node."""
        if not isinstance(data, dict):
            raise ClusterError(f"agent sample is not an object: {data!r:.80}")
        node = str(data.get("node", "?"))
        try:
            seq, t_node = int(data["seq"]), float(data["t_node"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ClusterError(f"agent sample without a valid seq/t_node: {exc}",
                               where=node) from exc
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in ("node", "seq", "t_node") or f.name not in data:
                continue
            value = data[f.name]
            if f.name == "zones":
                value = {k: Reading.from_dict(r, f"{node}: zone {k}")
                         for k, r in (value or {}).items()}
            elif f.name not in ("board", "agent_cpu_frac"):
                value = Reading.from_dict(value, f"{node}: {f.name}")
            kwargs[f.name] = value
        return cls(node, seq, t_node, **kwargs)


@dataclass(frozen=True)
class Poll:
    """One answer of a node's agent: its clock now (the head estimates skew) and the samples
    newer than the sequence number asked for."""

    now_node: float | None
    samples: list[Sample]
    #: which agent answered (random per agent instance): a node's agent started again (its
    #: node rebooted) counts its samples from 1 again, so the head must forget the old count
    agent_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"now_node": self.now_node, "samples": [s.to_dict() for s in self.samples],
                "agent_id": self.agent_id}

    @classmethod
    def from_dict(cls, data: Any, node: str) -> Poll:
        if not isinstance(data, dict) or not isinstance(data.get("samples"), list):
            raise ClusterError(f"agent answer is not a poll: {data!r:.80}", where=node)
        now = data.get("now_node")
        return cls(float(now) if now is not None else None,
                   [Sample.from_dict(s) for s in data["samples"]],
                   str(data.get("agent_id") or ""))
