"""Baselines for serve_compare.py: bare ONNX Runtime and a plain Ray Serve deployment.

Bare ORT is the floor the serving path is measured against: `session.run` in this process
(latency) and one single-threaded session per core, each in its own Python thread
(throughput; ORT releases the GIL). The Ray Serve baseline is what a user would write
without edgekit: one `@serve.deployment` holding an ORT session, its default router
(power of two choices), a JSON ingress that reads the OIP-style body with `request.json()`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def session(path: Path, threads: int = 1):
    import onnxruntime as ort

    from edgekit.serve.runtime import ort_session_options

    return ort.InferenceSession(
        str(path), ort_session_options(threads), providers=["CPUExecutionProvider"]
    )


def latency_ms(fn, n: int, warmup: int = 20) -> list[float]:
    """Wall time of `n` sequential calls of fn(), in ms."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def bare_throughput(path: Path, feeds: dict[str, np.ndarray], cores: int, duration_s: float,
                    cpu_ms: list[float] | None = None):
    """Inferences per second of `cores` single-threaded sessions run side by side; `cpu_ms`
    gets the CPU time of one run (thread time, mean over all runs): ORT's own cost per
    inference while both cores compute, what a serving worker cannot go below."""
    sessions = [session(path, 1) for _ in range(cores)]
    for s in sessions:
        s.run(None, feeds)
    counts = [0] * cores
    cpu = [0.0] * cores
    stop = time.perf_counter() + duration_s

    def loop(i: int) -> None:
        t0 = time.thread_time()
        while time.perf_counter() < stop:
            sessions[i].run(None, feeds)
            counts[i] += 1
        cpu[i] = time.thread_time() - t0

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(cores)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if cpu_ms is not None:
        cpu_ms.append(sum(cpu) * 1000.0 / max(1, sum(counts)))
    return sum(counts) / (time.perf_counter() - start)


def ray_actor_latency_ms(path: Path, node: str, feeds: dict[str, np.ndarray], n: int):
    """The Ray floor under (a): an ORT actor pinned to `node`, called with plain
    `ray.get(actor.run.remote(feeds))` from this driver (no HTTP, no router, no asyncio)."""
    import ray

    @ray.remote(num_cpus=1, resources={f"edgekit-node-{node}": 0.01})
    class Plain:
        def __init__(self, model: bytes):
            self.s = session_from_bytes(model)

        def run(self, f):
            return self.s.run(None, f)

    actor = Plain.remote(path.read_bytes())
    try:
        return latency_ms(lambda: ray.get(actor.run.remote(feeds)), n)
    finally:
        ray.kill(actor)


def session_from_bytes(model: bytes, threads: int = 1):
    import onnxruntime as ort

    from edgekit.serve.runtime import ort_session_options

    return ort.InferenceSession(model, ort_session_options(threads),
                                providers=["CPUExecutionProvider"])


def json_body(feeds: dict[str, np.ndarray]) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": k,
                    "shape": list(v.shape),
                    "datatype": "FP32" if v.dtype == np.float32 else "INT64",
                    "data": v.reshape(-1).tolist(),
                }
                for k, v in feeds.items()
            ]
        }
    ).encode()


def start_ray_serve(models: dict[str, Path], port: int, replicas: int) -> None:
    """One plain deployment per model on the connected Ray cluster, JSON over HTTP."""
    from ray import serve

    @serve.deployment(num_replicas=replicas, ray_actor_options={"num_cpus": 0.5})
    class OrtModel:
        def __init__(self, model: bytes):
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])

        async def __call__(self, request) -> dict[str, Any]:
            doc = await request.json()
            types = {"FP32": np.float32, "INT64": np.int64}
            feeds = {
                i["name"]: np.asarray(i["data"], types[i["datatype"]]).reshape(i["shape"])
                for i in doc["inputs"]
            }
            outs = self.session.run(None, feeds)
            return {"outputs": [{"shape": list(o.shape), "data": o.reshape(-1).tolist()}
                                for o in outs]}

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    for name, path in models.items():
        serve.run(OrtModel.bind(path.read_bytes()), name=name, route_prefix=f"/{name}")


def http_latency_ms(url: str, body: bytes, headers: dict[str, str], n: int) -> list[float]:
    """Sequential POSTs over one keep-alive connection (like edgekit.Client's sync path)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def one() -> None:
        conn.request("POST", parts.path, body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status} from {url}")

    try:
        return latency_ms(one, n)
    finally:
        conn.close()


def http_throughput(url: str, body: bytes, headers: dict[str, str], concurrency: int,
                    duration_s: float) -> dict[str, float]:
    """Closed-loop requests per second (and failures) against any JSON endpoint."""
    import aiohttp

    async def run() -> dict[str, float]:
        ok = bad = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            stop = time.perf_counter() + duration_s

            async def loop() -> None:
                nonlocal ok, bad
                while time.perf_counter() < stop:
                    async with s.post(url, data=body, headers=headers) as r:
                        await r.read()
                        ok, bad = (ok + 1, bad) if r.status == 200 else (ok, bad + 1)

            start = time.perf_counter()
            await asyncio.gather(*(loop() for _ in range(concurrency)))
            return {"per_s": ok / (time.perf_counter() - start), "failed": bad}

    return asyncio.run(run())
