"""Per-request deadlines for worker calls.

A worker that hangs (a runtime stuck in a loop, a node that stopped scheduling) used to hold
its request, and the replica's queue slot, forever. Each call now has a deadline: given per
model (`--deadline MODEL=S`, `*` for all), else `deadline_factor` times the model's recent p99
call time, never under `deadline_floor_s`. Past it the request ends in 504; the replica keeps
the slot until the worker finishes (reused), and a worker still busy after one more deadline
is killed and recreated by the health monitor (replaced).
"""

from __future__ import annotations

from collections import deque

from edgekit.serve.settings import Tunables

#: call times kept per model for its p99
WINDOW = 256


class DeadlineExceeded(Exception):
    """A worker call passed its deadline; the request gets a 504."""

    def __init__(self, model: str, seconds: float):
        super().__init__(f"model '{model}': no answer from its worker within the deadline of "
                         f"{seconds:.3g} s")
        self.model = model
        self.seconds = seconds


class Deadlines:
    def __init__(self, tunables: Tunables, fixed: dict[str, float] | None = None):
        self.t = tunables
        self.fixed = dict(fixed or {})
        self._recent: dict[str, deque[float]] = {}
        self._p99: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def record(self, model: str, seconds: float) -> None:
        """A successful call's time (the basis of the default deadline)."""
        window = self._recent.setdefault(model, deque(maxlen=WINDOW))
        window.append(seconds)
        self._since[model] = self._since.get(model, 0) + 1
        if model not in self._p99 or self._since[model] >= 16:  # re-sort now and then only
            ordered = sorted(window)
            self._p99[model] = ordered[int(0.99 * (len(ordered) - 1))]
            self._since[model] = 0

    def for_model(self, model: str) -> float:
        """Seconds a call to `model` may take."""
        if model in self.fixed:
            return self.fixed[model]
        if "*" in self.fixed:
            return self.fixed["*"]
        return max(self.t.deadline_floor_s, self.t.deadline_factor * self._p99.get(model, 0.0))

    def describe(self) -> dict[str, float]:
        return {m: round(self.for_model(m), 3) for m in sorted(set(self._p99) | set(self.fixed))}
