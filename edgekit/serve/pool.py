"""Workers on the Ray cluster (placed by placement.py): calls with retry on another replica.

Failure: an actor or node that dies makes its calls raise; the request is retried on another
replica (inference is idempotent) and the replica leaves routing. `health.HealthMonitor`
recreates the worker once Ray lists the node again and readmits the replica when it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray import exceptions as rex

from edgekit.node import stack
from edgekit.serve import placement
from edgekit.serve.chanauth import new_key
from edgekit.serve.channel import ChannelLost
from edgekit.serve.deadline import DeadlineExceeded, Deadlines
from edgekit.serve.health import HealthMonitor, actors_of
from edgekit.serve.models import ModelSpec
from edgekit.serve.placement import ModelInfo
from edgekit.serve.router import NoCapacity, Replica, Router, Saturated
from edgekit.serve.settings import Tunables
from edgekit.serve.transport import DirectTransport, RayTransport
from edgekit.serve.worker import RunError

log = logging.getLogger("edgekit.serve")


@dataclass
class Result:
    outputs: dict[str, np.ndarray]
    compute_ms: float
    node: str
    queue_ms: float
    attempts: int
    version: str = ""  # of the replica that answered (two coexist during a rolling update)


async def _within(task: asyncio.Future, limit: float) -> Any:
    """`task`'s result, or TimeoutError after `limit` s; a cancelled caller leaves `task`
    running. What `wait_for(shield(task))` does, without the two extra tasks per request
    (measured: ~10 % of the API's CPU per request at 3,000 req/s)."""
    if not task.done():
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()

        def wake(_: Any = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        timer = loop.call_later(limit, wake)
        task.add_done_callback(wake)
        try:
            await waiter
        finally:
            timer.cancel()
            task.remove_done_callback(wake)
        if not task.done():
            raise TimeoutError
    return task.result()


class WorkerPool:
    # reason: one parameter per `edgekit serve` option the pool acts on
    def __init__(
        self,
        router: Router,
        max_queue: int = 4,
        compress: bool = False,
        threads: int | None = None,
        tunables: Tunables | None = None,
        node_bundles: bool = False,
        transport: str = "direct",
    ):
        self.router = router
        #: workers load the files deploy pushed to their node instead of bytes from the head
        self.node_bundles = node_bundles
        self.max_queue = max_queue
        self.compress = compress
        self.threads = threads
        self.t = tunables or Tunables()
        self.models: dict[str, ModelInfo] = {}
        self.order: dict[str, list[str]] = {}  # model -> its nodes in order (placement.py)
        #: models in a rolling update (rolling.py): a request that finds no replica free
        #: waits for one instead of being refused, since replicas are being swapped
        self.updating: set[str] = set()
        #: request path (transport.py); the channel key lives as long as this server
        self.transport: DirectTransport | RayTransport = (
            DirectTransport(new_key(), self.t, router.mark_dead) if transport == "direct"
            else RayTransport())
        self.health = HealthMonitor(router, placement.edgekit_nodes, self.t,
                                    transport=self.transport)
        self.deadlines = Deadlines(self.t)  # per-model deadlines: `deadlines.fixed`
        self._probes: set[asyncio.Task] = set()

    # --- placement (placement.py) ---------------------------------------------------------
    def place(self, specs: list[ModelSpec], nodes: list[str] | None,
              min_nodes: int = 1) -> None:
        placement.place(self, specs, nodes, min_nodes)

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        await placement.wait_ready(self, timeout_s or self.t.worker_start_timeout_s)

    # --- requests ----------------------------------------------------------------------
    async def infer(self, model: str, feeds: dict[str, np.ndarray]) -> Result:
        """Run one request; retries on another replica if a worker dies under it."""
        start = time.perf_counter()
        tried: set[int] = set()
        attempts = 0
        while True:
            try:
                replica = self.router.acquire(model, tried if attempts else None)
            except Saturated as exc:
                if attempts == 0 and model not in self.updating:
                    raise  # refused up front: 503
                # already accepted: wait for capacity rather than lose the request
                if time.perf_counter() - start > self.t.retry_deadline_s:
                    raise NoCapacity(f"model '{model}': no replica came back", 5) from exc
                tried.clear()
                await asyncio.sleep(self.t.retry_poll_s)
                continue
            attempts += 1
            queue_ms = (time.perf_counter() - start) * 1000.0
            t0 = time.perf_counter()
            try:
                out, ms, node = await self._call_within(model, replica, feeds)
            except DeadlineExceeded:
                raise  # the replica's slot is released when its worker ends (_abandon)
            except RunError:
                self.router.release(replica, False, 0.0, None)
                raise
            except rex.RayTaskError as exc:
                self.router.release(replica, False, 0.0, None)
                if isinstance(exc.cause, RunError):
                    raise exc.cause from None
                if isinstance(exc.cause, rex.RayError):
                    self._lost(replica, exc.cause, tried)
                    continue
                raise
            except (rex.RayError, ChannelLost) as exc:
                self.router.release(replica, False, 0.0, None)
                self._lost(replica, exc, tried)
                continue
            self.router.release(replica, True, (time.perf_counter() - t0) * 1000.0, ms)
            return Result(out, ms, node, queue_ms, attempts, replica.version)

    def _lost(self, replica: Replica, exc: BaseException, tried: set[int]) -> None:
        log.warning("replica %s failed (%s); retrying elsewhere", replica.label, type(exc).__name__)
        self.router.mark_dead(replica, f"call failed: {type(exc).__name__}")
        tried.add(id(replica))

    async def _call_within(self, model: str, replica: Replica, feeds: dict[str, np.ndarray]):
        """One call to the replica, bounded by its deadline for the model (deadline.py)."""
        limit = self.deadlines.for_model(model, replica.label)
        final, probe = self.transport.start(replica, feeds)
        task = asyncio.ensure_future(final)  # the direct path's Future as it is: no new task
        t0 = time.perf_counter()
        try:
            result = await _within(task, limit)
        except TimeoutError:
            self._abandon(replica, task, probe, limit)
            raise DeadlineExceeded(model, limit) from None
        except asyncio.CancelledError:  # the request went away; the worker still runs
            self._abandon(replica, task, probe, limit)
            raise
        self.deadlines.record(model, time.perf_counter() - t0, replica.label)
        return result

    def _abandon(self, replica: Replica, task: asyncio.Future, probe: Any, limit: float) -> None:
        """The request is gone but the worker still computes: its replica keeps the slot
        until it ends; if it is still busy after one more deadline it is replaced."""

        def ended(t: asyncio.Future) -> None:
            if not t.cancelled():
                t.exception()  # retrieved: the request has had its answer
            self.router.release(replica, False, 0.0, None)

        task.add_done_callback(ended)
        loop = asyncio.get_running_loop()

        def check() -> None:  # the task is kept until it ends (the loop holds tasks weakly)
            probe_task = loop.create_task(self._kill_if_hung(replica, task, probe))
            self._probes.add(probe_task)
            probe_task.add_done_callback(self._probes.discard)

        loop.call_later(limit, check)

    async def _kill_if_hung(self, replica: Replica, task: asyncio.Future, probe: Any) -> None:
        if task.done():
            return
        hung = await self.transport.hung_stage(replica, probe)
        if task.done():
            return
        log.warning("worker on %s is still busy past twice its deadline: replacing it", hung.node)
        self.health.declare_dead(replica, hung, TimeoutError("call past its deadline"))

    # --- health ------------------------------------------------------------------------
    def start_health(self) -> None:
        self.health.start()

    async def stop(self) -> None:
        await self.health.stop()
        self.transport.close()

    def drop(self, replica: Replica) -> None:
        """A replica the router no longer has (rolling.py retired it, its requests done):
        close its channels quietly and stop its workers."""
        self.transport.forget(replica)
        for s in actors_of(replica):
            for actor in (s.actor, s.candidate):
                if actor is not None:
                    with contextlib.suppress(Exception):
                        ray.kill(actor, no_restart=True)
            s.dead, s.actor, s.candidate = True, None, None

    def stacks(self) -> dict[str, dict[str, Any]]:
        """node -> what its workers compute with (kernel variant, ORT/LiteRT versions, the
        numpy-fallback warning); every worker on a node runs the same runtime."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.router.replicas:
            for s in actors_of(r):
                if s.stack and not s.dead:
                    out[s.node] = {**s.stack, "warning": stack.warning(s.stack)}
        return out

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "model": r.model,
                "version": r.version,
                "nodes": list(r.nodes),
                "alive": r.alive,
                "generations": [s.generation for s in actors_of(r)],
                "outstanding": r.outstanding,
                "peak_outstanding": r.peak_outstanding,
                "max_queue": r.max_queue,
            }
            for r in self.router.replicas
        ]
