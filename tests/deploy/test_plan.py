"""Placement planner: pure data in, plan out."""

from __future__ import annotations

import pytest

from edgekit.deploy.plan import MB, NodeCapacity, auto_stages, plan
from edgekit.errors import ModelError


def nodes(*spec: tuple[str, int, float]) -> list[NodeCapacity]:
    return [NodeCapacity(n, ram * MB, speed) for n, ram, speed in spec]


def test_replicas_on_every_node_that_fits_fastest_first():
    p = plan([500 * MB], nodes(("a", 1000, 1.0), ("b", 400, 2.0), ("c", 3000, 2.0)))
    assert p.mode == "replicas" and p.nodes == ["c", "a"]
    assert "b" in p.unused and "needs 500 MB, has 400 MB" in p.unused["b"]


def test_replica_limit():
    p = plan([100 * MB], nodes(("a", 1000, 1.0), ("b", 1000, 2.0)), replicas=1)
    assert p.nodes == ["b"] and "--replicas 1" in p.unused["a"]


def test_model_that_fits_no_node_is_refused_with_numbers():
    with pytest.raises(ModelError) as exc:
        plan([5000 * MB], nodes(("a", 1000, 1.0), ("b", 3000, 1.0)), model="big")
    assert "5000 MB" in exc.value.message and "b" in exc.value.message
    assert "3000 MB" in exc.value.message


def test_pipeline_puts_big_stage_on_big_node_and_spares_form_more_pipelines():
    ns = nodes(("a", 1000, 1), ("b", 4000, 1), ("c", 1000, 1), ("d", 4000, 1), ("e", 500, 1))
    p = plan([3000 * MB, 800 * MB], ns)
    assert p.mode == "pipeline" and p.stages == 2
    assert [g[0] for g in p.groups] == ["b", "d"] or [g[0] for g in p.groups] == ["d", "b"]
    assert all(g[1] in ("a", "c") for g in p.groups)
    assert list(p.unused) == ["e"]


def test_pipeline_needs_distinct_nodes():
    with pytest.raises(ModelError, match="3 stages but only 2"):
        plan([1, 1, 1], nodes(("a", 10, 1), ("b", 10, 1)))


def test_auto_stages():
    ns = nodes(("a", 1000, 1), ("b", 1000, 1), ("c", 600, 1))
    assert auto_stages(900 * MB, ns) == 1
    assert auto_stages(1800 * MB, ns) == 2
    with pytest.raises(ModelError, match="all 3 nodes"):
        auto_stages(5000 * MB, ns)
