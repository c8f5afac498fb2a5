"""Rolling updates through Triton's repository load (`POST /v2/repository/models/{m}/load`):
a new version replaces the old one node by node while a steady load runs, without an API
restart, and not one request is refused or lost: beside the old workers (memory allows),
node by node (`mode: replace`), on some nodes only (`nodes`: deploy's boards that failed a
step keep their version), and for a pipeline whose stage count changes. tritonclient's
`load_model` drives the first one. Bad load requests are refused naming what is wrong and
touch nothing. (A worker that fails to load the new version: tests/deploy/
test_deploy_headnode.py, where a node's version folder can be damaged.)"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import _save, affine_model, chain_bundle, start_server

from edgekit.client import Client
from edgekit.serve.loadgen import BenchReport, BenchSettings, run_bench

pytestmark = [pytest.mark.cluster]


def scaled_model(path: Path, a: float, b: float) -> Path:
    """y = a x + b over FP32 [N, 4]: the same inputs/outputs as serve_helpers.affine_model."""
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "a"], ["t"]), helper.make_node("Add", ["t", "b"], ["y"])],
        "scaled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.float32(a), "a"), numpy_helper.from_array(np.float32(b), "b")])
    return _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture(scope="module")
def roll(ray_cluster, tmp_path_factory):
    d = tmp_path_factory.mktemp("rolling")
    files = {"v1": affine_model(d / "v1.onnx"), "v2": scaled_model(d / "v2.onnx", 3.0, 1.0),
             "chain": chain_bundle(d / "chain"), "chain3": chain_bundle(d / "chain3", 3),
             "chain4": chain_bundle(d / "chain4", 4)}
    proc = start_server(ray_cluster, tmp_path_factory, ["--max-queue", "4"],
                        {"roll": files["v1"], "pipe": files["chain"]})
    try:
        yield {"url": proc.url, "token": proc.token, "files": files, "log": proc.log}
    finally:
        proc.stop()


class Load:
    """`edgekit bench`'s load generator against one model, in a thread, until stopped; it
    does not ride out an unreachable API (retry_for_s=0): a restart would count as errors."""

    def __init__(self, roll: dict, model: str):
        self.stop = threading.Event()
        settings = BenchSettings(3600.0, concurrency=3, token=roll["token"], retry_for_s=0.0,
                                 stop=self.stop)
        x = {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}
        self.report: BenchReport | None = None
        self.thread = threading.Thread(target=lambda: setattr(self, "report", asyncio.run(
            run_bench(roll["url"], model, x, settings))))
        self.thread.start()

    def finish(self) -> dict:
        self.stop.set()
        self.thread.join(120)
        assert self.report is not None
        return self.report.summary()


def _post(roll: dict, model: str, body: dict | bytes, token: str | None = None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"{roll['url']}/v2/repository/models/{model}/load", data,
                                 method="POST", headers={
                                     "Authorization": f"Bearer {token or roll['token']}"})
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _status(roll: dict) -> dict:
    req = urllib.request.Request(f"{roll['url']}/edgekit/status",
                                 headers={"Authorization": f"Bearer {roll['token']}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _y(roll: dict, model: str) -> np.ndarray:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    return Client(roll["url"], token=roll["token"]).infer(model, {"x": x})["y"]


def test_updates_roll_under_load_with_nothing_refused(roll):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    uptime = _status(roll)["uptime_s"]
    loads = [Load(roll, "roll"), Load(roll, "pipe")]
    try:
        import tritonclient.http as th

        tc = th.InferenceServerClient(roll["url"].removeprefix("http://"),
                                      network_timeout=600.0, connection_timeout=600.0)
        auth = {"Authorization": f"Bearer {roll['token']}"}
        tc.load_model("roll", headers=auth,
                      config=json.dumps({"bundle": str(roll["files"]["v2"])}))
        assert np.allclose(_y(roll, "roll"), 3 * x + 1)
        st = _status(roll)
        upd = st["updates"]["roll"]
        assert {n: r["how"] for n, r in upd["nodes"].items()} == {
            n: "beside" for n in ("pi1", "pi2", "pi3")}, upd
        assert set(st["models"]["roll"]["served"].values()) == {upd["version"]}
        assert st["models"]["roll"]["version"] == upd["version"] != upd["previous"]
        # node by node, each out of routing while the others serve
        code, body = _post(roll, "roll", {"parameters": {"bundle": str(roll["files"]["v1"]),
                                                         "mode": "replace"}})
        assert code == 200, body
        assert {r["how"] for r in body["nodes"].values()} == {"replaced"}, body
        assert np.allclose(_y(roll, "roll"), 2 * x + 1)
        # deploy readied only pi1 and pi2 (pi3 failed a step): pi3 keeps the version it has
        code, body = _post(roll, "roll", {"parameters": {"bundle": str(roll["files"]["v2"]),
                                                         "nodes": ["pi1", "pi2"]}})
        assert code == 200, body
        assert {n: r["how"] for n, r in body["nodes"].items()} == {
            "pi1": "beside", "pi2": "beside", "pi3": "kept"}, body
        served = _status(roll)["models"]["roll"]["served"]
        assert served["pi3"] == body["previous"] != served["pi1"] == served["pi2"], served
        code, body = _post(roll, "roll", {"parameters": {"bundle": str(roll["files"]["v1"])}})
        assert code == 200 and body["nodes"]["pi3"]["how"] == "unchanged", body
        assert np.allclose(_y(roll, "roll"), 2 * x + 1)
        # a pipeline of 2 stages becomes one of 3 (a new layout): up beside, one switch
        code, body = _post(roll, "pipe", {"parameters": {"bundle": str(roll["files"]["chain3"])}})
        assert code == 200 and "layout changed" in body["note"], body
        assert np.allclose(_y(roll, "pipe"), 8 * x + 7)
        # and back without the memory rule: old groups stop as the new ones start
        code, body = _post(roll, "pipe", {"parameters": {"bundle": str(roll["files"]["chain"]),
                                                         "mode": "replace"}})
        assert code == 200 and "old groups stop" in body["note"], body
        assert np.allclose(_y(roll, "pipe"), 4 * x + 3)
    finally:
        results = [ld.finish() for ld in loads]
    for r in results:  # counted, not timed: the update refused and lost nothing
        assert r["ok"] > 0 and r["refused_503"] == 0 and r["errors"] == 0, r
        assert r["retried"] == 0, r  # the API never went away
    print("\nsteady load through 4 updates:", [(r["model"], r["ok"], r["refused_503"],
                                                r["errors"]) for r in results])
    assert _status(roll)["uptime_s"] > uptime  # the same API process throughout


def test_bad_load_requests_are_refused_naming_what(roll):
    f = roll["files"]
    assert _post(roll, "nope", {})[0] == 404
    code, body = _post(roll, "roll", b"{not json")
    assert code == 400 and "load request" in body["error"], body
    code, body = _post(roll, "roll", {"parameters": {"bundle": str(f["v2"]), "version": "v9"}})
    assert code == 400 and "not v9" in body["error"], body
    code, body = _post(roll, "roll", {"parameters": {"bundle": "/no/such/model.onnx"}})
    assert code == 400 and "/no/such/model.onnx" in body["error"], body
    code, body = _post(roll, "roll", {"parameters": {"mode": "sideways"}})
    assert code == 400 and "mode" in body["error"], body
    code, body = _post(roll, "roll", {"parameters": {"colour": "red"}})
    assert code == 400 and "colour" in body["error"], body
    code, body = _post(roll, "pipe", {"parameters": {"bundle": str(f["chain4"])}})
    assert code == 400 and "4 stages but only 3 nodes" in body["error"], body
    assert _post(roll, "roll", {}, token="wrong")[0] == 401
    code, body = _post(roll, "roll", {"parameters": {"nodes": "pi1"}})
    assert code == 400 and "nodes" in body["error"], body
    code, body = _post(roll, "roll", {"parameters": {"bundle": str(f["v2"]), "nodes": ["pi9"]}})
    assert code == 400 and "pi9" in body["error"], body
    # a new layout cannot leave the old version on some nodes
    code, body = _post(roll, "pipe", {"parameters": {"bundle": str(f["chain3"]),
                                                     "nodes": ["pi1", "pi2"]}})
    assert code == 409 and "pi3 is not in this update" in body["error"], body
    # nothing changed: the same versions still serve
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert np.allclose(_y(roll, "roll"), 2 * x + 1)
    # loading what is served changes nothing
    code, body = _post(roll, "roll", {"parameters": {"bundle": str(f["v1"])}})
    assert code == 200 and {r["how"] for r in body["nodes"].values()} == {"unchanged"}, body
