"""Per-request deadlines for worker calls.

A worker that hangs (a runtime stuck in a loop, a node that stopped scheduling) used to hold
its request, and the replica's queue slot, forever. Each call now has a deadline: given per
model (`--deadline MODEL=S`, `*` for all), else `deadline_factor` times the recent p99 call
time of that model *on that replica*, never under `deadline_floor_s`. Per replica, because a
shelf mixes boards several times apart in speed (a Pi 4 beside a Pi 5 beside an x86 box; an
emulated Pi 4 here takes 15 s for what the host does in 10 ms): one model-wide figure would
either cut the slow board off or let a hung fast one hold a slot for minutes. A replica's
first calls (no history yet: ONNX Runtime also initialises lazily on the first run) get
`deadline_first_call_s`. Past the deadline the request ends in 504; the replica keeps the slot
until the worker finishes (reused), and a worker still busy after one more deadline is killed
and recreated by the health monitor (replaced).
"""

from __future__ import annotations

from collections import deque

from edgekit.serve.settings import Tunables

Key = tuple[str, str]  # (model, replica label)


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
        self._recent: dict[Key, deque[float]] = {}
        self._p99: dict[Key, float] = {}
        self._since: dict[Key, int] = {}

    def record(self, model: str, seconds: float, replica: str = "") -> None:
        """A successful call's time (the basis of the default deadline)."""
        key = (model, replica)
        window = self._recent.setdefault(key, deque(maxlen=self.t.deadline_window_calls))
        window.append(seconds)
        self._since[key] = self._since.get(key, 0) + 1
        if key not in self._p99 or self._since[key] >= 16:  # re-sort now and then only
            ordered = sorted(window)
            self._p99[key] = ordered[int(0.99 * (len(ordered) - 1))]
            self._since[key] = 0

    def for_model(self, model: str, replica: str = "") -> float:
        """Seconds a call to `model` on `replica` may take."""
        if model in self.fixed:
            return self.fixed[model]
        if "*" in self.fixed:
            return self.fixed["*"]
        p99 = self._p99.get((model, replica))
        if p99 is None:
            return max(self.t.deadline_floor_s, self.t.deadline_first_call_s)
        return max(self.t.deadline_floor_s, self.t.deadline_factor * p99)

    def describe(self) -> dict[str, dict[str, float]]:
        """{model: {replica: seconds}} for replicas with history, plus fixed deadlines."""
        out: dict[str, dict[str, float]] = {m: {"*": v} for m, v in self.fixed.items()}
        for model, replica in sorted(self._p99):
            out.setdefault(model, {})[replica] = round(self.for_model(model, replica), 3)
        return out
