"""How balanced can a contiguous pipeline split be? Bounds and an exhaustive check.

The partitioner's DP (:mod:`edgekit.model.partition`) minimises the slowest stage exactly over
contiguous splits of the topological order. Whether a plan can also be balanced within a
given margin depends on the graph, so this module answers two questions:

- :func:`lower_bound_ms`: no split, contiguous or not, can have a slowest stage below
  ``max(largest node / fastest node speed, total compute / total speed)``. A single node
  (an ``If`` holding a whole LSTM, say) is indivisible; transfers only add to this bound.
- :func:`exhaustive`: enumerate every contiguous split for K <= 4 (vectorised over the last
  two cuts) and return the lowest slowest stage, which must equal the DP's; the best balance
  (slowest / mean stage) among the splits that reach it (``balance_at_optimum``): if that
  misses a target, the graph's node sizes and cut costs, not the planner, prevent it at full
  throughput; and the best balance of any split at all, with its slowest stage (a split can
  look more even only by being slower, e.g. by sending more bytes: balance alone rewards
  waste, which is why the planner's first objective is the slowest stage).

Stage cost is the partitioner's: compute on its node plus sending its end cut over the link
(or the larger of the two with ``overlap``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edgekit.errors import ModelError
from edgekit.model.partition import Problem, _transfer_ms, stage_cost

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
    balance_at_optimum: float  # lowest slowest / mean among splits reaching slowest_ms
    best_balance: float  # lowest slowest / mean over every contiguous split ...
    best_balance_slowest_ms: float  # ... and that split's slowest stage
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
    overlap: bool = False,
) -> Exhaustive:
    """Every contiguous split into ``k`` stages (K <= 4; no memory caps)."""
    n = problem.n
    if not 1 <= k <= min(MAX_EXHAUSTIVE_K, n):
        raise ModelError(f"exhaustive check needs 1 <= K <= {MAX_EXHAUSTIVE_K} and K <= {n} nodes")
    speeds = list(speeds) if speeds else [1.0] * k
    prefix = np.concatenate([[0.0], np.cumsum(np.asarray(problem.compute_ms, dtype=float))])
    tx = np.array([_transfer_ms(b, link_bytes_per_s) for b in problem.cut_bytes])

    def cost(stage: int, start: np.ndarray | int, end: np.ndarray | int) -> np.ndarray:
        return stage_cost((prefix[end] - prefix[start]) / speeds[stage], tx[end], overlap)

    if k == 1:
        c = float(cost(0, 0, n))
        return Exhaustive(c, 1.0, 1.0, c, [0, n], 1)
    best = _Best(n)
    if k == 2:
        cuts = np.arange(1, n)
        best.add(np.vstack([cost(0, 0, cuts), cost(1, cuts, n)]), lambda j: [0, int(cuts[j]), n])
        return best.result()
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
        best.add(mat, lambda j, b=b, c=c, head=head: [0, *head, int(b[j]), int(c[j]), n])
    return best.result()


class _Best:
    """Running optimum over chunks of splits (one column of stage costs per split)."""

    def __init__(self, n: int) -> None:
        self.slow, self.at_opt, self.bal, self.bal_slow = np.inf, np.inf, np.inf, np.inf
        self.bounds, self.count = [0, n], 0

    def add(self, costs: np.ndarray, bounds_of: Callable[[int], list[int]]) -> None:
        slow = costs.max(axis=0)
        bal = slow / costs.mean(axis=0)
        self.count += int(slow.size)
        low = float(slow.min())
        if low < self.slow * (1 - 1e-9):
            self.slow, self.at_opt = low, np.inf
        if low <= self.slow * (1 + 1e-9):
            tied = slow <= self.slow * (1 + 1e-9)
            self.at_opt = min(self.at_opt, float(bal[tied].min()))
        j = int(np.argmin(bal))
        if bal[j] < self.bal:
            self.bal, self.bal_slow, self.bounds = float(bal[j]), float(slow[j]), bounds_of(j)

    def result(self) -> Exhaustive:
        return Exhaustive(self.slow, self.at_opt, self.bal, self.bal_slow, self.bounds,
                          self.count)
