"""Least-outstanding, weighted routing with bounded queues; implements `NodeControl`.

Pure logic (no Ray, no HTTP, injected clock) so it is unit-tested with fakes. Why not Ray
Serve's request router: its replicas publish custom stats only every
`request_routing_stats_period_s` (seconds), the thermal policy must steer within one request,
and a Serve handle adds its own proxy hop; see docs/SERVING.md for the measured numbers.

A replica is one worker (or one pipeline: a tuple of nodes). Its score is
`(outstanding + 1) / weight`, weight = the smallest weight among its nodes; a replica whose
outstanding count reaches its bound (`max_queue * weight`, at least 1) takes no more; a node
that is drained or dead excludes every replica on it. When nothing can take a request the
caller answers 503 with `Retry-After` instead of queueing without bound.

Thread safety: the event loop acquires and releases replicas while a controller's thread
(the thermal controller polls at 1 Hz) reads stats and changes weights; the per-node latency
windows are deques trimmed by one and iterated by the other ("deque mutated during
iteration" gave an HTTP 500 under `bench --concurrency 16`). Every public method holds one
re-entrant lock; each is short (no I/O, no waiting), so the event loop is never held up.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from edgekit.serve.control import DRAINED, SERVING, SHEDDING, NodeStats
from edgekit.serve.energy import EnergyMeter


def _locked(method):
    """Run a Router method under the router's lock."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class Saturated(Exception):
    """No replica can take the request now; `retry_after_s` is a hint for the client."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NoCapacity(Saturated):
    """The model has no live replica at all (every node serving it is dead or drained)."""


@dataclass(eq=False)
class Replica:
    model: str
    nodes: tuple[str, ...]
    handle: object = None  # transport object (Ray actors); opaque to the router
    max_queue: int = 4
    outstanding: int = 0
    alive: bool = True
    last_pick: int = 0  # ties go to the least recently picked replica
    peak_outstanding: int = 0  # most requests ever in flight at once (pipeline overlap)
    version: str = ""  # the model version its workers loaded (rolling updates mix two)

    @property
    def label(self) -> str:
        return "+".join(self.nodes)


WINDOW_SAMPLES = 4096


@dataclass
class _Node:
    stats: NodeStats
    # (t, latency_ms, compute_ms) of the latest requests: a bounded sample, since stats sort
    # it (at 5,000 req/s, 30 s is 150,000 entries: 30 ms of the event loop per status call)
    window: deque = field(default_factory=lambda: deque(maxlen=WINDOW_SAMPLES))
    seconds: deque = field(default_factory=deque)  # [whole second, requests done in it]
    energy: EnergyMeter | None = None  # from the first power report on


class Router:
    def __init__(self, clock: Callable[[], float] = time.monotonic, window_s: float = 30.0):
        self.clock = clock
        self.window_s = window_s
        self.replicas: list[Replica] = []
        self.nodes: dict[str, _Node] = {}
        self.max_in_flight: int | None = None
        self.in_flight = 0
        self.events: deque = deque(maxlen=200)  # (t, node, action, reason)
        self.done: deque = deque()  # completion times of requests (each request once)
        self.completed_total = 0  # requests completed, each once (a pipeline's too)
        self.cluster_energy = EnergyMeter(window_s)  # summed node energy over those requests
        self._tiebreak = itertools.count(1)
        self._lock = threading.RLock()

    # --- membership -------------------------------------------------------------------
    @_locked
    def add(self, replica: Replica) -> None:
        self.replicas.append(replica)
        for n in replica.nodes:
            self.nodes.setdefault(n, _Node(NodeStats(node=n)))

    @_locked
    def swap(self, old: list[Replica], new: list[Replica], reason: str) -> None:
        """In one step: `new` replicas take requests, `old` ones take no more (a rolling
        update). A request already on an old replica still releases it (it keeps its
        count); the caller waits for `outstanding` to drop to 0 before stopping it."""
        gone = {id(r) for r in old}
        self.replicas = [r for r in self.replicas if id(r) not in gone]
        for r in new:
            self.add(r)
        for r in old + new:
            for n in r.nodes:
                self.nodes[n].stats.alive = any(x.alive for x in self.replicas
                                                if n in x.nodes)
        for r in old:
            self._log(r.label, "retired", reason)
        for r in new:
            self._log(r.label, "switched in", reason)

    @_locked
    def mark_dead(self, replica: Replica, reason: str) -> None:
        if replica.alive:
            replica.alive = False
            self._log(replica.label, "dead", reason)
        for n in replica.nodes:
            if not any(r.alive for r in self.replicas if n in r.nodes):
                self.nodes[n].stats.alive = False

    @_locked
    def mark_alive(self, replica: Replica, reason: str) -> None:
        if not replica.alive:
            replica.alive = True
            self._log(replica.label, "back", reason)
        for n in replica.nodes:
            self.nodes[n].stats.alive = True

    @_locked
    def capacity(self, model: str) -> tuple[int, int]:
        """(usable replicas, all replicas) of a model."""
        reps = [r for r in self.replicas if r.model == model]
        return sum(self._usable(r) for r in reps), len(reps)

    # --- the decision ------------------------------------------------------------------
    @_locked
    def acquire(self, model: str, exclude: set[int] | None = None) -> Replica:
        """Pick a replica for one request and count it as outstanding; raises Saturated."""
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            raise Saturated("cluster admission limit reached", self._retry_after(model))
        best, best_key = None, None
        usable = 0
        for r in self.replicas:
            if r.model != model or not self._usable(r) or (exclude and id(r) in exclude):
                continue
            usable += 1
            w = self._weight(r)
            if r.outstanding >= max(1, math.floor(r.max_queue * w)):
                continue
            key = ((r.outstanding + 1) / w, r.last_pick)
            if best_key is None or key < best_key:
                best, best_key = r, key
        if best is None:
            if usable == 0:
                raise NoCapacity(f"model '{model}' has no live replica", 5)
            raise Saturated(f"all replicas of '{model}' are busy", self._retry_after(model))
        best.outstanding += 1
        best.peak_outstanding = max(best.peak_outstanding, best.outstanding)
        best.last_pick = next(self._tiebreak)
        self.in_flight += 1
        for n in best.nodes:
            self.nodes[n].stats.outstanding += 1
        return best

    @_locked
    def release(self, r: Replica, ok: bool, latency_ms: float, compute_ms: float | None) -> None:
        r.outstanding -= 1
        self.in_flight -= 1
        now = self.clock()
        if ok:
            self.done.append(now)
            self.completed_total += 1
        for n in r.nodes:
            node = self.nodes[n]
            node.stats.outstanding -= 1
            if ok:
                node.stats.completed_total += 1
                node.window.append((now, latency_ms, compute_ms))
                sec = int(now)
                if node.seconds and node.seconds[-1][0] == sec:
                    node.seconds[-1][1] += 1
                else:
                    node.seconds.append([sec, 1])
            else:
                node.stats.failed_total += 1

    # --- NodeControl ---------------------------------------------------------------------
    @_locked
    def set_weight(self, node: str, weight: float, reason: str) -> None:
        st = self._node(node).stats
        st.weight = min(1.0, max(weight, 1e-3))
        if st.state != DRAINED:
            st.state = SERVING if st.weight >= 1.0 else SHEDDING
        st.reason = reason
        self._log(node, f"weight {st.weight:.2f}", reason)

    @_locked
    def drain(self, node: str, reason: str) -> None:
        st = self._node(node).stats
        st.state, st.reason = DRAINED, reason
        self._log(node, "drain", reason)

    @_locked
    def readmit(self, node: str, reason: str) -> None:
        st = self._node(node).stats
        st.state = SERVING if st.weight >= 1.0 else SHEDDING
        st.reason = reason
        self._log(node, "readmit", reason)

    @_locked
    def admission_limit(self, max_in_flight: int | None, reason: str) -> None:
        self.max_in_flight = max_in_flight
        self._log("*", f"admission limit {max_in_flight}", reason)

    @_locked
    def set_extra(self, node: str, key: str, value: object) -> None:
        """Let a controller attach readings shown with the node's stats."""
        self._node(node).stats.extra[key] = value

    @_locked
    def report_power(self, node: str, watts: float) -> None:
        """The node's power now (W, from a controller's telemetry): integrated into its energy
        (edgekit.serve.energy, with this router's clock) against the requests it completed."""
        n = self._node(node)
        now = self.clock()
        n.stats.extra["power_w"] = watts
        if n.energy is None:
            n.energy = EnergyMeter(self.window_s)
        n.energy.add_power(now, watts)
        n.energy.mark(now, n.stats.completed_total)
        total_j = sum(x.energy.energy_j for x in self.nodes.values() if x.energy is not None)
        self.cluster_energy.mark(now, self.completed_total, total_j)

    @_locked
    def node_stats(self) -> dict[str, NodeStats]:
        """Per-node stats as of now: copies, so a controller's thread and the event loop never
        share an object the other mutates (`extra` set by controllers stays in the router)."""
        now = self.clock()
        for node in self.nodes.values():
            w = node.window
            while w and w[0][0] < now - self.window_s:
                w.popleft()
            while node.seconds and node.seconds[0][0] < now - self.window_s:
                node.seconds.popleft()
            st = node.stats
            lat = sorted(x[1] for x in w)
            comp = [x[2] for x in w if x[2] is not None]
            st.requests_per_s = (sum(c for _, c in node.seconds) if len(w) == w.maxlen
                                 else len(w)) / self.window_s
            st.p50_ms = _pct(lat, 0.50)
            st.p95_ms = _pct(lat, 0.95)
            st.compute_ms_mean = sum(comp) / len(comp) if comp else None
            jpi = node.energy.j_per_inference(now) if node.energy is not None else None
            if jpi is None:  # absent, not None: /metrics sets a gauge from every value here
                st.extra.pop("energy_j_per_inference", None)
            else:
                st.extra["energy_j_per_inference"] = jpi
        return {n: replace(node.stats, extra=dict(node.stats.extra))
                for n, node in self.nodes.items()}

    @_locked
    def energy(self) -> dict[str, object]:
        """Joules per inference per node and for the cluster over the last `window_s`
        (edgekit.serve.energy: integrated power / completed requests). A node's requests
        include every pipeline request it took part in; the cluster counts each request once
        against the summed energy of the nodes that report power. None where power or
        traffic is missing."""
        stats = self.node_stats()
        now = self.clock()
        while self.done and self.done[0] < now - self.window_s:
            self.done.popleft()
        watts = [s.extra["power_w"] for s in stats.values()
                 if isinstance(s.extra.get("power_w"), int | float)]
        return {
            "window_s": self.window_s,
            "requests_per_s": round(len(self.done) / self.window_s, 3),
            "power_w": round(sum(watts), 3) if watts else None,
            "j_per_inference": self.cluster_energy.j_per_inference(now),
            "nodes": {n: s.extra.get("energy_j_per_inference") for n, s in stats.items()},
        }

    @_locked
    def recent_events(self, n: int = 50) -> list[tuple]:
        """The last `n` routing events (t, node, action, reason)."""
        return list(self.events)[-n:]

    # --- helpers -----------------------------------------------------------------------
    def _node(self, node: str) -> _Node:
        if node not in self.nodes:
            raise KeyError(f"unknown node '{node}' (known: {', '.join(sorted(self.nodes))})")
        return self.nodes[node]

    def _usable(self, r: Replica) -> bool:
        return r.alive and all(
            self.nodes[n].stats.state != DRAINED and self.nodes[n].stats.alive for n in r.nodes
        )

    def _weight(self, r: Replica) -> float:
        return min(self.nodes[n].stats.weight for n in r.nodes)

    def _retry_after(self, model: str) -> int:
        lat = [x[1] for n in self.nodes.values() for x in itertools.islice(reversed(n.window), 64)]
        mean_s = (sum(lat) / len(lat) / 1000.0) if lat else 0.1
        return max(1, math.ceil(mean_s * 2))

    def _log(self, node: str, action: str, reason: str) -> None:
        self.events.append((self.clock(), node, action, reason))


def _pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
