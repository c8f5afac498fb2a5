"""edgekit.fleet: one typed per-node outcome for every multi-node command, the fleet's result
with .succeeded / .failed, and an error that carries it (issue 13)."""

from __future__ import annotations

import json

import pytest

from edgekit.cli.main import error_document
from edgekit.deploy.report import DeployStatus, RunResult
from edgekit.errors import NodeError
from edgekit.fleet import FleetError, FleetResult, NodeOutcome
from edgekit.inventory import parse
from edgekit.remote.ssh import Outcome, run_each


def _nodes(*names: str):
    return parse("\n".join(f"pi@127.0.0.1:{i + 2000} name={n}"
                            for i, n in enumerate(names))).nodes


def test_run_each_gives_one_outcome_per_node_with_value_or_classified_failure():
    def fn(node):
        if node.name == "pi2":
            raise TimeoutError("slow")
        return node.name.upper()

    res = run_each(_nodes("pi1", "pi2", "pi3"), fn)
    assert isinstance(res, FleetResult) and isinstance(res["pi1"], Outcome)
    assert sorted(res.succeeded) == ["pi1", "pi3"] and list(res.failed) == ["pi2"]
    assert res["pi1"].value == "PI1" and res["pi1"].error is None
    assert (res["pi2"].ok, res["pi2"].kind, res["pi2"].error) == (False, "timeout", "timed out")
    assert dict(res.items()).keys() == {"pi1", "pi2", "pi3"} and "pi2" in res and len(res) == 3


def test_deploy_results_are_fleet_results_and_json_says_who_failed():
    res = RunResult("deploy", seconds=3.0)
    res.node("pi1").step = "serving"
    res.node("pi2").fail("push", "disk full", "error")
    doc = res.to_dict()
    assert (doc["ok"], doc["succeeded"], doc["failed"]) == (False, ["pi1"], ["pi2"])
    (bad,) = [n for n in doc["nodes"] if not n["ok"]]
    assert (bad["node"], bad["step"], bad["detail"], bad["kind"]) == \
        ("pi2", "push", "disk full", "error")
    json.dumps(doc)


def test_fleet_error_carries_the_result_and_names_the_failed_nodes():
    res = FleetResult("undeploy")
    res.node("pi1")
    res.node("pi3").fail("undeploy", "processes still running: [42]", "left-running")
    with pytest.raises(FleetError) as exc:
        res.raise_if_failed("undeploy failed")
    err = exc.value
    assert isinstance(err, NodeError) and err.result is res and err.exit_code == 4
    assert err.where == "pi3" and "pi3: undeploy: processes still running" in err.message
    doc = error_document(4, err.message, kind="FleetError", where=err.where,
                         result=err.result.to_dict())
    assert doc["result"]["failed"] == ["pi3"]
    FleetResult("ok", {"pi1": NodeOutcome("pi1")}).raise_if_failed()  # nothing to raise


def test_status_is_typed_and_keeps_its_json_shape():
    st = DeployStatus("status", api_ready=True)
    up = st.node("pi1")
    up.healthy, up.active = True, {"cls": "abc"}
    st.node("pi2").fail("status", "connection refused", "refused")
    doc = st.to_dict()
    assert doc["nodes"]["pi1"]["reachable"] and doc["nodes"]["pi1"]["active"] == {"cls": "abc"}
    down = doc["nodes"]["pi2"]
    assert (down["reachable"], down["error"], down["kind"]) == \
        (False, "connection refused", "refused")
    assert doc["failed"] == ["pi2"] and doc["api_ready"] is True
