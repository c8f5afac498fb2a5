"""A shelf that is not all up (issue #16), then a node killed under load (issue #15): no
accepted request lost, throughput back at once.

First (one cluster for both, to keep the suite short): pi3 is not in the Ray cluster when
`edgekit serve --nodes pi1,pi2,pi3` starts. `--min-nodes 3` refuses, naming pi3; without it
the API serves on pi1 and pi2 (readiness degraded, pi3 named), and pi3 joins when its Ray node
comes up, without a restart (its worker is generation 0).

Its own token-auth Ray cluster (pi1..pi3; the session's `ray_cluster` is shared by other tests,
so its nodes are never killed here) and its own `edgekit serve` on the default (direct)
transport, serving the affine model. `edgekit bench`'s load generator runs closed loop with 4
clients and its default retries. Then `kill_node("pi3")` SIGKILLs pi3's raylet and workers, as
a power cut does, and a separate process reads Ray's GCS for the moment Ray declares pi3 dead
(~15 s later: Ray's health checks).

Lost means the server took a request and never answered it well: any error the bench counts
(a 5xx other than 503, a reset) and any request the bench had to send again because its
connection dropped (the API itself is never killed here, so there should be none). A 503
refusal up front is flow control, not a loss; at 4 clients and 2 replicas x max-queue 4 left
there is no reason for one, and the per-bucket counts below assume there is none.

Throughput is counted per 0.25 s bucket from the time each answer arrived at the bench. Then
pi3 comes back (`start_node`): its worker must be recreated (generation 1) and serve again.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import queue
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from serve_helpers import affine_model, start_server

from edgekit import names
from edgekit.client import Client
from edgekit.serve.loadgen import BenchReport, BenchSettings, run_bench

pytestmark = pytest.mark.slow  # ~100 s: a cluster of its own and Ray's ~15 s to declare death

NODES = ["pi1", "pi2", "pi3"]
BUCKET_S = 0.25
BASELINE_S = 4.0  # steady load measured over this long before the kill
BACK_WITHIN_S = 10.0  # issue #15: throughput back within this of Ray declaring the node dead
BACK_SHARE = 0.5  # "back" = a 1 s window at this share of the pre-kill rate, or more
RETURN_WITHIN_S = 90.0  # the restarted node's worker recreated and serving within this

# Reads node states straight from Ray's GCS (no driver, no raylet of its own, so killing
# pi3's raylet cannot take it down), in its own process so this test process keeps the token
# setting of the session's cluster. Prints one JSON line when pi3 is alive, one when it is dead.
_WATCH = r"""
import json, sys, time
from ray._raylet import GcsClient

gcs = GcsClient(address=sys.argv[1])
resource, end = sys.argv[2], time.time() + float(sys.argv[3])
alive = None
while time.time() < end:
    infos = [i for i in gcs.get_all_node_info(timeout=10).values()
             if resource in i.resources_total]
    if alive is None:
        up = [i for i in infos if i.state == 0]
        if up:
            alive = up[0].node_id
            print(json.dumps({"state": "alive"}), flush=True)
    else:
        mine = [i for i in infos if i.node_id == alive]
        if mine and mine[0].state == 1:
            print(json.dumps({"state": "dead", "seen": time.time(),
                              "end": mine[0].end_time_ms / 1000.0}), flush=True)
            sys.exit(0)
    time.sleep(0.05)
sys.exit(1)
"""


class RayWatch:
    """The GCS reader above, with its lines handed over through a queue."""

    def __init__(self, cluster, node: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WATCH, cluster.address, names.node_resource(node), "600"],
            env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)  # the watcher ended

    def expect(self, state: str, timeout_s: float, meanwhile=lambda: None) -> dict:
        """The next line, which must say `state`; `meanwhile` is called every 0.25 s."""
        end, got = time.monotonic() + timeout_s, None
        while time.monotonic() < end:
            try:
                got = self.lines.get(timeout=0.25)
                break
            except queue.Empty:
                meanwhile()
        if got is None or got["state"] != state:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise AssertionError(f"Ray never said pi3 is {state} within {timeout_s} s: "
                                 f"{got} {err[-2000:]}")
        return got

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


class Load:
    """`edgekit bench`'s closed loop in a thread; the wall time of every answer it got."""

    def __init__(self, url: str, token: str):
        self.stamps: list[float] = []
        self.stop = threading.Event()
        self.report: BenchReport | None = None
        settings = BenchSettings(600, concurrency=4, token=token, stop=self.stop,
                                 progress=lambda: self.stamps.append(time.time()))
        feeds = {"x": np.ones((1, 4), np.float32)}
        self.thread = threading.Thread(target=self._run, args=(url, feeds, settings))
        self.thread.start()

    def _run(self, url: str, feeds: dict, settings: BenchSettings) -> None:
        self.report = asyncio.run(run_bench(url, "affine", feeds, settings))

    def rate(self, t0: float, t1: float) -> float:
        """Answers per second in [t0, t1)."""
        s = self.stamps[:]
        return (bisect.bisect_left(s, t1) - bisect.bisect_left(s, t0)) / (t1 - t0)

    def finish(self) -> BenchReport:
        self.stop.set()
        self.thread.join(120)
        assert self.report is not None, "the bench did not end"
        return self.report


def _wait(cond, deadline: float, what: str, client: Client) -> float:
    """Poll `cond` until true (returns the time it was) or the deadline (monotonic) passes."""
    while not cond():
        if time.monotonic() > deadline:
            st = client.status()
            raise AssertionError(f"timed out waiting for {what}: {st['replicas']} "
                                 f"{st['events'][-10:]}")
        time.sleep(0.1)
    return time.time()


def _completed(client: Client, node: str) -> int:
    return client.status()["nodes"][node]["completed_total"]


def _replica(client: Client, node: str) -> dict:
    return next(r for r in client.status()["replicas"] if r["nodes"] == [node])


def _generation(client: Client, node: str) -> int:
    """The generation of `node`'s worker, once it is routed to again (else -1)."""
    rep = _replica(client, node)
    return rep["generations"][0] if rep["alive"] else -1


class Generations:
    """When pi3's worker generation (as status shows it, routed to or not) changed."""

    def __init__(self, client: Client, t0: float):
        self.client, self.t0, self.seen = client, t0, [(0.0, 0)]

    def poll(self) -> None:
        rep = _replica(self.client, "pi3")
        if rep["generations"][0] != self.seen[-1][1]:
            self.seen.append((round(time.time() - self.t0, 2), rep["generations"][0]))

    def until(self, t_end: float) -> None:
        while time.time() < t_end:
            self.poll()
            time.sleep(0.25)


def _recovery(load: Load, t_kill: float, t_dead: float) -> dict:
    """The figures of the seconds around the kill (wall times, seconds)."""
    before = load.rate(t_kill - BASELINE_S, t_kill)
    half = BACK_SHARE * before
    starts = np.arange(t_kill, t_dead + BACK_WITHIN_S, BUCKET_S)
    buckets = [load.rate(t, t + BUCKET_S) for t in starts]
    first_bucket = next((t for t, r in zip(starts, buckets, strict=True) if r >= half), None)
    after_dead = t_dead + np.arange(0.0, BACK_WITHIN_S, BUCKET_S)  # 1 s windows from the verdict
    first_second = next((t for t in after_dead if load.rate(t, t + 1.0) >= half), None)
    return {
        "before_per_s": round(before, 1),
        "min_bucket_per_s": round(min(buckets), 1),
        # the 0.25 s buckets under half the rate before: (s after the kill, answers/s)
        "slow_buckets": [(round(t - t_kill, 2), r) for t, r in zip(starts, buckets, strict=True)
                         if r < half],
        "between_kill_and_dead_per_s": round(load.rate(t_kill, t_dead), 1),
        "first_bucket_back_after_kill_s": None if first_bucket is None
        else round(first_bucket - t_kill, 2),
        "first_second_back_after_dead_s": None if first_second is None
        else round(first_second - t_dead, 2),
        "after_dead_10s_per_s": round(load.rate(t_dead, t_dead + BACK_WITHIN_S), 1),
    }


def _kill_and_measure(cluster, client: Client, load: Load, watch: RayWatch) -> dict:
    """Steady load on every node, kill pi3, wait for Ray's verdict and 10 s more."""
    _wait(lambda: all(_completed(client, n) > 50 for n in NODES),
          time.monotonic() + 120, "traffic on every node", client)
    watch.expect("alive", 60)
    time.sleep(BASELINE_S)
    t_kill = time.time()
    cluster.kill_node("pi3")
    gens = Generations(client, t_kill)
    dead = watch.expect("dead", 120, gens.poll)
    t_dead = dead["end"] or dead["seen"]  # the GCS's own time of death, if it gives one
    gens.until(t_dead + BACK_WITHIN_S + 1.0)
    figures = _recovery(load, t_kill, t_dead)
    figures.update(ray_dead_after_kill_s=round(t_dead - t_kill, 2),
                   ray_dead_seen_after_kill_s=round(dead["seen"] - t_kill, 2),
                   pi3_generations_after_kill_s=gens.seen)
    return figures


def _comes_back(cluster, client: Client) -> dict:
    """Restart pi3's Ray node: its worker is recreated once, and serves again. Exactly
    generation 1: the ActorUnavailableError its pings get ~2 s after the kill (the node is
    unreachable, not yet declared dead) is not taken for a death (health.py), so no worker
    is made on a node Ray still lists but that is gone."""
    t0 = time.time()
    deadline = time.monotonic() + RETURN_WITHIN_S
    cluster.start_node("pi3")
    t_gen = _wait(lambda: _generation(client, "pi3") == 1, deadline,
                  "pi3's worker to be recreated", client)
    start = _completed(client, "pi3")
    t_traffic = _wait(lambda: _completed(client, "pi3") > start + 20, deadline,
                      "pi3 to take traffic again", client)
    return {"pi3_generation_serving": _generation(client, "pi3"),
            "recreated_after_start_s": round(t_gen - t0, 1),
            "serving_after_start_s": round(t_traffic - t0, 1)}


def _serves_without_pi3_then_adds_it(cluster, tmp_path_factory, model) -> object:
    """pi3 is down at start: refused with --min-nodes 3, else served on pi1+pi2; pi3 joins."""
    import os

    refused = subprocess.run(
        [sys.executable, "-m", "edgekit.cli.main", "serve", "--ray-address", cluster.address,
         "--nodes", ",".join(NODES), "--min-nodes", "3", "--port", "1",
         "--model", f"affine={model}"],
        env={**os.environ, **cluster.env()}, capture_output=True, text=True, timeout=120)
    said = " ".join(refused.stderr.split())  # rich wraps lines
    assert refused.returncode != 0 and "pi3 (at least 3 of 3 wanted)" in said, said[-2000:]
    server = start_server(cluster, tmp_path_factory, ["--nodes", ",".join(NODES)],
                          {"affine": model})
    client = Client(server.url, token=server.token)
    ready = client.status()["readiness"]
    assert ready["ready"] and ready["degraded"] and ready["missing"] == ["pi3 (affine)"], ready
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(client.infer("affine", x)["y"], 2 * x + 1)
    cluster.start_node("pi3")  # the board comes up: no restart, no redeploy
    deadline = time.monotonic() + RETURN_WITHIN_S
    _wait(lambda: not client.status()["readiness"]["degraded"], deadline, "pi3 to join", client)
    assert _replica(client, "pi3")["generations"] == [0]
    return server


def test_node_killed_under_load_loses_nothing(tmp_path_factory):
    """Kill pi3 (raylet + workers) under load: nothing lost, throughput back within 10 s of
    Ray's verdict (with the direct channel it hardly dips), pi3 serving again once back."""
    from edgekit.serve.localcluster import LocalCluster

    began = time.monotonic()
    cluster = LocalCluster(nodes=NODES[:2])  # pi3 joins later
    server = watch = load = None
    try:
        cluster.start()
        model = affine_model(tmp_path_factory.mktemp("model") / "affine.onnx")
        server = _serves_without_pi3_then_adds_it(cluster, tmp_path_factory, model)
        client = Client(server.url, token=server.token)
        watch = RayWatch(cluster, "pi3")
        load = Load(server.url, server.token)
        figures = _kill_and_measure(cluster, client, load, watch)
        figures.update(_comes_back(cluster, client))
        report = load.finish()
        status = client.status()
    finally:
        if load is not None:
            load.stop.set()
            load.thread.join(120)
        if server is not None:
            server.stop()
        if watch is not None:
            watch.stop()
        cluster.stop()
    rep = report.summary()
    figures.update(requests=rep["requests"], ok=rep["ok"], refused_503=rep["refused_503"],
                   lost=rep["errors"] + rep["retried"],
                   failed_over=status["nodes"]["pi3"]["failed_total"],
                   test_s=round(time.monotonic() - began, 1))
    print("\nnode-death:", json.dumps(figures, indent=1))
    log = server.log.read_text()[-3000:]
    assert rep["errors"] == 0, (rep["error_samples"], log)
    assert rep["retried"] == 0, f"{rep['retried']} requests' connections dropped: {log}"
    assert rep["refused_503"] == 0, f"refusals with capacity to spare (bucket counts off): {rep}"
    assert figures["between_kill_and_dead_per_s"] > 0, figures  # served while Ray still waited
    assert figures["first_second_back_after_dead_s"] is not None, figures
    assert figures["first_second_back_after_dead_s"] <= BACK_WITHIN_S, figures
