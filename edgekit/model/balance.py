"""How balanced can a contiguous pipeline split be? Bounds and an exhaustive check.

The partitioner's DP (:mod:`edgekit.model.partition`) minimises the slowest stage exactly over
contiguous splits of the topological order. Whether a plan can also be balanced within a
given margin depends on the graph, so this module answers two questions:

- :func:`lower_bound_ms`: no split, contiguous or not, can have a slowest stage below
  ``max(largest node / fastest node speed, total compute / total speed)``. A single node
  (an ``If`` holding a whole LSTM, say) is indivisible; transfers only add to this bound.
- :func:`exhaustive`: enumerate every contiguous split for K <= 4 (vectorised over the last
  two cuts) and return the lowest slowest stage, which must equal the DP's, and the best
  balance (slowest / mean stage) any split reaches: if even that misses a target, the graph's
  node sizes and cut costs, not the planner, are what prevent it.

Stage cost is the partitioner's: compute on its node plus sending its end cut over the link.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgekit.errors import ModelError
from edgekit.model.partition import Problem, _transfer_ms

MAX_EXHAUSTIVE_K = 4


@dataclass(frozen=True)
class Bound:
    slowest_ms: float  # no split can do better
    largest_node: int  # position of the most expensive single node
    largest_node_ms: float
    even_share_ms: float  # total compute / total speed


@dataclass(frozen=True)
class Exhaustive:
    slowest_ms: float  # lowest slowest stage over every contiguous split
    best_balance: float  # lowest slowest / mean over every contiguous split
    balance_bounds: list[int]  # the split reaching best_balance
    splits: int  # how many splits were enumerated


def lower_bound_ms(problem: Problem, k: int, speeds: Sequence[float] | None = None) -> Bound:
    speeds = list(speeds) if speeds else [1.0] * k
    compute = np.asarray(problem.compute_ms, dtype=float)
    largest = int(np.argmax(compute))
    big = float(compute[largest]) / max(speeds)
    share = float(compute.sum()) / sum(speeds)
    return Bound(max(big, share), largest, float(compute[largest]), share)


def exhaustive(
    problem: Problem,
    k: int,
    *,
    speeds: Sequence[float] | None = None,
    link_bytes_per_s: float = 125e6,
) -> Exhaustive:
    """Every contiguous split into ``k`` stages (K <= 4; no memory caps)."""
    n = problem.n
    if not 1 <= k <= min(MAX_EXHAUSTIVE_K, n):
        raise ModelError(f"exhaustive check needs 1 <= K <= {MAX_EXHAUSTIVE_K} and K <= {n} nodes")
    speeds = list(speeds) if speeds else [1.0] * k
    prefix = np.concatenate([[0.0], np.cumsum(np.asarray(problem.compute_ms, dtype=float))])
    tx = np.array([_transfer_ms(b, link_bytes_per_s) for b in problem.cut_bytes])

    def cost(stage: int, start: np.ndarray | int, end: np.ndarray | int) -> np.ndarray:
        return (prefix[end] - prefix[start]) / speeds[stage] + tx[end]

    if k == 1:
        return Exhaustive(float(cost(0, 0, n)), 1.0, [0, n], 1)
    if k == 2:
        cuts = np.arange(1, n)
        mat = np.vstack([cost(0, 0, cuts), cost(1, cuts, n)])
        bal = mat.max(axis=0) / (mat.sum(axis=0) / k)
        j = int(np.argmin(bal))
        return Exhaustive(float(mat.max(axis=0).min()), float(bal[j]), [0, int(cuts[j]), n],
                          int(cuts.size))
    best_slow, best_bal, best_bounds, count = np.inf, np.inf, [0, n], 0
    # the last two cuts form a vectorised grid; earlier cuts (K = 4: one) are looped over
    for head in itertools.combinations(range(1, n), k - 3):
        start = head[-1] if head else 0
        b, c = np.meshgrid(np.arange(start + 1, n), np.arange(start + 1, n), indexing="ij")
        keep = c > b
        b, c = b[keep], c[keep]
        if not b.size:
            continue
        fixed = [cost(i, s, e) for i, (s, e) in enumerate(itertools.pairwise((0, *head)))]
        mat = np.vstack([*(np.full(b.shape, f) for f in fixed),
                         cost(k - 3, start, b), cost(k - 2, b, c), cost(k - 1, c, n)])
        slow = mat.max(axis=0)
        bal = slow / (mat.sum(axis=0) / k)
        count += int(slow.size)
        best_slow = min(best_slow, float(slow.min()))
        j = int(np.argmin(bal))
        if bal[j] < best_bal:
            best_bal, best_bounds = float(bal[j]), [0, *head, int(b[j]), int(c[j]), n]
    return Exhaustive(best_slow, best_bal, best_bounds, count)
