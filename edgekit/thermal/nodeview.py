"""The controller's record of one node (latest agent sample, temperature history, policy
state, energy window) and the JSON row `edgekit monitor`, `/edgekit/status` and the
telemetry recorder show for it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from edgekit.serve.control import SERVING, NodeStats
from edgekit.thermal import config, policy

HISTORY_LEN = 120  # temperature points kept per node for slope and sparkline
ENERGY_WINDOW_S = 30.0  # J/inference over this sliding window


@dataclass
class NodeView:
    name: str
    last: dict[str, Any] | None = None
    seq: int = 0
    recv_head_s: float | None = None
    skew_s: float | None = None
    temps: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=HISTORY_LEN))
    pstate: policy.NodeState = field(default_factory=policy.NodeState)
    decision: policy.Decision | None = None
    applied: tuple[str, float] | None = None
    energy_j: float = 0.0
    dyn_energy_j: float = 0.0  # above the board's idle power: what routing can change
    #: (head time, energy_j, completed requests, dyn_energy_j)
    energy_win: deque[tuple[float, float, int, float]] = field(
        default_factory=lambda: deque(maxlen=600)
    )


def idle_w(board: str | None) -> float:
    name = next((b for b in config.board_power_w if (board or "").startswith(b)),
                config.default_board)
    return config.board_power_w[name][0]


def val(sample: dict[str, Any] | None, key: str) -> Any:
    if not sample or not isinstance(sample.get(key), dict):
        return None
    return sample[key].get("value")



def jpi(node: NodeView, energy_index: int = 1) -> float | None:
    """J per inference over the window: total energy (index 1) or above idle (index 3)."""
    if len(node.energy_win) < 2:
        return None
    first, last = node.energy_win[0], node.energy_win[-1]
    done = last[2] - first[2]
    return round((last[energy_index] - first[energy_index]) / done, 4) if done > 0 else None


def account_energy(node: NodeView, st: NodeStats | None, now: float, dt: float,
                   poll_interval_s: float) -> None:
    """Integrate the node's power over dt and slide its J/inference window."""
    watts = val(node.last, "power_w")
    if watts is not None and 0 < dt < 10 * poll_interval_s:
        node.energy_j += watts * dt
        node.dyn_energy_j += max(0.0, watts - idle_w((node.last or {}).get("board"))) * dt
    done = st.completed_total if st else 0
    node.energy_win.append((now, node.energy_j, done, node.dyn_energy_j))
    while node.energy_win and node.energy_win[0][0] < now - ENERGY_WINDOW_S:
        node.energy_win.popleft()


def row(node: NodeView, st: NodeStats | None, *, enabled: bool, stale: bool,
        now: float) -> dict[str, Any]:
    """What the monitor shows for one node."""
    s, d = node.last, node.decision
    thr = val(s, "throttled")
    state, weight = node.applied if node.applied else (SERVING, 1.0)
    if not enabled and st is not None:  # policy off: show what the router does
        state, weight = st.state, st.weight
    return {
        "node": node.name,
        "board": (s or {}).get("board"),
        "temp_c": val(s, "temp_c"),
        "temp_source": (s or {}).get("temp_c", {}).get("source"),
        "freq_mhz": val(s, "freq_mhz"),
        "max_freq_mhz": val(s, "max_freq_mhz"),
        "throttled": thr,
        "throttled_now": bool(thr and thr.get("any_now")) if thr else None,
        "throttled_raw": hex(thr["raw"]) if thr else None,
        "power_w": val(s, "power_w"),
        "power_source": (s or {}).get("power_w", {}).get("source"),
        "util": val(s, "util"),
        "mem_available_mb": val(s, "mem_available_mb"),
        "load_1m": val(s, "load_1m"),
        "fan_rpm": val(s, "fan_rpm"),
        "agent_cpu_frac": (s or {}).get("agent_cpu_frac"),
        "state": state,
        "weight": weight,
        "reason": d.reason if d else "no data yet",
        "predicted_c": d.predicted_c if d else None,
        "slope_c_per_s": d.slope_c_per_s if d else None,
        "threads_frac": d.threads_frac if d else 1.0,
        "stale": stale,
        "age_s": round(now - node.recv_head_s, 2) if node.recv_head_s else None,
        "skew_s": node.skew_s,
        "requests_per_s": st.requests_per_s if st else None,
        "completed_total": st.completed_total if st else None,
        "p50_ms": st.p50_ms if st else None,
        "p95_ms": st.p95_ms if st else None,
        "energy_j": round(node.energy_j, 2),
        "j_per_inference": jpi(node),
    }
