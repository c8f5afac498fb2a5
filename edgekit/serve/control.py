"""The seam between routing and whatever steers it (the thermal/power policy, an operator).

The router implements `NodeControl`; steering code implements `Controller` and is handed the
router when the API server starts. Keeping this a two-protocol seam means the thermal policy
never imports Ray or HTTP code, and the router never knows why a weight changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

#: node states as shown by `edgekit status` and `edgekit monitor`
SERVING, SHEDDING, DRAINED = "serving", "shedding", "drained"


@dataclass
class NodeStats:
    """What the router knows about one node's traffic (rates over a sliding window)."""

    node: str
    weight: float = 1.0
    state: str = SERVING
    reason: str = ""
    outstanding: int = 0
    completed_total: int = 0
    failed_total: int = 0
    requests_per_s: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    compute_ms_mean: float | None = None
    alive: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class NodeControl(Protocol):
    """Run-time knobs on routing, per node. Every change carries a human-readable reason."""

    def set_weight(self, node: str, weight: float, reason: str) -> None:
        """Scale the node's share of new requests (0 < weight <= 1; 1 = full share)."""

    def drain(self, node: str, reason: str) -> None:
        """Send no new requests to the node; requests in flight finish."""

    def readmit(self, node: str, reason: str) -> None:
        """Undo a drain; the node takes traffic again at its current weight."""

    def admission_limit(self, max_in_flight: int | None, reason: str) -> None:
        """Cap requests in flight cluster-wide (None = no cap beyond per-replica queues)."""

    def node_stats(self) -> dict[str, NodeStats]:
        """Current per-node traffic view; once power is reported, `extra` carries the node's
        "power_w" and "energy_j_per_inference" (edgekit.serve.energy)."""

    def report_power(self, node: str, watts: float) -> None:
        """The node's power now (W). The router integrates it against the requests the node
        completes: the one energy-per-inference figure everything shows."""

    def energy(self) -> dict[str, Any]:
        """Energy per inference per node and for the cluster (`Router.energy`)."""


class Controller(Protocol):
    """Something that steers routing (e.g. edgekit.thermal). Started and stopped by the server."""

    name: str

    def start(self, control: NodeControl) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]:
        """JSON-able state merged into the server's /edgekit/status under `name`."""
        ...
