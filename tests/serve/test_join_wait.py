"""The API's start waits for the first edgekit node of a cluster that has none yet (a deploy
starts it while the nodes' Ray joins), and only for that: a cluster with nodes is placed at
once, and an empty one still fails with the usual message after the wait."""

from __future__ import annotations

import pytest

from edgekit.errors import ClusterError
from edgekit.serve import placement


def test_the_first_node_to_join_ends_the_wait(monkeypatch):
    answers = iter([{}, {}, {"pi1": 4.0}])
    monkeypatch.setattr(placement, "edgekit_nodes", lambda: next(answers))
    assert placement.wait_for_a_node(30.0, poll_s=0.001) == {"pi1": 4.0}


def test_a_cluster_with_nodes_is_not_waited_for(monkeypatch):
    calls = []
    monkeypatch.setattr(placement, "edgekit_nodes", lambda: calls.append(1) or {"pi2": 1.0})
    assert placement.wait_for_a_node(30.0) == {"pi2": 1.0} and len(calls) == 1


def test_no_node_within_the_wait_is_the_usual_error(monkeypatch):
    monkeypatch.setattr(placement, "edgekit_nodes", dict)
    live = placement.wait_for_a_node(0.05, poll_s=0.01)
    with pytest.raises(ClusterError, match="no Ray node carries an 'edgekit-node-<name>'"):
        placement.choose_nodes(["pi1"], live, 1)
