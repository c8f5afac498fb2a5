"""`edgekit monitor` against a running virtual cluster with real serving.

Two virtual Pi 4 nodes (real sshd/cgroups/RC thermal model/firmware): pi1 with a heatsink,
pi2 bare in a 44 °C room, started at 79 °C (its idle equilibrium is 78.1 °C, above the drain
threshold, so it stays hot whatever the scheduling). A Ray node runs inside each node's cgroup
(tests/thermal/raynodes.py), `edgekit serve --controller thermal` (policy on) routes a real
ONNX model with ONNX Runtime, a closed-loop load runs, and `edgekit monitor --once` renders a
frame from the live `/edgekit/status`: pi2 must show as drained/shedding, with energy per
inference shown for the cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "virtual"))

from raynodes import RayOnNodes
from vcluster_helpers import SKIP_REASON

from edgekit.deploy import verify
from edgekit.node.raynode import free_port
from edgekit.serve.loadgen import BenchSettings, run_bench
from edgekit.thermal.monitor import fetch_status
from edgekit.virtual.cluster import NodeSpec, VirtualCluster

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def matmul_model(path: Path, n: int = 192) -> Path:
    """y = tanh(x @ W) over FP32 [-1, n]: a real ORT graph that costs CPU per request."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32) / n
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])],
        "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
        [numpy_helper.from_array(w, "W")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


@pytest.fixture
def live(tmp_path: Path):
    if SKIP_REASON:
        pytest.skip(SKIP_REASON)
    specs = [NodeSpec("pi4", "heatsink"),
             NodeSpec("pi4", "none", ambient_c=44.0, start_temp_c=79.0)]
    token_file = tmp_path / "api-token"
    token_file.write_text("monitor-test-" + os.urandom(6).hex())
    token_file.chmod(0o600)  # edgekit refuses a token file others can read
    model = matmul_model(tmp_path / "mm.onnx")
    with VirtualCluster.up(specs, home=tmp_path / "home", budget_cores=0.8) as vc:
        ray = RayOnNodes(vc).start()
        server = None
        try:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = (tmp_path / "serve.log").open("w")
            server = subprocess.Popen(
                [sys.executable, "-m", "edgekit.cli.main", "serve", "--ray-address",
                 ray.address, "--model", f"mm={model}", "--port", str(port), "--token-file",
                 str(token_file), "--controller", "thermal"],
                env=ray.env({"EDGEKIT_THERMAL_POLICY": "on",
                             "EDGEKIT_HOME": str(tmp_path / "serve-home")}),
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            h = verify.wait(url, token_file.read_text(), ["mm"], ["pi1", "pi2"], 240.0)
            assert h.ready, f"{h.error}; log: {(tmp_path / 'serve.log').read_text()[-3000:]}"
            yield url, token_file
        finally:
            if server is not None:
                server.terminate()
                server.wait(30)
            ray.stop()


def _monitor(url: str, token_file: Path, *extra: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "edgekit.cli.main", "monitor", "--url", url, "--token-file",
         str(token_file), "--once", *extra],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "200"},
        check=True)
    return out.stdout


def test_monitor_shows_hot_node_drained_under_real_load(live) -> None:
    url, token_file = live
    token = token_file.read_text()
    stop = threading.Event()
    feeds = {"x": np.ones((4, 192), np.float32)}
    reports: list = []
    load = threading.Thread(target=lambda: reports.append(asyncio.run(run_bench(
        url, "mm", feeds, BenchSettings(600.0, concurrency=2, token=token, stop=stop)))),
        daemon=True)
    load.start()
    try:
        # wait (liveness bound only) for fresh telemetry from both agents, pi2 steered away and
        # energy per inference known (the agent actors start slowly on a 0.4-core node)
        deadline = time.monotonic() + 180
        rows: dict = {}
        cluster: dict = {}
        while time.monotonic() < deadline:
            thermal = fetch_status(url, token)["controllers"]["thermal"]
            rows, cluster = thermal["nodes"], thermal["cluster"]
            fresh = all(rows.get(n, {}).get("temp_c") is not None
                        and not rows[n]["stale"] for n in ("pi1", "pi2"))
            hot = rows.get("pi2", {})
            if fresh and hot["state"] in ("drained", "shedding") and cluster["j_per_inference"]:
                break
            time.sleep(1.0)
        frame = _monitor(url, token_file)
        snap = json.loads(_monitor(url, token_file, "--json"))
    finally:
        stop.set()
        load.join(60)
    assert rows["pi2"]["temp_c"] >= 78.0 and rows["pi1"]["temp_c"] < 70.0
    line = next(ln for ln in frame.splitlines() if ln.strip(" │|").startswith("pi2"))
    assert "drained" in line or "shedding" in line, frame
    assert "serving" in next(ln for ln in frame.splitlines() if "pi1" in ln), frame
    assert "J/inference" in frame and snap["cluster"]["policy"] == "on"
    assert snap["nodes"]["pi2"]["state"] in ("drained", "shedding")
    assert snap["cluster"]["j_per_inference"] > 0  # energy per inference reaches the monitor
    assert snap["nodes"]["pi1"]["j_per_inference"] > 0
    assert reports and reports[0].ok > 0 and reports[0].nodes["pi1"] > reports[0].nodes["pi2"]
