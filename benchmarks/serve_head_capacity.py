"""Head capacity: requests/s the API process serves on ONE core, and its CPU microseconds
per request, with workers that answer at once (issue #15).

    .venv/bin/python benchmarks/serve_head_capacity.py [--duration 10] [--connections 32]
        [--nodes 1] [--transport direct|ray] [--json F]

A token-auth Ray `LocalCluster` (1-2 nodes, 1 CPU each) serves the serve tests' affine model
(y = 2x + 1, [1, 4] fp32) through `edgekit serve` (serve_compare's `Server`; `--transport`
passed on only when given), started from a thread with affinity {0} (what `taskset -c 0`
does): all its threads and children stay on core 0 (checked). The Ray cluster (GCS, raylets,
the workers they fork) and the load generator share core 1. "core0" near 1.0 means the head
was the limit; "core1" near 1.0, the other side.

The generator is a raw asyncio client (uvloop if importable): N keep-alive HTTP/1.1
connections, one request in flight each, pre-built request bytes, responses framed by
Content-Length; non-200s and dropped connections are errors; one response per row is checked
against 2x + 1. Per row, after a warm-up: req/s, API CPU us per request (psutil: API process
and children), p50/p99, errors, each core's busy share, the generator's own CPU us per
request (its ceiling: ~1e6 / that). The reference row: a bare aiohttp app (one POST handler,
fixed small body, `taskset -c 0`) loaded the same way, aiohttp's own ceiling on this core.

Pi 4: us/request x 4 (range 4-6x) = a Pi 4 head core's cost per request; 1e6 over it = the
requests/s it would sustain. Why 4x: this host's core is x86 (EPYC) at ~2.6 GHz, a Pi 4's a
Cortex-A72 at 1.5 GHz (1.8 with arm_boost; shared/docs/pi-facts.md). The head runs CPython
(HTTP, JSON, asyncio, dispatch): branchy, cache-sensitive code where an A72 does roughly half
the work per clock; with a 1.4-1.7x lower clock that is ~3-3.5x, rounded up to the ~4x that
edgekit/serve/decode.py states for CPython JSON work (stated there, not measured; nor here).
6x covers the governor stepping down to 1000 MHz when hot. Shared machine: compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import psutil

try:
    import uvloop
except ImportError:  # the generator then runs on asyncio's own loop (the row says which)
    uvloop = None

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "serve"))
os.environ["RAY_AUTH_MODE"] = "token"

import serve_compare as sc
from serve_helpers import affine_model

from edgekit.client import HEADER_LENGTH, decode, encode
from edgekit.serve.localcluster import LocalCluster, _free_port

API_CORE, LOAD_CORE = 0, 1
PI4_FACTOR, PI4_RANGE = 4.0, (4.0, 6.0)
TARGET_PER_S = 5000
MODEL = "tiny"
X = np.array([[0.5, -1.0, 2.0, 3.25]], np.float32)
Probe = Callable[[], dict[str, float]]


def cores_of(procs: list[psutil.Process]) -> list[int]:
    """Union of the CPU affinities of every thread of `procs` (to check the pinning held)."""
    cores: set[int] = set()
    for p in procs:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p.pid}/task"):
                with contextlib.suppress(OSError):
                    cores |= os.sched_getaffinity(int(tid))
    return sorted(cores)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` and its live children."""
    try:
        procs = [root := psutil.Process(pid), *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        raise RuntimeError(f"the server process {pid} died during the run") from None
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += sum(p.cpu_times()[:2])  # user + system
    return total


def build_requests(port: int, token: str) -> dict[str, bytes]:
    """The whole HTTP request, headers and body, per protocol: sent as is, every time."""
    binary, head_len = encode({"x": X})
    plain = json.dumps({"inputs": [{"name": "x", "shape": list(X.shape), "datatype": "FP32",
                                    "data": X.ravel().tolist()}]}).encode()

    def request(body: bytes, headers: str) -> bytes:
        return (f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {token}\r\n{headers}"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    return {"binary": request(binary, "Content-Type: application/octet-stream\r\n"
                                      f"{HEADER_LENGTH}: {head_len}\r\n"),
            "json": request(plain, "Content-Type: application/json\r\n")}


def check_sample(kind: str, raw: bytes | None) -> str:
    """'ok' when the sample response is a 200 with y == 2x + 1 (reference: a 200), else why."""
    if raw is None or kind == "reference":
        return "no 200 response seen" if raw is None else "ok"
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = [line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:]]
    hlen = {k.lower(): v for k, v in lines}.get(HEADER_LENGTH.lower())
    if (kind == "binary") != (hlen is not None):
        return f"{kind} request answered {'binary' if hlen else 'JSON'} outputs"
    y = decode(body, hlen).get("y")
    good = y is not None and np.allclose(y, 2 * X + 1)
    return "ok" if good else f"wrong output: {y!r}, expected {(2 * X + 1)!r}"


class _Run:
    """Shared state of one load run: counters only ever touched by the event loop thread."""

    def __init__(self, payload: bytes) -> None:
        self.payload, self.recording, self.stopping = payload, False, False
        self.errors = self.warmup_errors = 0
        self.latencies: list[float] = []
        self.sample: bytes | None = None
        self.error_sample = ""

    def error(self, what: str) -> None:
        self.errors += self.recording
        self.warmup_errors += not (self.recording or self.stopping)
        self.error_sample = self.error_sample or what[:300]


def _content_length(buf: bytes, end: int) -> int:
    """The Content-Length of the response whose headers end at `end` (-1: none)."""
    head = buf[:end].lower()
    i = head.find(b"\r\ncontent-length:")
    if i < 0:
        return -1
    j = head.find(b"\r\n", i + 17)
    return int(head[i + 17 : j if j >= 0 else end])


class _Conn(asyncio.Protocol):
    """One keep-alive connection with one request in flight: the next one is written from
    the callback that completes the previous response (no task or future per request)."""

    def __init__(self, run: _Run, drained: asyncio.Future) -> None:
        self.run, self.drained = run, drained
        self.buf, self.need, self.t0 = b"", -1, 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def send(self) -> None:
        self.t0 = time.perf_counter()
        self.transport.write(self.run.payload)  # the transport itself: no stream wrapper

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if self.need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            length = _content_length(buf, end)
            if length < 0:
                self.run.error("a response without Content-Length")
                self.transport.close()
                return
            self.need = end + 4 + length
        if len(buf) < self.need:
            self.buf = buf
            return
        self._complete(buf, time.perf_counter() - self.t0)

    def _complete(self, buf: bytes, took: float) -> None:
        run = self.run
        if buf[9:12] == b"200":
            if run.recording:
                run.latencies.append(took)  # one per completed request: its count is "ok"
            if run.sample is None:
                run.sample = buf[: self.need]
        else:
            run.error(buf[: self.need].decode("latin-1"))
        self.buf, self.need = b"", -1
        if not run.stopping:
            self.send()
        elif not self.drained.done():
            self.drained.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.drained.done():
            if not self.run.stopping:
                self.run.error(f"connection closed by the server ({exc})")
            self.drained.set_result(None)


class LoadOptions(NamedTuple):
    connections: int
    warmup_s: float
    duration_s: float


async def _drive(port: int, payload: bytes, opts: LoadOptions, probe: Probe) -> dict:
    loop = asyncio.get_running_loop()
    run = _Run(payload)
    conns: list[_Conn] = [(await loop.create_connection(
        lambda: _Conn(run, loop.create_future()), "127.0.0.1", port))[1]
        for _ in range(opts.connections)]
    for conn in conns:
        conn.send()
    await asyncio.sleep(opts.warmup_s)
    cpu0 = probe()  # before the window opens: psutil's own time stays out of it
    t0, gen0 = time.perf_counter(), time.process_time()
    run.recording = True
    await asyncio.sleep(opts.duration_s)
    run.recording = False
    elapsed, gen = time.perf_counter() - t0, time.process_time() - gen0
    cpu1 = probe()
    run.stopping = True  # let every in-flight request finish: nothing cut off mid-way
    await asyncio.wait([c.drained for c in conns], timeout=10)
    for conn in conns:
        conn.transport.close()
    return summarize(run, elapsed, gen, {k: cpu1[k] - cpu0[k] for k in cpu0})


def summarize(run: _Run, elapsed: float, gen_s: float, cpu: dict[str, float]) -> dict:
    n = max(ok := len(run.latencies), 1)
    lat = np.asarray(run.latencies or [np.nan]) * 1000
    load_side = gen_s + cpu.get("workers", 0.0) + cpu.get("Ray daemons", 0.0)
    return {"requests_per_s": round(ok / elapsed, 1), "ok": ok, "errors": run.errors,
            "warmup_errors": run.warmup_errors, "error_sample": run.error_sample,
            **{f"p{q}_ms": round(float(np.percentile(lat, q)), 3) for q in (50, 99)},
            "api_us_per_request": round(cpu["api"] * 1e6 / n, 1),
            "generator_us_per_request": round(gen_s * 1e6 / n, 1),
            "cpu_us_per_request": {k: round(v * 1e6 / n, 1) for k, v in cpu.items()},
            "api_core_busy": round(cpu["api"] / elapsed, 3),
            "load_core_busy": round(load_side / elapsed, 3), "sample": run.sample}


def bench(kind: str, port: int, payload: bytes, opts: LoadOptions, probe: Probe) -> dict:
    """One load run on this (load-core) thread, its sample response checked."""
    loop = uvloop.new_event_loop() if uvloop else asyncio.new_event_loop()
    try:
        row = loop.run_until_complete(_drive(port, payload, opts, probe))
    finally:
        loop.close()
    row["event_loop"] = type(loop).__module__.split(".")[0]
    row["check"] = check_sample(kind, row.pop("sample"))
    return row


def serve_reference(port: int) -> None:
    """The reference server (a subprocess): aiohttp, one POST handler reading the body and
    answering a fixed small body; default asyncio loop and no access log, like the API."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'{"outputs":[]}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/v2/models/{name}/infer", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def run_reference(opts: LoadOptions) -> dict:
    port, deadline = _free_port(), time.monotonic() + 30
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(["taskset", "-c", str(API_CORE), sys.executable, __file__,
                                 "--aiohttp-server", str(port)], stderr=err)
        try:
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    err.seek(0)
                    raise RuntimeError(f"reference server did not start: {err.read()[-800:]!r}")
                time.sleep(0.2)
            payload = build_requests(port, "unused")["binary"]
            row = bench("reference", port, payload, opts, lambda: {"api": tree_cpu(proc.pid)})
            return {**row, "api_cores": cores_of([psutil.Process(proc.pid)])}
        finally:
            proc.terminate()
            proc.wait(10)


def run_edgekit(a: argparse.Namespace, model: Path, opts: LoadOptions) -> dict[str, dict]:
    cluster = LocalCluster(nodes=[f"pi{i + 1}" for i in range(a.nodes)])
    cluster.start()  # from this thread, pinned to the load core: Ray's processes inherit it
    try:
        extra = ["--max-queue", str(max(sc.MAX_QUEUE, a.connections))]  # the last one wins
        extra += ["--transport", a.transport] if a.transport else []
        os.sched_setaffinity(0, {API_CORE})  # what `taskset -c 0` does, inherited by the API
        try:
            srv = sc.Server(cluster, [f"{MODEL}={model}"], ",".join(cluster.nodes), extra)
        finally:
            os.sched_setaffinity(0, {LOAD_CORE})
        try:
            api = psutil.Process(srv.proc.pid)
            where = {"api_cores": cores_of([api, *api.children(recursive=True)]),
                     "cluster_cores": cores_of(cluster._procs(str(cluster.root)))}

            def probe() -> dict[str, float]:
                roles = sc.cpu_seconds(cluster, srv.proc.pid)
                return {"api": tree_cpu(srv.proc.pid), "workers": roles["workers"],
                        "Ray daemons": roles["Ray daemons"]}

            reqs = build_requests(srv.port, sc.TOKEN)
            return {kind: {**bench(kind, srv.port, reqs[kind], opts, probe), **where}
                    for kind in ("binary", "json")}
        finally:
            srv.stop()
    finally:
        cluster.stop()


def pi4(us: float) -> dict:
    """One Pi 4 head core's cost per request and the requests/s it would sustain."""
    return {"factor": PI4_FACTOR, "range": list(PI4_RANGE), "us_per_request": round(
        us * PI4_FACTOR, 1), "requests_per_s": {f"x{f:g}": round(1e6 / (us * f)) if us else None
                                                for f in sorted({PI4_FACTOR, *PI4_RANGE})}}


def report(res: dict) -> None:
    pi = f"Pi4 x{PI4_FACTOR:g}"
    print(f"{'row':28} {'req/s':>9} {'API us/req':>10} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
          f"{'core0':>6} {'core1':>6} {'gen us/req':>10} {pi:>9}  check")
    for kind, label in (("binary", "edgekit binary OIP"), ("json", "edgekit JSON"),
                        ("reference", "bare aiohttp POST (ceiling)")):
        r, p = res["rows"][kind], res["pi4"][kind]["requests_per_s"][f"x{PI4_FACTOR:g}"]
        print(f"{label:28} {r['requests_per_s']:>9} {r['api_us_per_request']:>10} "
              f"{r['p50_ms']:>7} {r['p99_ms']:>7} {r['errors']:>6} {r['api_core_busy']:>6} "
              f"{r['load_core_busy']:>6} {r['generator_us_per_request']:>10} {p:>9}  {r['check']}")
        if r["error_sample"]:
            print(f"  first error: {r['error_sample'][:200]!r}")
    b = res["rows"]["binary"]
    print(f"target binary >= {TARGET_PER_S} req/s on one core: "
          f"{'met' if b['requests_per_s'] >= TARGET_PER_S else 'NOT met'}. core0/core1: share "
          f"busy (core1 = generator + workers + Ray daemons); API threads on cores "
          f"{b['api_cores']}, cluster on {b['cluster_cores']}. Pi 4 head core req/s at "
          f"x4-x6: binary {res['pi4']['binary']['requests_per_s']}, JSON "
          f"{res['pi4']['json']['requests_per_s']}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="timed seconds per row")
    ap.add_argument("--warmup", type=float, default=2.0, help="untimed seconds before each row")
    ap.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    ap.add_argument("--nodes", type=int, choices=(1, 2), default=1, help="Ray worker nodes")
    ap.add_argument("--transport", choices=("direct", "ray"), help="edgekit serve's, if given")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--aiohttp-server", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if not (1 <= a.connections <= 1024 and a.duration > 0 and a.warmup >= 0):
        ap.error("give --connections 1..1024, --duration > 0 and --warmup >= 0")
    return a


def main() -> None:
    a = parse_args()
    if a.aiohttp_server:
        return serve_reference(a.aiohttp_server)
    if not {API_CORE, LOAD_CORE} <= (allowed := os.sched_getaffinity(0)):
        sys.exit(f"needs cores {API_CORE} and {LOAD_CORE}; this process may use {allowed}")
    os.sched_setaffinity(0, {LOAD_CORE})
    opts = LoadOptions(a.connections, a.warmup, a.duration)
    work = Path(tempfile.mkdtemp(prefix="ek-headcap-"))
    os.environ["EDGEKIT_HOME"] = str(work / "home")  # the API's telemetry: not ~/.edgekit
    try:
        rows = {"reference": run_reference(opts)}
        rows.update(run_edgekit(a, affine_model(work / "affine.onnx"), opts))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = {"cores": os.cpu_count(), "connections": a.connections, "nodes": a.nodes,
           "duration_s": a.duration, "warmup_s": a.warmup, "transport": a.transport,
           "rows": rows, "pi4": {k: pi4(rows[k]["api_us_per_request"]) for k in rows}}
    report(res)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    if any(r["check"] != "ok" or r["errors"] for r in rows.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
