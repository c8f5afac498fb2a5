"""`edgekit demo` leaves nothing behind when its deploy fails half way: the host's head
services (its own supervisor, outside the virtual cluster) are undeployed, the cluster is
taken down, and the deploy's error is what the user sees, even if the undeploy fails too."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from edgekit.cli import demo as demo_cli


class Cluster:
    def __init__(self, calls: list[str]):
        self.calls = calls
        self.inventory_path = "inv.txt"

    def down(self) -> None:
        self.calls.append("down")


@pytest.fixture
def calls(monkeypatch):
    calls: list[str] = []
    import edgekit.inventory
    import edgekit.remote.probe
    import edgekit.virtual.cluster
    from edgekit.deploy import ops

    monkeypatch.setattr(edgekit.virtual.cluster.VirtualCluster, "up",
                        classmethod(lambda cls, specs, progress: Cluster(calls)))
    monkeypatch.setattr(edgekit.inventory, "load", lambda path: [])
    report = SimpleNamespace(ready=True, to_dict=lambda: {})
    monkeypatch.setattr(edgekit.remote.probe, "check_nodes", lambda nodes: [report])
    monkeypatch.setattr(demo_cli, "_deploy", _failing_deploy)

    def undeploy(inv):
        calls.append("undeploy")
        if "undeploy-fails" in calls:
            raise RuntimeError("undeploy broke too")
        return SimpleNamespace(raise_if_failed=lambda message: None)

    monkeypatch.setattr(ops, "undeploy", undeploy)
    return calls


def _failing_deploy(inv, model_name, step, as_json):
    step("deploy")
    raise RuntimeError("deploy broke half way")


def test_a_failed_deploy_is_undeployed_before_the_cluster_goes_down(calls):
    r = CliRunner().invoke(demo_cli.demo, ["--json"])
    assert isinstance(r.exception, RuntimeError) and "deploy broke" in str(r.exception)
    assert calls == ["undeploy", "down"]


def test_the_deploys_error_wins_over_a_failing_undeploy(calls):
    calls.append("undeploy-fails")
    r = CliRunner().invoke(demo_cli.demo, ["--json"])
    assert "deploy broke half way" in str(r.exception)
    assert calls[1:] == ["undeploy", "down"]


def test_keep_leaves_a_failed_deploy_for_inspection(calls):
    r = CliRunner().invoke(demo_cli.demo, ["--json", "--keep"])
    assert "deploy broke" in str(r.exception)
    assert calls == []
