"""Load generator behind `edgekit bench`: closed loop (N clients back to back) or open loop
(requests started at a fixed rate whatever the latency), over one reused aiohttp session.

Every request is counted as ok, refused (503 up front, the server's flow control working) or
error (anything else: lost requests). Per-node share comes from the `Edgekit-Node` header.
A request that cannot reach the API (connection refused or reset: the API restarting) is sent
again after 0.05 s doubling to 1 s, for up to `retry_for_s`, like `edgekit.Client` does; the
report counts those retries and the longest outage a request rode out (`outage_s`).
At the end the server's `/edgekit/status` gives energy per inference (J, per node and for the
cluster) when a controller reports node power; other OIP servers simply have none.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.client import HEADER_LENGTH, encode, split_url, tls_context


def _away_errors() -> tuple[type[BaseException], ...]:
    import aiohttp

    return (aiohttp.ClientConnectorError, aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)


@dataclass
class BenchReport:
    model: str
    mode: str
    duration_s: float
    ok: int = 0
    refused: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    nodes: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    energy: dict[str, Any] | None = None
    retried: int = 0  # requests sent again after the API could not be reached
    outage_s: float = 0.0  # longest time one request waited for the API to come back

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        total = self.ok or 1
        return {
            "model": self.model, "mode": self.mode, "duration_s": round(self.duration_s, 2),
            "requests": self.ok + self.refused + self.errors, "ok": self.ok,
            "refused_503": self.refused, "errors": self.errors,
            "throughput_per_s": round(self.ok / self.duration_s, 2) if self.duration_s else 0.0,
            "latency_ms": {k: round(float(np.percentile(lat, q)), 3) for k, q in
                           (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))},
            "node_share": {n: round(c / total, 3) for n, c in sorted(self.nodes.items())},
            "error_samples": self.error_samples[:5],
            "retried": self.retried, "outage_s": round(self.outage_s, 2),
            "energy": self.energy,
        }


@dataclass
class _Target:
    """Where and what to send: the infer URL, the encoded body and its headers."""

    url: str
    body: bytes
    headers: dict[str, str]
    retry_for_s: float


@dataclass(frozen=True)
class BenchSettings:
    """How `run_bench` drives the server: `rate` set means open loop, else closed loop."""

    duration_s: float
    concurrency: int = 4  # closed loop: this many clients, each sending back to back
    rate: float | None = None  # open loop: requests started per second, whatever the latency
    token: str | None = None  # bearer token
    insecure: bool = False  # https:// without verifying the certificate (system trust store)
    retry_for_s: float = 10.0  # how long one request rides out an unreachable API
    progress: Callable[[], None] | None = None  # called after every request
    stop: threading.Event | None = None  # ends the run early (tests drive it from outside)

    @property
    def mode(self) -> str:
        return f"open rate={self.rate}/s" if self.rate else \
            f"closed concurrency={self.concurrency}"

    def running(self) -> bool:
        return not (self.stop and self.stop.is_set())


async def run_bench(url: str, model: str, inputs: dict[str, np.ndarray],
                    settings: BenchSettings) -> BenchReport:
    """Drive the server at `url` with `inputs` for `model` as `settings` say."""
    import aiohttp

    s = settings
    body, n = encode(inputs)
    headers = {HEADER_LENGTH: str(n), "Content-Type": "application/octet-stream"}
    if s.token:
        headers["Authorization"] = f"Bearer {s.token}"
    report = BenchReport(model, s.mode, s.duration_s)
    target = _Target(f"{url.rstrip('/')}/v2/models/{model}/infer", body, headers, s.retry_for_s)
    tls = tls_context(s.insecure) if split_url(url)[0] == "https" else True
    conn = aiohttp.TCPConnector(limit=0, ssl=tls)
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def one() -> None:
            await _one(session, target, report)
            if s.progress is not None:
                s.progress()

        start = time.perf_counter()
        if s.rate:
            await _open_loop(one, s, s.rate, start)
        else:
            await _closed_loop(one, s, start)
        report.duration_s = time.perf_counter() - start
        report.energy = await _energy(session, url, headers)
    return report


async def _open_loop(one: Callable[[], Awaitable[None]], s: BenchSettings, rate: float,
                     start: float) -> None:
    """Start request i at start + i/rate until the duration is over, then wait for all."""
    tasks: set[asyncio.Task] = set()
    i = 0
    while (due := start + i / rate) < start + s.duration_s and s.running():
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.gather(*tasks)


async def _closed_loop(one: Callable[[], Awaitable[None]], s: BenchSettings,
                       start: float) -> None:
    """`concurrency` clients, each sending its next request when the last one is answered."""
    deadline = start + s.duration_s

    async def client() -> None:
        while time.perf_counter() < deadline and s.running():
            await one()

    await asyncio.gather(*(client() for _ in range(s.concurrency)))


async def _post(session: Any, t: _Target, report: BenchReport) -> tuple[int, bytes, str]:
    """One answer, riding out a brief API outage (connection refused or reset)."""
    import aiohttp

    first, delay = None, 0.05
    while True:
        try:
            async with session.post(t.url, data=t.body, headers=t.headers) as r:
                data = await r.read()
                if first is not None:
                    report.outage_s = max(report.outage_s, time.perf_counter() - first)
                return r.status, data, r.headers.get("Edgekit-Node", "?")
        except _away_errors() as exc:
            if isinstance(exc, aiohttp.ClientSSLError):
                raise
            now = time.perf_counter()
            first = first if first is not None else now
            if now - first + delay > t.retry_for_s:
                raise
        report.retried += 1
        await asyncio.sleep(delay)
        delay = min(1.0, delay * 2)


async def _one(session: Any, t: _Target, report: BenchReport) -> None:
    """Send one request and count its outcome."""
    import aiohttp

    t0 = time.perf_counter()
    try:
        status, data, node = await _post(session, t, report)
    except (aiohttp.ClientError, TimeoutError) as exc:
        report.errors += 1
        report.error_samples.append(f"{type(exc).__name__}: {exc}")
        return
    if status == 200:
        report.ok += 1
        report.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
        report.nodes[node] += 1
    elif status == 503:
        report.refused += 1
    else:
        report.errors += 1
        report.error_samples.append(f"HTTP {status}: {data[:200]!r}")


async def _energy(session: Any, url: str, headers: dict[str, str]) -> dict[str, Any] | None:
    """J/inference from edgekit's status (None: not edgekit, or no power reported)."""
    import aiohttp

    auth = {k: v for k, v in headers.items() if k == "Authorization"}
    try:
        async with session.get(f"{url.rstrip('/')}/edgekit/status", headers=auth) as r:
            if r.status != 200:
                return None
            energy = (await r.json()).get("energy")
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return energy if energy and energy.get("power_w") is not None else None
