"""How a request's tensors reach a replica's workers and come back: the direct channel
(default) or Ray actor calls (`edgekit serve --transport ray`, the baseline).

Both keep Ray in charge of what it is good at: placing each worker on its node, telling the
head which nodes live, and the health pings that decide when a worker is recreated
(health.py). Only the per-request tensors take the direct path: the head sends a request to
a replica's first stage over its channel; a pipeline's stages pass the carry straight to the
next stage's node; the last stage answers the head. Measured in docs/SERVING.md.

A `Route` is the head's side of one replica on the direct path: a channel per stage, which
stage links are up, and the requests in flight. Any of its channels breaking fails all of
them with ChannelLost (the head cannot tell which requests were inside a dead stage); the
pool retries them on another replica, the replica leaves routing, and health re-attaches
it (new channels, new links) once its workers answer again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import ray

from edgekit.serve import frames
from edgekit.serve.channel import Channel, ChannelLost, open_channel
from edgekit.serve.health import StageActor, actors_of
from edgekit.serve.router import Replica
from edgekit.serve.settings import Tunables
from edgekit.serve.worker import RunError, unpack


async def _await(ref: Any) -> Any:
    return await ref


async def _await_chain(carry: Any, ms: Any, label: str):
    out, total = await asyncio.gather(carry, ms)
    return {k: unpack(v) for k, v in out.items()}, total, label


class RayTransport:
    """Each request is a Ray actor call; a pipeline chains ObjectRefs stage to stage."""

    name = "ray"

    def start(self, replica: Replica, feeds: dict[str, np.ndarray]):
        """Start the call: (an awaitable of (outputs, ms, node), the ObjectRef per stage)."""
        actors = [s.actor for s in actors_of(replica)]
        if len(actors) == 1:
            ref = actors[0].infer.remote(feeds)
            return _await(ref), [ref]
        carry, ms, refs = feeds, 0.0, []
        for actor in actors:  # refs flow stage to stage; the head only awaits the last
            carry, ms = actor.stage.remote(carry, ms)
            refs.append(carry)
        return _await_chain(carry, ms, replica.label), refs

    async def hung_stage(self, replica: Replica, refs: list) -> StageActor:
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        stages = actors_of(replica)
        return next((s for s, r in zip(stages, refs, strict=True) if r not in ready), stages[-1])

    def ready(self, replica: Replica) -> bool:
        return True

    async def attach(self, replica: Replica) -> None:
        return None

    def detach(self, replica: Replica, stage: StageActor) -> None:
        return None

    def heartbeat(self) -> None:
        return None

    def forget(self, replica: Replica) -> None:
        return None

    def close(self) -> None:
        return None


class Route:
    def __init__(self, replica: Replica, on_down: Callable[[Replica, str], None]):
        n = len(replica.nodes)
        self.replica, self.on_down = replica, on_down
        self.label = replica.nodes[0] if n == 1 else replica.label
        self.chans: list[Channel | None] = [None] * n
        self.gens = [-1] * n  # the generation of the worker each channel goes to
        self.linked: list[tuple[int, int] | None] = [None] * (n - 1)  # generations linked
        self.inflight: dict[int, asyncio.Future] = {}

    def up(self, stages: list[StageActor]) -> bool:
        gens = [s.generation for s in stages]
        return (all(c is not None and not c.closed for c in self.chans) and self.gens == gens
                and all(self.linked[i] == (gens[i], gens[i + 1]) for i in range(len(gens) - 1)))

    def call(self, rid: int, feeds: dict[str, Any]) -> asyncio.Future:
        ch = self.chans[0]
        if ch is None or ch.closed:
            raise ChannelLost(f"no channel to {self.label}")
        fut = asyncio.get_running_loop().create_future()
        self.inflight[rid] = fut
        ch.send(frames.encode(frames.REQUEST, rid, feeds))
        return fut

    def on_frame(self, ch: Channel, head: frames.Header, body: Any) -> None:
        fut = self.inflight.pop(head.rid, None) if head.kind in (frames.REPLY,
                                                                  frames.ERROR) else None
        if fut is None or fut.done():
            return  # PONG, or the answer to a request already failed over
        if head.kind == frames.REPLY:
            try:
                out = {k: unpack(v) for k, v in frames.decode(head, body).items()}
            except (frames.FrameError, ValueError) as exc:
                fut.set_exception(RunError(f"{self.label}: malformed reply: {exc}"))
                return
            fut.set_result((out, head.ms, self.label))
            return
        message = frames.error_text(body)
        if head.flags == frames.PATH_LOST:
            with contextlib.suppress(ValueError):
                self.linked[self.chans.index(ch)] = None  # that stage's link: redo it
            fut.set_exception(ChannelLost(message))
        else:
            fut.set_exception(RunError(message))

    def on_lost(self, ch: Channel, exc: BaseException | None) -> None:
        why = f"channel to {ch.label} lost ({type(exc).__name__ if exc else 'closed'})"
        failed, self.inflight = self.inflight, {}
        for fut in failed.values():
            if not fut.done():
                fut.set_exception(ChannelLost(why))
        self.on_down(self.replica, why)  # out of routing until health re-attaches it


class DirectTransport:
    name = "direct"

    def __init__(self, key: bytes, tunables: Tunables,
                 on_down: Callable[[Replica, str], None]):
        self.key = key
        self.t = tunables
        self.on_down = on_down
        self.routes: dict[int, Route] = {}
        self._ids = itertools.count(1)

    def route(self, replica: Replica) -> Route:
        route = self.routes.get(id(replica))
        if route is None:
            route = self.routes[id(replica)] = Route(replica, self.on_down)
        return route

    def start(self, replica: Replica, feeds: dict[str, np.ndarray]):
        return self.route(replica).call(next(self._ids), feeds), None

    def ready(self, replica: Replica) -> bool:
        return self.route(replica).up(actors_of(replica))

    async def attach(self, replica: Replica) -> None:
        """Open the channels to workers that lack one and link the stages, in order."""
        route, stages = self.route(replica), actors_of(replica)
        for i, s in enumerate(stages):
            ch = route.chans[i]
            if ch is not None and not ch.closed and route.gens[i] == s.generation:
                continue
            if ch is not None:
                ch.close()
            host, port, identity = s.address
            route.chans[i] = await asyncio.wait_for(
                open_channel((host, port), self.key, identity, route.on_frame, route.on_lost,
                             self.t.channel_max_frame_bytes), self.t.channel_connect_timeout_s)
            route.gens[i] = s.generation
        for i in range(len(stages) - 1):
            gens = (stages[i].generation, stages[i + 1].generation)
            if route.linked[i] != gens:
                host, port, identity = stages[i + 1].address
                await asyncio.wait_for(stages[i].actor.link.remote(host, port, identity),
                                       self.t.channel_connect_timeout_s)
                route.linked[i] = gens

    def detach(self, replica: Replica, stage: StageActor) -> None:
        """The stage's worker is gone: close its channel (its requests fail over now)."""
        route = self.route(replica)
        i = actors_of(replica).index(stage)
        if route.chans[i] is not None:
            route.chans[i].close(ChannelLost(f"worker on {stage.node} died"))

    def forget(self, replica: Replica) -> None:
        """A retired replica (rolling update): close its channels without reporting it down;
        a request still on it fails with ChannelLost and the pool sends it elsewhere."""
        route = self.routes.pop(id(replica), None)
        if route is None:
            return
        for ch in route.chans:
            if ch is not None and not ch.closed:
                ch.closed = True
                if ch.transport is not None:
                    ch.transport.abort()
        failed, route.inflight = route.inflight, {}
        for fut in failed.values():
            if not fut.done():
                fut.set_exception(ChannelLost(f"{route.label} retired by a rolling update"))

    def heartbeat(self) -> None:
        """PING quiet channels; close one silent for `channel_dead_after_s` (a board that
        lost power never closes its sockets)."""
        now = time.monotonic()
        for route in self.routes.values():
            for ch in route.chans:
                if ch is None or ch.closed:
                    continue
                silent = now - ch.last_rx
                if silent > self.t.channel_dead_after_s:
                    ch.close(TimeoutError(f"silent for {silent:.1f} s"))
                elif silent >= self.t.channel_ping_s:
                    ch.ping()

    def close(self) -> None:
        for route in self.routes.values():
            for ch in route.chans:
                if ch is not None and ch.transport is not None:
                    ch.closed = True  # shutting down: nothing to fail over
                    ch.transport.abort()

    async def hung_stage(self, replica: Replica, probe: Any) -> StageActor:
        """The stage still computing (or not answering): asked over Ray's health group."""
        stages = actors_of(replica)
        busy = await asyncio.gather(
            *[asyncio.wait_for(s.actor.busy.remote(), self.t.ping_timeout_s) for s in stages],
            return_exceptions=True)
        scores = [float("inf") if isinstance(b, BaseException) else float(b) for b in busy]
        return stages[scores.index(max(scores))]
