"""Per-request cost of candidate tensor transports between two local processes (issue #15).

    .venv/bin/python benchmarks/transport_compare.py [--requests 2000] [--json F] [--skip-ray]

An "instant worker" in another process (multiprocessing spawn, 127.0.0.1 only) echoes the
tensors; the client sends N sequential requests after a warm-up, with ppocr-cls's input
(1x3x48x192 float32, ~110 KB) and a tiny 1x16 float32 tensor, over, side by side:
(a) tcp: asyncio (uvloop if importable) with our own frame: struct header (magic, request id,
    table length, payload length), tensor table (dtype code, ndim, offset, nbytes, dims),
    64-byte-aligned raw payloads; sent by `writelines` of memoryviews (no join), received by a
    BufferedProtocol into one aligned numpy buffer per frame, tensors rebuilt by np.frombuffer;
(b) grpc: grpc.aio unary-unary on a generic handler, identity serializers (no protoc), the
    same frame joined into one bytes message;
(c) ray: a plain actor call on our own in-process token-auth Ray (skipped if it fails to
    start); its server CPU is the actor process only, Ray's daemons cost more on top.
Reported: p50/p99 round trip (us), requests/s, client-process and server-process CPU us per
request (time.process_time deltas / N). Echoes are checked (warm-up replies and the last
timed one); exit 1 on a mismatch. --requests N is the tiny count; the large payload gets N//4.
Numbers from a shared 2-core machine are noisy (client and server share the cores with
everything else): compare rows of one run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import secrets
import shutil
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"EKC1"
HEADER = struct.Struct("<4sQIQ")  # magic, request id, table length, payload length
ENTRY = struct.Struct("<BB6xQQ")  # dtype code (0 = end of table), ndim, offset, nbytes
ALIGN = 64
ZEROS = memoryview(bytes(ALIGN))
DTYPES = {1: np.float32, 2: np.float16, 3: np.int8, 4: np.uint8, 5: np.int32, 6: np.int64}
CODES = {np.dtype(t): c for c, t in DTYPES.items()}
Tensors = list[np.ndarray]


def encode(rid: int, tensors: Tensors) -> list[Any]:
    """Frame as a list of buffers (header, table, payload views + padding): nothing joined."""
    table, parts, off = bytearray(), list[Any](), 0
    for t in tensors:
        t = np.ascontiguousarray(t)  # a view when already contiguous
        if pad := -off % ALIGN:
            parts.append(ZEROS[:pad])
            off += pad
        table += ENTRY.pack(CODES[t.dtype], t.ndim, off, t.nbytes)
        table += struct.pack(f"<{t.ndim}Q", *t.shape)
        parts.append(memoryview(t).cast("B"))
        off += t.nbytes
    table += bytes(-len(table) % ALIGN)  # payloads start 64-byte aligned in the body
    return [HEADER.pack(MAGIC, rid, len(table), off), table, *parts]


def decode(body: Any, tlen: int) -> Tensors:
    """Tensors as read-only-or-not views of `body` (table then payloads); no copies."""
    plen = len(body) - tlen
    out, pos = [], 0
    while pos + ENTRY.size <= tlen:
        code, ndim, off, nbytes = ENTRY.unpack_from(body, pos)
        if code == 0:
            break
        dims = struct.unpack_from(f"<{ndim}Q", body, pos + ENTRY.size)
        pos += ENTRY.size + 8 * ndim
        dtype = np.dtype(DTYPES[code])
        count = int(np.prod(dims, dtype=np.int64))
        if count * dtype.itemsize != nbytes or off + nbytes > plen:
            raise ValueError("bad tensor table")
        out.append(np.frombuffer(body, dtype, count, tlen + off).reshape(dims))
    return out


def aligned_empty(n: int) -> np.ndarray:
    raw = np.empty(n + ALIGN, np.uint8)  # np.empty: no zeroing
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + n]


class FrameProtocol(asyncio.BufferedProtocol):
    """Reads header, then the whole body straight into one aligned buffer; calls on_frame."""

    def __init__(self, on_frame: Callable[[FrameProtocol, int, np.ndarray, int], None]) -> None:
        self.on_frame = on_frame
        self.header = bytearray(HEADER.size)
        self.body: np.ndarray | None = None
        self.view = memoryview(self.header)
        self.got = self.rid = self.tlen = 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view[self.got :]

    def buffer_updated(self, nbytes: int) -> None:
        self.got += nbytes
        if self.got < len(self.view):
            return
        if self.body is None:
            magic, self.rid, self.tlen, plen = HEADER.unpack(self.header)
            if magic != MAGIC:
                self.transport.close()
                return
            self.body = aligned_empty(self.tlen + plen)
            self.view, self.got = memoryview(self.body), 0
            if len(self.body):
                return
        body, self.body = self.body, None
        self.view, self.got = memoryview(self.header), 0
        self.on_frame(self, self.rid, body, self.tlen)


def tcp_echo(proto: FrameProtocol, rid: int, body: np.ndarray, tlen: int) -> None:
    proto.transport.writelines(encode(rid, decode(body, tlen)))


async def grpc_echo(request: bytes, context: Any) -> bytes:
    _, rid, tlen, _ = HEADER.unpack_from(request)
    return b"".join(encode(rid, decode(memoryview(request)[HEADER.size :], tlen)))


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def serve(kind: str, conn: Connection) -> None:
    """Server process: listen on 127.0.0.1, send the port, answer "cpu" until "stop"."""
    loop = new_loop() if kind == "tcp" else asyncio.new_event_loop()
    stop = asyncio.Event()

    def control() -> None:
        while conn.recv() == "cpu":
            conn.send(time.process_time())
        loop.call_soon_threadsafe(stop.set)

    async def main() -> None:
        if kind == "tcp":
            server = await loop.create_server(lambda: FrameProtocol(tcp_echo), "127.0.0.1", 0)
            conn.send(server.sockets[0].getsockname()[1])
        else:
            import grpc

            gserver = grpc.aio.server()
            rpc = grpc.unary_unary_rpc_method_handler(grpc_echo)  # no (de)serializers: bytes
            gserver.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler("ek.Echo", {"Call": rpc}),)
            )
            port = gserver.add_insecure_port("127.0.0.1:0")
            await gserver.start()
            conn.send(port)
        threading.Thread(target=control, daemon=True).start()
        await stop.wait()

    loop.run_until_complete(main())


def same(a: Tensors, b: Tensors) -> bool:
    pairs = zip(a, b, strict=False)
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in pairs)


async def series(
    name: str, call: Callable[[Tensors], Awaitable[Tensors]], tensors: Tensors, n: int,
    server_cpu: Callable[[], float],
) -> dict[str, Any]:
    ok = True
    for _ in range(max(20, n // 10)):
        ok &= same(await call(tensors), tensors)
    lat = np.empty(n, np.int64)
    s0, c0, w0 = server_cpu(), time.process_time(), time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter_ns()
        reply = await call(tensors)
        lat[i] = time.perf_counter_ns() - t0
    wall, c1, s1 = time.perf_counter() - w0, time.process_time(), server_cpu()
    ok &= same(reply, tensors)
    return {
        "transport": name, "payload_bytes": sum(t.nbytes for t in tensors), "requests": n,
        "p50_us": np.percentile(lat, 50) / 1e3, "p99_us": np.percentile(lat, 99) / 1e3,
        "req_per_s": n / wall, "client_cpu_us": (c1 - c0) / n * 1e6,
        "server_cpu_us": (s1 - s0) / n * 1e6, "ok": ok,
    }


def bench_process(kind: str, payloads: list[tuple[Tensors, int]]) -> list[dict[str, Any]]:
    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=serve, args=(kind, child), daemon=True)
    proc.start()
    port = parent.recv()

    def server_cpu() -> float:
        parent.send("cpu")
        return float(parent.recv())

    async def tcp() -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        pending: dict[int, asyncio.Future[Tensors]] = {}
        rids = iter(range(1, 1 << 62))

        def on_reply(proto: FrameProtocol, rid: int, body: np.ndarray, tlen: int) -> None:
            pending.pop(rid).set_result(decode(body, tlen))

        transport, _ = await loop.create_connection(
            lambda: FrameProtocol(on_reply), "127.0.0.1", port
        )

        async def call(tensors: Tensors) -> Tensors:
            rid = next(rids)
            fut = pending[rid] = loop.create_future()
            transport.writelines(encode(rid, tensors))
            return await fut

        try:
            return [await series(kind, call, t, n, server_cpu) for t, n in payloads]
        finally:
            transport.close()

    async def grpc_client() -> list[dict[str, Any]]:
        import grpc

        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await channel.channel_ready()
            stub = channel.unary_unary("/ek.Echo/Call")  # identity (de)serializers
            rids = iter(range(1, 1 << 62))

            async def call(tensors: Tensors) -> Tensors:
                reply = await stub(b"".join(encode(next(rids), tensors)))
                _, _, tlen, _ = HEADER.unpack_from(reply)
                return decode(memoryview(reply)[HEADER.size :], tlen)

            return [await series(kind, call, t, n, server_cpu) for t, n in payloads]

    try:
        if kind == "tcp":
            with asyncio.Runner(loop_factory=new_loop) as runner:
                return runner.run(tcp())
        return asyncio.run(grpc_client())
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.terminate()


class Echo:
    def echo(self, tensors: Tensors) -> Tensors:
        return tensors

    def cpu(self) -> float:
        return time.process_time()


def bench_ray(payloads: list[tuple[Tensors, int]]) -> list[dict[str, Any]]:
    """Plain actor call on our own in-process Ray (token auth); [] when Ray does not start."""
    tmp = Path(tempfile.mkdtemp(prefix="ek-tc-"))
    token = tmp / "ray-token"
    with os.fdopen(os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(secrets.token_hex(32))
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.pop("RAY_ADDRESS", None)  # address="local" below: never join someone's cluster
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    ray: Any = None
    try:
        import ray
        ray.init(
            address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
            _temp_dir=str(tmp), _system_config={"max_direct_call_object_size": 8 << 20},
        )
        actor = ray.remote(Echo).remote()
        ray.get(actor.cpu.remote(), timeout=120)

        async def call(tensors: Tensors) -> Tensors:
            return await actor.echo.remote(tensors)

        def server_cpu() -> float:
            return float(ray.get(actor.cpu.remote()))

        async def run() -> list[dict[str, Any]]:
            return [await series("ray", call, t, n, server_cpu) for t, n in payloads]

        return asyncio.run(run())
    except Exception as exc:  # any failure to start or call Ray: skip (c), keep (a) and (b)
        print(f"ray: skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
        return []
    finally:
        if ray is not None:
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def show(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sequential round trips to an echo worker in another process")
    for h in ("transport", "payload B", "N", "p50 us", "p99 us", "req/s", "client CPU us/req",
              "server CPU us/req", "ok"):
        table.add_column(h, justify="right")
    for r in rows:
        table.add_row(
            r["transport"], f"{r['payload_bytes']:,}", str(r["requests"]), f"{r['p50_us']:.0f}",
            f"{r['p99_us']:.0f}", f"{r['req_per_s']:,.0f}", f"{r['client_cpu_us']:.0f}",
            f"{r['server_cpu_us']:.0f}", "yes" if r["ok"] else "NO",
        )
    Console(width=120).print(table)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="tiny requests; large get N // 4")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    ap.add_argument("--skip-ray", action="store_true", help="leave out (c)")
    args = ap.parse_args()
    rng = np.random.default_rng(15)
    payloads = [
        ([rng.standard_normal((1, 16), dtype=np.float32)], args.requests),
        ([rng.standard_normal((1, 3, 48, 192), dtype=np.float32)], max(1, args.requests // 4)),
    ]
    rows = bench_process("tcp", payloads) + bench_process("grpc", payloads)
    if not args.skip_ray:
        rows += bench_ray(payloads)
    show(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if not all(r["ok"] for r in rows):
        print("MISMATCH: echoed tensors differ from the sent ones", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
