"""Split a topological order into K contiguous pipeline stages (pure; no ONNX here).

Cost of a stage = its compute time on its node (node time / that node's speed factor) plus the
time to send every tensor crossing its end cut over the link. We minimise the slowest stage,
subject to a memory cap per stage, by dynamic programming over cut points as in PipeEdge
(Hu et al., 2022): ``best[k][i]`` is the lowest achievable bottleneck for positions ``[0, i)``
in ``k`` stages. Many splits usually share that bottleneck (only the slowest stage is pinned),
so a second pass of the same shape picks, among them, the one whose cheapest stage is
dearest (max-min): the most even plan at the best throughput, never a slower one. Stage
memory (weights it holds, duplicated weights included, plus its peak of live activations)
only grows when a stage is extended, so for each end ``i`` the feasible
starts form a range found with two pointers, and each DP row is one vectorised numpy pass.

``overlap=True`` models a stage that sends request r's activations while computing request
r + 1 (a full-duplex link and a runtime that double-buffers): its steady-state cost is then
max(compute, send) instead of the sum. It is an option, not the default: sending costs CPU on
a Pi (TCP, copies, serialisation), so the sum is the honest estimate until measured.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from edgekit.errors import ModelError


@dataclass(frozen=True)
class Problem:
    """Per-position facts of a topologically ordered graph with ``n`` nodes."""

    compute_ms: Sequence[float]  # n: time of each node on a speed-1.0 machine
    cut_bytes: Sequence[int]  # n + 1: bytes crossing the cut before position c (c = n: outputs)
    node_weights: Sequence[frozenset[str]]  # n: initializers each node reads
    weight_bytes: dict[str, int]
    live_bytes: Sequence[int]  # n: activation bytes alive while position c runs

    @property
    def n(self) -> int:
        return len(self.compute_ms)


@dataclass(frozen=True)
class Stage:
    start: int
    end: int  # exclusive
    compute_ms: float
    transfer_ms: float
    mem_bytes: int
    overlap: bool = False  # sending overlaps the next request's compute

    @property
    def cost_ms(self) -> float:
        if self.overlap:
            return max(self.compute_ms, self.transfer_ms)
        return self.compute_ms + self.transfer_ms


def stage_cost(compute_ms: np.ndarray, transfer_ms: np.ndarray, overlap: bool) -> np.ndarray:
    """Steady-state stage time: compute then send, or both at once (``overlap``)."""
    return np.maximum(compute_ms, transfer_ms) if overlap else compute_ms + transfer_ms


@dataclass(frozen=True)
class Plan:
    stages: list[Stage]

    @property
    def slowest_ms(self) -> float:
        return max(s.cost_ms for s in self.stages)

    @property
    def balance(self) -> float:
        """Slowest stage / mean stage (1.0 is perfect balance)."""
        mean = sum(s.cost_ms for s in self.stages) / len(self.stages)
        return self.slowest_ms / mean if mean > 0 else 1.0


def stage_memory(problem: Problem, start: int, end: int) -> int:
    weights = set().union(*problem.node_weights[start:end]) if end > start else set()
    peak = max(problem.live_bytes[start:end], default=0)
    return sum(problem.weight_bytes.get(w, 0) for w in weights) + int(peak)


def _transfer_ms(nbytes: float, link_bytes_per_s: float) -> float:
    return nbytes / link_bytes_per_s * 1000.0 if link_bytes_per_s > 0 else 0.0


def evaluate(
    problem: Problem, bounds: Sequence[int], speeds: Sequence[float], link_bytes_per_s: float,
    overlap: bool = False,
) -> Plan:
    """Cost of the plan with stage boundaries ``bounds`` (0 = b0 < b1 < ... < bK = n)."""
    prefix = np.concatenate([[0.0], np.cumsum(problem.compute_ms)])
    stages = []
    for k in range(len(bounds) - 1):
        start, end = bounds[k], bounds[k + 1]
        stages.append(
            Stage(
                start, end,
                float(prefix[end] - prefix[start]) / speeds[k],
                _transfer_ms(problem.cut_bytes[end], link_bytes_per_s),
                stage_memory(problem, start, end),
                overlap,
            )
        )
    return Plan(stages)


def naive_bounds(n: int, k: int) -> list[int]:
    """Equal number of nodes per stage (the baseline to beat)."""
    return [round(n * j / k) for j in range(k + 1)]


def _earliest_starts(problem: Problem, cap: float) -> np.ndarray:
    """For each end i (1..n), the smallest start p with memory(p, i) <= cap (i if none)."""
    n = problem.n
    earliest = np.zeros(n + 1, dtype=np.int64)
    refs: dict[str, int] = {}
    held = 0
    p = 0
    for i in range(1, n + 1):
        for w in problem.node_weights[i - 1]:
            refs[w] = refs.get(w, 0) + 1
            if refs[w] == 1:
                held += problem.weight_bytes.get(w, 0)
        while p < i and held + max(problem.live_bytes[p:i]) > cap:
            for w in problem.node_weights[p]:
                refs[w] -= 1
                if refs[w] == 0:
                    held -= problem.weight_bytes.get(w, 0)
            p += 1
        earliest[i] = p
    return earliest


def solve(
    problem: Problem,
    k: int,
    *,
    speeds: Sequence[float] | None = None,
    mem_caps: Sequence[float] | None = None,
    link_bytes_per_s: float = 125e6,
    overlap: bool = False,
) -> Plan:
    """Optimal bounds for ``k`` stages; raises ``ModelError`` when impossible."""
    n = problem.n
    if k < 1:
        raise ModelError("--stages must be at least 1")
    if k > n:
        raise ModelError(
            f"cannot make {k} stages from a graph with {n} top-level nodes "
            f"({n - 1} possible cut points)"
        )
    speeds = list(speeds) if speeds else [1.0] * k
    caps = list(mem_caps) if mem_caps else [float("inf")] * k
    if len(speeds) != k or len(caps) != k:
        raise ModelError(f"need one speed factor and one memory cap per stage ({k})")
    costs = _Costs(problem, speeds, caps, link_bytes_per_s, overlap)
    best = np.full((k + 1, n + 1), np.inf)
    choice = np.zeros((k + 1, n + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for stage, i, starts, cost in costs.cells(k):
        cand = np.maximum(best[stage - 1, starts], cost)
        j = int(np.argmin(cand))
        best[stage, i] = cand[j]
        choice[stage, i] = starts[j]
    if not np.isfinite(best[k, n]):
        tightest = min(caps)
        alone = max(stage_memory(problem, p, p + 1) for p in range(n))
        raise ModelError(
            f"no split into {k} stages fits the memory cap of {tightest / 2**20:.1f} MiB "
            f"(the largest single node alone needs {alone / 2**20:.1f} MiB)",
            hint="raise --mem-limit or use more stages",
        )
    choice = _most_even(costs, k, float(best[k, n]))
    bounds = [n]
    for stage in range(k, 0, -1):
        bounds.append(int(choice[stage, bounds[-1]]))
    return evaluate(problem, bounds[::-1], speeds, link_bytes_per_s, overlap)


class _Costs:
    """Stage costs for both passes of the DP: stage ``stage`` (1-based) ending at position
    ``i``, for every start its memory cap allows."""

    def __init__(self, problem: Problem, speeds: list[float], caps: list[float],
                 link_bytes_per_s: float, overlap: bool) -> None:
        self.n = problem.n
        self.prefix = np.concatenate([[0.0], np.cumsum(np.asarray(problem.compute_ms, float))])
        self.tx = np.array([_transfer_ms(b, link_bytes_per_s) for b in problem.cut_bytes])
        earliest = {cap: _earliest_starts(problem, cap) for cap in set(caps)}
        self.first = [earliest[cap] for cap in caps]  # per stage
        self.speeds = speeds
        self.overlap = overlap

    def cells(self, k: int) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """(stage, end i, feasible starts, their stage costs), stage by stage."""
        for stage in range(1, k + 1):
            first = self.first[stage - 1]
            for i in range(stage, self.n + 1):
                lo = max(int(first[i]), stage - 1)
                if lo >= i:
                    continue
                starts = np.arange(lo, i)
                compute = (self.prefix[i] - self.prefix[starts]) / self.speeds[stage - 1]
                yield stage, i, starts, stage_cost(compute, self.tx[i], self.overlap)


def _most_even(costs: _Costs, k: int, slowest: float) -> np.ndarray:
    """Choices of the split with every stage <= ``slowest`` that maximises the cheapest stage."""
    limit = slowest * (1 + 1e-9)
    lift = np.full((k + 1, costs.n + 1), -np.inf)
    choice = np.zeros((k + 1, costs.n + 1), dtype=np.int64)
    lift[0, 0] = np.inf
    for stage, i, starts, cost in costs.cells(k):
        cand = np.where(cost <= limit, np.minimum(lift[stage - 1, starts], cost), -np.inf)
        j = int(np.argmax(cand))
        lift[stage, i] = cand[j]
        choice[stage, i] = starts[j]
    return choice
