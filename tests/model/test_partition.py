"""The pipeline partitioner is exact: it matches brute force on small random problems."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgekit.errors import ModelError
from edgekit.model import partition
from edgekit.model.partition import Problem


def random_problem(n: int, seed: int) -> Problem:
    rng = np.random.default_rng(seed)
    weights = {f"w{i}": int(rng.integers(1, 100)) for i in range(n)}
    node_weights = [
        frozenset({f"w{i}"} | ({f"w{i - 3}"} if i >= 3 and rng.random() < 0.3 else set()))
        for i in range(n)
    ]
    return Problem(
        compute_ms=rng.uniform(0.1, 5.0, n).tolist(),
        cut_bytes=rng.integers(0, 200_000, n + 1).tolist(),
        node_weights=node_weights,
        weight_bytes=weights,
        live_bytes=rng.integers(0, 300, n).tolist(),
    )


def brute_force(prob: Problem, k: int, caps, speeds, link: float) -> float:
    best = float("inf")
    for cuts in itertools.combinations(range(1, prob.n), k - 1):
        bounds = [0, *cuts, prob.n]
        plan = partition.evaluate(prob, bounds, speeds, link)
        if all(s.mem_bytes <= c for s, c in zip(plan.stages, caps, strict=True)):
            best = min(best, plan.slowest_ms)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_dp_matches_brute_force(seed: int) -> None:
    prob = random_problem(9, seed)
    k = 2 + seed % 3
    speeds = [1.0, 0.5, 2.0, 1.0][:k]
    caps = [400.0 + 50 * seed] * k
    link = 125e6
    want = brute_force(prob, k, caps, speeds, link)
    if want == float("inf"):
        with pytest.raises(ModelError, match="memory cap"):
            partition.solve(prob, k, speeds=speeds, mem_caps=caps, link_bytes_per_s=link)
        return
    plan = partition.solve(prob, k, speeds=speeds, mem_caps=caps, link_bytes_per_s=link)
    assert plan.slowest_ms == pytest.approx(want)
    assert next(s.start for s in plan.stages) == 0 and plan.stages[-1].end == prob.n


def test_never_worse_than_naive_split() -> None:
    for seed in range(20):
        prob = random_problem(30, seed)
        for k in (2, 3, 4):
            plan = partition.solve(prob, k)
            naive = partition.evaluate(prob, partition.naive_bounds(prob.n, k), [1.0] * k, 125e6)
            assert plan.slowest_ms <= naive.slowest_ms + 1e-9


def test_too_many_stages_is_an_error() -> None:
    with pytest.raises(ModelError, match="cannot make 10 stages"):
        partition.solve(random_problem(5, 0), 10)


def test_memory_cap_nobody_can_meet() -> None:
    with pytest.raises(ModelError, match="memory cap"):
        partition.solve(random_problem(8, 1), 2, mem_caps=[10.0, 10.0])


def test_balance_ratio() -> None:
    prob = Problem([1.0] * 4, [0] * 5, [frozenset()] * 4, {}, [0] * 4)
    plan = partition.solve(prob, 2, link_bytes_per_s=0)
    assert plan.balance == pytest.approx(1.0)
    assert [(s.start, s.end) for s in plan.stages] == [(0, 2), (2, 4)]


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_exhaustive_agrees_with_dp_and_plain_enumeration(k: int) -> None:
    from edgekit.model import balance

    prob = random_problem(14, seed=k)
    link = 50e6
    speeds = [1.0, 0.7, 1.3, 1.0][:k]
    ex = balance.exhaustive(prob, k, speeds=speeds, link_bytes_per_s=link)
    dp = partition.solve(prob, k, speeds=speeds, link_bytes_per_s=link)
    assert ex.slowest_ms == pytest.approx(dp.slowest_ms)
    assert ex.slowest_ms == pytest.approx(brute_force(prob, k, [float("inf")] * k, speeds, link))
    plans = [
        partition.evaluate(prob, [0, *cuts, prob.n], speeds, link)
        for cuts in itertools.combinations(range(1, prob.n), k - 1)
    ]
    balances = [p.balance for p in plans]
    assert ex.best_balance == pytest.approx(min(balances))
    fastest = [p for p in plans if p.slowest_ms <= ex.slowest_ms * (1 + 1e-9)]
    assert ex.balance_at_optimum == pytest.approx(min(p.balance for p in fastest))
    # the DP's tie-break takes the most even of the fastest splits (max-min cheapest stage)
    cheapest = max(min(s.cost_ms for s in p.stages) for p in fastest)
    assert min(s.cost_ms for s in dp.stages) == pytest.approx(cheapest)
    assert partition.evaluate(prob, ex.balance_bounds, speeds, link).balance == pytest.approx(
        ex.best_balance
    )
    assert ex.splits == len(balances)
    bound = balance.lower_bound_ms(prob, k, speeds)
    assert bound.slowest_ms <= dp.slowest_ms + 1e-9


def test_an_indivisible_node_sets_the_bound() -> None:
    from edgekit.model import balance

    prob = Problem([1.0, 1.0, 10.0, 1.0], [0] * 5, [frozenset()] * 4, {}, [0] * 4)
    bound = balance.lower_bound_ms(prob, 3)
    assert bound.largest_node == 2 and bound.slowest_ms == 10.0
    ex = balance.exhaustive(prob, 3, link_bytes_per_s=1e9)
    assert ex.slowest_ms == 10.0 and ex.best_balance > 2.0  # no split balances a 10:3 graph
    assert ex.balance_at_optimum >= ex.best_balance


def test_ties_at_the_bottleneck_go_to_the_most_even_split() -> None:
    prob = Problem([2.0, 2.0, 10.0, 3.0, 3.0], [0] * 6, [frozenset()] * 5, {}, [0] * 5)
    plan = partition.solve(prob, 4, link_bytes_per_s=1e9)
    assert plan.slowest_ms == 10.0
    assert [s.compute_ms for s in plan.stages] == [4.0, 10.0, 3.0, 3.0]  # not 2, 2, 10, 6


def test_overlapped_transfer_costs_the_larger_of_compute_and_send() -> None:
    from edgekit.model import balance

    prob = random_problem(12, seed=7)
    plain = partition.solve(prob, 3, link_bytes_per_s=20e6)
    both = partition.solve(prob, 3, link_bytes_per_s=20e6, overlap=True)
    assert both.slowest_ms <= plain.slowest_ms
    assert all(s.cost_ms == max(s.compute_ms, s.transfer_ms) for s in both.stages)
    ex = balance.exhaustive(prob, 3, link_bytes_per_s=20e6, overlap=True)
    assert ex.slowest_ms == pytest.approx(both.slowest_ms)
