"""Issue 12 (9): overload gives only 200s and 503s with Retry-After, never a 500.

The session server runs the thermal controller, whose thread reads and steers the router
while the event loop routes: the combination that once gave one HTTP 500 (a latency window
mutated during iteration) under `bench --concurrency 16`. Here: 4x the cluster's queue
capacity for the cls model (3 replicas x --max-queue 4 = 12 in flight; 48 clients).
"""

from __future__ import annotations

import asyncio

import numpy as np

from edgekit.serve.loadgen import BenchSettings, run_bench


def test_four_times_the_queue_capacity_gives_only_200_and_503(server):
    url, token, _ = server
    feeds = {"x": np.ones((1, 3, 48, 192), np.float32)}
    rep = asyncio.run(run_bench(url, "cls", feeds, BenchSettings(
        15.0, concurrency=48, token=token, retry_for_s=0))).summary()
    assert rep["errors"] == 0, rep["error_samples"]
    assert rep["ok"] > 0 and rep["refused_503"] > 0
