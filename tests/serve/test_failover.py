"""A node dies under steady `bench` load: no request is lost, and the node gets traffic again."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from edgekit.client import Client
from edgekit.serve.loadgen import run_bench


def _wait(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_worker_and_node_death_lose_no_request(server):
    """Kill pi2's workers: readiness says degraded, pi1 carries the load, no request lost.

    Readmission after the worker/node returns is not asserted: it does not work yet
    (see docs/SERVING.md, "Known gaps")."""
    url, token, cluster = server
    client = Client(url, token=token)
    feeds = {"x": np.ones((1, 3, 48, 192), np.float32)}
    stop = threading.Event()
    result = {}

    def bench() -> None:
        result["r"] = asyncio.run(
            run_bench(url, "cls", feeds, 600, concurrency=2, token=token, stop=stop)
        )

    def done(node: str) -> int:
        return client.status()["nodes"][node]["completed_total"]

    t = threading.Thread(target=bench)
    t.start()
    try:
        _wait(lambda: done("pi2") > 5, 60, "traffic")
        assert cluster.kill_workers("pi2") > 0
        _wait(lambda: client.status()["readiness"]["degraded"], 60, "degraded readiness")
        before = done("pi1")
        _wait(lambda: done("pi1") > before + 5, 60, "pi1 to carry the load")
    finally:
        stop.set()
        t.join(120)
    rep = result["r"].summary()
    assert rep["errors"] == 0, rep["error_samples"]
    assert rep["ok"] > 0
