"""Accuracy-driven mixed precision: move the layers that lose the most accuracy to fp32
activations (their weights stay int8) until every output reaches the target cosine.

The ranking is the one ``edgekit quantize`` reports: the SQNR each node loses on the full int8
model (ONNX Runtime's qdq_loss_debug). With ``f(m)`` the lowest output cosine when the ``m``
worst-ranked nodes read fp32 activations, we try m = 1, 2, 4, ... until the target holds, then
bisect between the last miss and the first hit: about 2 log2(n) evaluations on the held-out
set instead of n. ``f`` is not guaranteed monotonic, so the answer is the smallest m *seen* to
pass, not a proven minimum. When every ranked node is not enough, weight-only int8 (every
activation fp32) is the last step. Every step is recorded for the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Step:
    float_nodes: int  # nodes on fp32 activations (-1: weight-only, all of them)
    min_cosine: float


@dataclass
class Search:
    nodes: list[str]  # nodes chosen for fp32 activations
    weights_only: bool
    min_cosine: float
    passed: bool
    steps: list[Step] = field(default_factory=list)


def search(
    ranked: Sequence[str],
    score: Callable[[list[str] | None], float],
    target: float,
) -> Search:
    """Fewest leading ``ranked`` nodes whose fp32 activations reach ``target``.

    ``score(nodes)`` builds and evaluates the model with ``nodes`` on fp32 activations
    (``None``: weight-only) and returns its lowest output cosine.
    """
    steps: list[Step] = []
    seen: dict[int, float] = {}

    def f(m: int) -> float:
        if m not in seen:
            seen[m] = score(list(ranked[:m]))
            steps.append(Step(m, seen[m]))
        return seen[m]

    n = len(ranked)
    lo, hi, m = 0, None, 1
    while n and hi is None:
        m = min(m, n)
        if f(m) >= target:
            hi = m
        elif m == n:
            break
        else:
            lo, m = m, m * 2
    if hi is None:
        cos = score(None)
        steps.append(Step(-1, cos))
        best = max(seen.values(), default=-1.0)
        if cos >= target or cos >= best:
            return Search([], True, cos, cos >= target, steps)
        m_best = max(seen, key=lambda k: seen[k])
        return Search(list(ranked[:m_best]), False, best, False, steps)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if f(mid) >= target:
            hi = mid
        else:
            lo = mid
    return Search(list(ranked[:hi]), False, seen[hi], True, steps)
