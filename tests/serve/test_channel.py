"""The direct channel end to end in one process: a real worker Endpoint (threads, sockets on
127.0.0.1) and the head's Channel/Route on an event loop. Authentication, replies as views,
errors, pipelines forwarding stage to stage, and what happens when a peer goes away."""

from __future__ import annotations

import asyncio
import socket
import time

import numpy as np
import pytest

from edgekit.serve import chanauth, frames
from edgekit.serve.channel import ChannelLost
from edgekit.serve.endpoint import Endpoint
from edgekit.serve.router import Replica
from edgekit.serve.settings import Tunables
from edgekit.serve.transport import DirectTransport
from edgekit.serve.worker import RunError

KEY = chanauth.new_key()


def double(tensors, ms):
    if "boom" in tensors:
        raise RunError("w: runtime failed: boom")
    return {"y": np.asarray(tensors["x"]) * 2}, ms + 1.0


def add_one(tensors, ms):
    return {"z": np.asarray(tensors["y"]) + 1}, ms + 2.0


class FakeStage:
    """What transport.attach needs of a health.StageActor: an address and a generation, and
    an actor whose `link.remote` links the endpoint (Ray's part, done directly here)."""

    def __init__(self, ep: Endpoint, node: str):
        self.address, self.generation, self.node = (*ep.address, ep.identity), 0, node
        self.actor = self

        class _Link:
            @staticmethod
            async def remote(host, port, identity):
                await asyncio.to_thread(ep.link, host, port, identity)

        self.link = _Link()


def setup(handlers, down):
    eps = [Endpoint("127.0.0.1", KEY, f"edgekit:m:{i}:n{i}:g0", h, 1 << 24, i < len(handlers) - 1)
           for i, h in enumerate(handlers)]
    replica = Replica("m", tuple(f"n{i}" for i in range(len(eps))))
    replica.handle = [FakeStage(ep, f"n{i}") for i, ep in enumerate(eps)]
    t = DirectTransport(KEY, Tunables(), lambda r, why: down.append(why))
    return eps, replica, t


def test_whole_model_round_trip_error_and_lost_worker():
    down: list[str] = []

    async def main():
        eps, replica, t = setup([double], down)
        await t.attach(replica)
        assert t.ready(replica)
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        fut, _ = t.start(replica, {"x": x})
        out, ms, label = await fut
        np.testing.assert_array_equal(out["y"], x * 2)
        assert (ms, label) == (1.0, "n0")
        fut, _ = t.start(replica, {"x": x, "boom": x})
        with pytest.raises(RunError, match="boom"):
            await fut
        eps[0].close()  # the worker process dies: its sockets close
        fut, _ = t.start(replica, {"x": x})
        with pytest.raises(ChannelLost):
            await asyncio.wait_for(fut, 5)
        assert down and not t.ready(replica)

    asyncio.run(main())


def test_pipeline_forwards_stage_to_stage_and_link_loss_fails_over():
    down: list[str] = []

    async def main():
        eps, replica, t = setup([double, add_one], down)
        await t.attach(replica)
        x = np.ones((1, 3), np.float32)
        results = await asyncio.gather(*[t.start(replica, {"x": x * i})[0] for i in range(20)])
        for i, (out, ms, label) in enumerate(results):
            np.testing.assert_array_equal(out["z"], x * i * 2 + 1)
            assert (ms, label) == (3.0, "n0+n1")
        eps[0].next.close()  # stage 0's link to stage 1 breaks
        fut, _ = t.start(replica, {"x": x})
        with pytest.raises(ChannelLost, match="no link"):
            await asyncio.wait_for(fut, 5)
        assert not t.ready(replica)
        await t.attach(replica)  # health re-attaches: the link is redone
        out, _, _ = await t.start(replica, {"x": x})[0]
        np.testing.assert_array_equal(out["z"], x * 2 + 1)

    asyncio.run(main())


def test_large_tensors_arrive_whole():
    async def main():
        _, replica, t = setup([double], [])
        await t.attach(replica)
        x = np.random.default_rng(0).standard_normal((3, 256, 1024)).astype(np.float32)
        outs = await asyncio.gather(*[t.start(replica, {"x": x})[0] for _ in range(4)])
        for out, _, _ in outs:
            np.testing.assert_array_equal(out["y"], x * 2)

    asyncio.run(main())


def test_wrong_key_and_garbage_are_refused():
    ep = Endpoint("127.0.0.1", KEY, "edgekit:m:0:n0:g0", double, 1 << 20, False)
    with pytest.raises(chanauth.AuthError):
        chanauth.dial(*ep.address, chanauth.new_key(), "edgekit:m:0:n0:g0", chanauth.ROLE_HEAD)
    with pytest.raises(chanauth.AuthError, match="not the worker"):
        chanauth.dial(*ep.address, KEY, "edgekit:m:0:n0:g1", chanauth.ROLE_HEAD)
    with socket.create_connection(ep.address, timeout=5) as s:  # not a handshake: closed
        s.recv(100)
        s.sendall(b"GET / HTTP/1.1\r\n" + b"x" * 200)
        assert _closed(s)
    with socket.create_connection(ep.address, timeout=5) as s:  # silent: closed after 2 s
        s.recv(100)
        t0 = time.monotonic()
        assert _closed(s) and time.monotonic() - t0 < chanauth.HANDSHAKE_S + 3


def test_oversize_or_malformed_frame_closes_the_connection():
    ep = Endpoint("127.0.0.1", KEY, "edgekit:m:0:n0:g0", double, 1 << 20, False)
    s = chanauth.dial(*ep.address, KEY, "edgekit:m:0:n0:g0", chanauth.ROLE_HEAD)
    s.settimeout(5)
    s.sendall(frames.HEADER.pack(frames.MAGIC, frames.REQUEST, 0, 0, 1, 0.0, 0, 1 << 21))
    assert _closed(s)
    s = chanauth.dial(*ep.address, KEY, "edgekit:m:0:n0:g0", chanauth.ROLE_HEAD)
    s.settimeout(5)
    s.sendall(b"EKC2" + bytes(frames.HEADER.size - 4))
    assert _closed(s)


def _closed(s: socket.socket) -> bool:
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    return True


def test_a_silent_worker_is_given_up_after_dead_after_s():
    """A board that lost power sends no FIN: the channel is closed when nothing, not even a
    PONG, arrived for channel_dead_after_s, and its requests fail over."""
    import dataclasses
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def mute_worker() -> None:  # authenticates, then never reads or answers again
        sock, _ = listener.accept()
        chanauth.accept(sock, KEY, "edgekit:m:0:n0:g0")
        held.append(sock)

    threading.Thread(target=mute_worker, daemon=True).start()
    down: list[str] = []

    class Mute:
        address = (*listener.getsockname(), "edgekit:m:0:n0:g0")
        generation, node = 0, "n0"

    async def main():
        replica = Replica("m", ("n0",))
        replica.handle = [Mute()]
        t = DirectTransport(KEY, dataclasses.replace(Tunables(), channel_ping_s=0.1,
                                                     channel_dead_after_s=0.5),
                            lambda r, why: down.append(why))
        await t.attach(replica)
        fut, _ = t.start(replica, {"x": np.ones(3, np.float32)})
        for _ in range(20):  # the health loop's rounds, faster
            t.heartbeat()
            if fut.done():
                break
            await asyncio.sleep(0.1)
        with pytest.raises(ChannelLost, match="TimeoutError"):
            await fut
        assert down and not t.ready(replica)

    asyncio.run(main())
    listener.close()
