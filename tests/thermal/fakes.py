"""A small in-memory NodeControl (the router's knobs, recording each call) and a manual clock,
for controller tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgekit.serve.control import DRAINED, SERVING, NodeStats


@dataclass
class FakeControl:
    stats: dict[str, NodeStats] = field(default_factory=dict)
    calls: list[tuple] = field(default_factory=list)
    limit: int | None = None

    def set_weight(self, node: str, weight: float, reason: str) -> None:
        self.calls.append(("set_weight", node, weight))
        st = self.stats.setdefault(node, NodeStats(node))
        st.weight = weight
        if st.state != DRAINED:
            st.state = SERVING if weight >= 1.0 else "shedding"

    def drain(self, node: str, reason: str) -> None:
        self.calls.append(("drain", node))
        self.stats.setdefault(node, NodeStats(node)).state = DRAINED

    def readmit(self, node: str, reason: str) -> None:
        self.calls.append(("readmit", node))
        self.stats.setdefault(node, NodeStats(node)).state = SERVING

    def admission_limit(self, max_in_flight: int | None, reason: str) -> None:
        self.calls.append(("admission_limit", max_in_flight))
        self.limit = max_in_flight

    def node_stats(self) -> dict[str, NodeStats]:
        return dict(self.stats)

    def report_power(self, node: str, watts: float) -> None:
        """Kept as the router shows it; energy per inference is the real Router's job
        (tests that check it steer a `edgekit.serve.router.Router`)."""
        self.stats.setdefault(node, NodeStats(node)).extra["power_w"] = watts

    def energy(self) -> dict[str, object]:
        return {"j_per_inference": None, "nodes": {}}


class ManualClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t
