"""The real thermal controller attached to the server: its status, and energy per inference."""

from __future__ import annotations

import asyncio

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from edgekit.client import Client
from edgekit.serve.loadgen import BenchSettings, run_bench


def test_thermal_status_and_energy_per_inference(server):
    url, token, _ = server
    c = Client(url, token=token)
    feeds = {"x": np.ones((2, 4), np.float32)}
    rep = asyncio.run(run_bench(url, "affine", feeds,
                                BenchSettings(3.0, concurrency=2, token=token))).summary()
    assert rep["ok"] > 0 and rep["errors"] == 0
    st = c.status()
    thermal = st["controllers"]["thermal"]
    assert thermal["enabled"] is False  # watch-only in tests (conftest)
    assert {"pi1", "pi2", "pi3"} <= set(thermal["nodes"])
    # the agents report power (a sensor, or the utilisation estimate on boards without one)
    assert thermal["cluster"]["power_w"] is not None
    energy = st["energy"]
    assert energy["power_w"] > 0 and energy["j_per_inference"] > 0
    assert any(v is not None and v > 0 for v in energy["nodes"].values())
    assert rep["energy"] is not None and rep["energy"]["j_per_inference"] > 0
    code_body = c._request("GET", "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(code_body[1].decode())}
    assert families["edgekit_cluster_energy_joules_per_inference"].samples[0].value > 0
    assert any(s.value > 0 for s in families["edgekit_node_power_watts"].samples)
