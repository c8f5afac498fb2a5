"""A shelf is never all up (issue #16): `edgekit serve --nodes pi1,pi2` with pi2 not in the Ray
cluster serves on pi1 (readiness degraded, pi2 named), and pi2 joins when its Ray node comes
up, without a restart. `--min-nodes 2` refuses to start instead, naming pi2."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from serve_helpers import affine_model, start_server

from edgekit.client import Client

pytestmark = pytest.mark.slow


def _until(cond, timeout_s: float, what: str, client: Client) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            st = client.status()
            raise AssertionError(f"timed out waiting for {what}: {st['replicas']} "
                                 f"{st['readiness']}")
        time.sleep(0.25)


def test_serves_on_the_nodes_that_are_up_and_adds_the_rest(tmp_path_factory):
    from edgekit.serve.localcluster import LocalCluster

    model = affine_model(tmp_path_factory.mktemp("m") / "affine.onnx")
    cluster = LocalCluster(nodes=["pi1"]).start()
    server = None
    try:
        env = {**os.environ, **cluster.env()}
        refused = subprocess.run(
            [sys.executable, "-m", "edgekit.cli.main", "serve", "--ray-address",
             cluster.address, "--nodes", "pi1,pi2", "--min-nodes", "2", "--port", "1",
             "--model", f"affine={model}"], env=env, capture_output=True, text=True,
            timeout=120)
        assert refused.returncode != 0 and "pi2" in refused.stderr, refused.stderr[-2000:]
        assert "at least 2 of 2 wanted" in " ".join(refused.stderr.split())  # rich wraps

        server = start_server(cluster, tmp_path_factory, ["--nodes", "pi1,pi2"],
                              {"affine": model})
        client = Client(server.url, token=server.token)
        ready = client.status()["readiness"]
        assert ready["ready"] and ready["degraded"] and ready["missing"] == ["pi2 (affine)"]
        x = np.ones((1, 4), np.float32)
        for _ in range(4):
            np.testing.assert_allclose(client.infer("affine", x)["y"], 2 * x + 1)
            assert client.last_node == "pi1"

        cluster.start_node("pi2")  # the board comes up: no restart, no redeploy
        _until(lambda: not client.status()["readiness"]["degraded"], 120, "pi2 to join",
               client)
        reps = {r["nodes"][0]: r for r in client.status()["replicas"]}
        assert reps["pi2"]["generations"] == [0] and reps["pi2"]["alive"]
        seen = set()
        for _ in range(40):
            client.infer("affine", x)
            seen.add(client.last_node)
        assert seen == {"pi1", "pi2"}
    finally:
        if server is not None:
            server.stop()
        cluster.stop()
