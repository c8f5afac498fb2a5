"""Health of the workers: pings, and recreating workers that died, once their node is back.

Each stage actor of a replica is pinged every `health_period_s` (in the worker's own
concurrency group, so a long inference never delays the answer). Outcomes:

- answered: the actor is alive; a replica whose actors all answered is routed to again.
- unanswered for `ping_timeout_s`: the replica leaves routing (a hung or unreachable node),
  but the actor is kept: if it answers later, it is readmitted.
- raised `RayActorError` (the worker process or its node died: permanent, since workers are
  created with `max_restarts=0`): the replica leaves routing and the actor is *recreated by
  us* as soon as Ray lists a live node carrying `edgekit-node-<name>` again. The new worker
  must load its model (`describe`) before the replica is readmitted.

Why recreate instead of Ray's `max_restarts`: a restarting actor's calls neither fail nor
answer until Ray gives up or succeeds, so the head could not tell "coming back" from "gone";
recreating on the node's resource reappearing is observable and bounded by timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import exceptions as rex

from edgekit.serve.router import Replica, Router
from edgekit.serve.settings import Tunables

log = logging.getLogger("edgekit.serve")
#: a RayActorError that is not a death (Ray 2.x: the actor's node is unreachable for now)
_UNAVAILABLE = getattr(rex, "ActorUnavailableError", ())


@dataclass(eq=False)
class StageActor:
    """One worker actor of a replica, and how to make a fresh one on the same node."""

    node: str
    make: Callable[[int], Any]  # generation -> new actor handle (same model, same node)
    actor: Any = None
    generation: int = 0
    dead: bool = False  # died for good: needs recreating
    ping: asyncio.Future | None = field(default=None, repr=False)
    ping_sent_s: float = 0.0
    starting: asyncio.Future | None = field(default=None, repr=False)
    candidate: Any = None  # the new actor while it loads its model
    start_sent_s: float = 0.0
    next_try_s: float = 0.0
    failed_starts: int = 0  # failed recreations in a row (the backoff doubles with each)
    answering: bool = True  # its last ping was answered and none is overdue
    stack: dict = field(default_factory=dict)  # its kernels and runtime versions (describe)
    address: tuple | None = None  # its direct channel: (host, port, identity), from describe

    def described(self, info: dict | None) -> None:
        """Take in what the worker's `describe` said (at start and after recreation)."""
        info = info or {}
        self.stack = info.get("stack", {})
        channel = info.get("channel")
        self.address = tuple(channel) if channel else None


def actors_of(replica: Replica) -> list[StageActor]:
    return replica.handle  # type: ignore[return-value]


def retry_after_s(failures: int, t: Tunables) -> float:
    """Pause before the next recreation after `failures` failed ones in a row."""
    return min(t.recreate_backoff_max_s, t.recreate_backoff_s * 2.0 ** max(0, failures - 1))


def load_error(exc: BaseException) -> str:
    """What really went wrong when a worker did not start: the exception its constructor
    raised (Ray wraps it in an ActorDiedError whose text holds the creation task's
    traceback; its last exception line and what follows, e.g. an edgekit error's hint), not
    just the wrapper's class name."""
    text = str(exc)
    if getattr(exc, "actor_init_failed", False) or "creation task" in text:
        lines = text.rstrip().splitlines()
        starts = [i for i, ln in enumerate(lines)
                  if ln and not ln[0].isspace() and not ln.startswith(("Traceback", "ray::"))
                  and not ln.startswith("The actor died") and ":" in ln]
        if starts:
            return " ".join(ln.strip() for ln in lines[starts[-1]:])[:600]
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}"[:600] if first else type(exc).__name__


@dataclass
class LoadErrors:
    """node -> the last load failure of a worker there (model, version, error, when), shown
    in /edgekit/status (`load_errors`, and the node's `extra.load_error` that `edgekit
    status` reads) until a worker of that model loads on the node."""

    router: Router
    by_node: dict[str, dict[str, Any]] = field(default_factory=dict)

    def failed(self, node: str, model: str, version: str, error: str) -> None:
        log.error("worker of %s %s on %s did not load: %s", model, version, node, error)
        self.by_node[node] = {"model": model, "version": version, "error": error,
                              "t": round(time.time(), 1)}
        with contextlib.suppress(KeyError):  # a node the router does not know yet
            self.router.set_extra(node, "load_error", f"{model} {version}: {error}")

    def loaded(self, node: str, model: str) -> None:
        if self.by_node.get(node, {}).get("model") == model:
            del self.by_node[node]
            with contextlib.suppress(KeyError):
                self.router.set_extra(node, "load_error", None)


class HealthMonitor:
    """Runs the health rounds; `live_nodes` returns node names Ray lists as alive."""

    def __init__(
        self,
        router: Router,
        live_nodes: Callable[[], Any],
        tunables: Tunables,
        clock: Callable[[], float] = time.monotonic,
        transport: Any = None,
    ):
        self.router = router
        self.live_nodes = live_nodes
        self.t = tunables
        self.clock = clock
        #: the request path (transport.py): a replica is routed to again only once it is
        #: attached to it (channels open, stages linked)
        self.transport = transport
        self.load_errors = LoadErrors(router)
        self._task: asyncio.Task | None = None
        self._attaching: dict[int, asyncio.Task] = {}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.t.health_period_s)
            try:
                await self.round()
            except Exception:  # health must keep running; the traceback goes to the log
                log.exception("health round failed")

    async def round(self) -> None:
        now = self.clock()
        if self.transport is not None:
            self.transport.heartbeat()
        for r in self.router.replicas:
            for s in actors_of(r):
                if s.dead:
                    self._poll_start(r, s, now)
                else:
                    self._poll_ping(r, s, now)
            self._settle(r)
        dead = [s for r in self.router.replicas for s in actors_of(r) if s.dead]
        if any(s.starting is None and now >= s.next_try_s for s in dead):
            live = await asyncio.get_running_loop().run_in_executor(None, self.live_nodes)
            for s in dead:
                if s.starting is None and now >= s.next_try_s and s.node in live:
                    self._recreate(s, now)

    # --- pings -----------------------------------------------------------------------------
    def _poll_ping(self, r: Replica, s: StageActor, now: float) -> None:
        if s.ping is None:
            try:
                s.ping = asyncio.ensure_future(s.actor.ping.remote())
            except rex.RayActorError as exc:
                self.declare_dead(r, s, exc)
                return
            if s.ping_sent_s == 0.0:
                s.ping_sent_s = now
            return
        if not s.ping.done():
            if now - s.ping_sent_s > self.t.ping_timeout_s and s.answering:
                s.answering = False
                self.router.mark_dead(r, f"{s.node}: no ping answer in {self.t.ping_timeout_s} s")
            return
        exc = s.ping.exception()
        s.ping = None
        if exc is None:
            s.ping_sent_s, s.answering = 0.0, True
        elif isinstance(exc, rex.RayActorError) and not isinstance(exc, _UNAVAILABLE):
            self.declare_dead(r, s, exc)
        # any other error, and Ray's "temporarily unavailable" (its node is unreachable: it
        # may come back, or Ray declares it dead and the next ping says ActorDiedError): ping
        # again next round; the timeout decides if it lasts

    def declare_dead(self, r: Replica, s: StageActor, exc: BaseException) -> None:
        """The actor is gone for good (a call or ping raised RayActorError)."""
        if s.dead:
            return
        s.dead, s.ping, s.ping_sent_s, s.answering = True, None, 0.0, False
        self.router.mark_dead(r, f"{s.node}: worker died ({type(exc).__name__})")
        if self.transport is not None:
            self.transport.detach(r, s)
        with contextlib.suppress(Exception):
            ray.kill(s.actor, no_restart=True)

    # --- recreation ------------------------------------------------------------------------
    def _recreate(self, s: StageActor, now: float) -> None:
        s.generation += 1
        log.warning("recreating worker on %s (generation %d)", s.node, s.generation)
        s.candidate = s.make(s.generation)
        s.starting = asyncio.ensure_future(s.candidate.describe.remote())
        s.start_sent_s = now

    def _poll_start(self, r: Replica, s: StageActor, now: float) -> None:
        if s.starting is None:
            return
        if not s.starting.done():
            if now - s.start_sent_s > self.t.worker_start_timeout_s:
                s.starting.cancel()
                self._failed_start(s, now, "timed out loading its model")
            return
        exc = s.starting.exception()
        if exc is not None:
            self._failed_start(s, now, load_error(exc))
            self.load_errors.failed(s.node, r.model, r.version, load_error(exc))
            return
        s.described(s.starting.result())
        s.failed_starts = 0
        self.load_errors.loaded(s.node, r.model)
        s.actor, s.candidate, s.starting = s.candidate, None, None
        s.dead, s.ping, s.ping_sent_s, s.answering = False, None, 0.0, True
        log.warning("worker on %s is back (generation %d)", s.node, s.generation)

    def _failed_start(self, s: StageActor, now: float, why: str) -> None:
        s.failed_starts += 1
        wait = retry_after_s(s.failed_starts, self.t)
        log.warning("recreating the worker on %s failed (%d in a row; next try in %.0f s): %s",
                    s.node, s.failed_starts, wait, why)
        with contextlib.suppress(Exception):
            ray.kill(s.candidate, no_restart=True)
        s.candidate, s.starting = None, None
        s.next_try_s = now + wait

    def _settle(self, r: Replica) -> None:
        if r.alive or not all(s.answering and not s.dead for s in actors_of(r)):
            return
        if self.transport is None or self.transport.ready(r):
            self.router.mark_alive(r, "every worker answers")
        elif id(r) not in self._attaching:  # channels to open or links to redo first
            task = asyncio.get_running_loop().create_task(self._attach(r))
            self._attaching[id(r)] = task

    async def _attach(self, r: Replica) -> None:
        try:
            await self.transport.attach(r)
        except Exception as exc:  # tried again next round
            log.warning("attaching %s failed: %s: %s", r.label, type(exc).__name__, exc)
        finally:
            self._attaching.pop(id(r), None)
        if self.transport.ready(r) and not r.alive and all(s.answering and not s.dead
                                                          for s in actors_of(r)):
            self.router.mark_alive(r, "every worker answers, channels attached")
