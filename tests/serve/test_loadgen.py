"""`run_bench` against the session's server: the open loop starts exactly rate x duration
requests whatever the latency, a stop already set sends nothing, a wrong token is counted
as errors (not as ok or refused)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from edgekit.serve.loadgen import BenchSettings, run_bench

FEEDS = {"x": np.ones((2, 4), np.float32)}


def test_open_loop_starts_rate_times_duration_requests(server) -> None:
    url, token, _ = server
    rep = asyncio.run(run_bench(url, "affine", FEEDS,
                                BenchSettings(2.0, rate=10.0, token=token))).summary()
    assert rep["mode"] == "open rate=10.0/s"
    assert rep["requests"] == 20 and rep["errors"] == 0, rep
    assert rep["ok"] + rep["refused_503"] == 20


def test_a_stop_already_set_sends_nothing(server) -> None:
    url, token, _ = server
    stop = threading.Event()
    stop.set()
    for settings in (BenchSettings(600.0, concurrency=3, token=token, stop=stop),
                     BenchSettings(600.0, rate=50.0, token=token, stop=stop)):
        rep = asyncio.run(run_bench(url, "affine", FEEDS, settings)).summary()
        assert rep["requests"] == 0, (settings.mode, rep)


def test_a_wrong_token_counts_as_errors_with_a_sample(server) -> None:
    url, _, _ = server
    calls: list[int] = []
    settings = BenchSettings(1.0, rate=5.0, token="not-the-token",
                             progress=lambda: calls.append(1))
    rep = asyncio.run(run_bench(url, "affine", FEEDS, settings)).summary()
    assert rep["ok"] == 0 and rep["errors"] == rep["requests"] == 5 == len(calls)
    assert rep["error_samples"] and rep["error_samples"][0].startswith("HTTP 401")
