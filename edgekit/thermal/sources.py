"""Where the controller gets node samples from: the agents' Ray actors on a cluster, or
samplers in this process (one machine, tests). Both answer `poll(after_seq)` per node with a
typed `Poll` (the node's clock and the samples newer than `after_seq`); a node that cannot be
reached, or answers something that is not a poll, answers None."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from edgekit import names
from edgekit.errors import ClusterError
from edgekit.thermal import config
from edgekit.thermal.agent import ACTOR_PREFIX, RAY_NAMESPACE, Sampler, start_agent_actor
from edgekit.thermal.reading import Poll

log = logging.getLogger(__name__)


class TelemetrySource(Protocol):
    def nodes(self) -> list[str]: ...

    def poll(self, after_seq: dict[str, int]) -> dict[str, Poll | None]:
        """node -> its agent's answer, or None when unreachable."""
        ...


class SamplerSource:
    """Samples each node's sysroot directly in this process, one sample per poll."""

    def __init__(
        self,
        sysroots: dict[str, Path],
        firmware_clock: bool = True,
        clock: Callable[[], float] = time.time,
    ):
        self._clock = clock  # the "node" clock (tests inject a manual one)
        self._samplers = {
            n: Sampler(n, Path(r), firmware_clock, clock) for n, r in sysroots.items()
        }
        self.dead: set[str] = set()  # nodes whose "agent" is stopped (fault injection)

    def nodes(self) -> list[str]:
        return list(self._samplers)

    def poll(self, after_seq: dict[str, int]) -> dict[str, Poll | None]:
        return {
            node: None if node in self.dead else Poll(self._clock(), [sampler.sample()])
            for node, sampler in self._samplers.items()
        }


class RayAgentSource:
    """Polls the agent actors (`edgekit-thermal-<node>`) in parallel with a timeout.

    An agent that is not there is started (`restart`): a node that rebooted lost its agent
    with its raylet (the actor was pinned to the old Ray node), and a node that joined after
    the controller started never had one. Until then the node shows as stale (neutral
    weight); after, its data and weight are back within a poll or two."""

    def __init__(self, nodes: list[str], timeout_s: float = config.agent_call_timeout_s,
                 restart: bool = True):
        self._nodes = list(nodes)
        self._timeout_s = timeout_s
        self._restart = restart
        self._handles: dict[str, Any] = {}
        self._lookup_after: dict[str, float] = {}

    @staticmethod
    def discover() -> list[str]:
        """Node names from the Ray nodes' `edgekit-node-<name>` resources."""
        import ray

        found = set()
        for n in ray.nodes():
            if n.get("Alive"):
                found.update(names.resource_node(r) for r in n.get("Resources", {}))
        return sorted(found - {None})

    def nodes(self) -> list[str]:
        return list(self._nodes)

    def _handle(self, node: str) -> Any:
        import ray

        if node in self._handles:
            return self._handles[node]
        if time.monotonic() < self._lookup_after.get(node, 0.0):
            return None
        try:
            self._handles[node] = ray.get_actor(ACTOR_PREFIX + node, namespace=RAY_NAMESPACE)
        except ValueError:
            if not self._restart:
                self._lookup_after[node] = time.monotonic() + config.agent_lookup_retry_s
                return None
            try:
                self._handles[node] = start_agent_actor(node)
                log.warning("thermal agent on %s (re)started", node)
            except Exception as exc:  # the node is not in the Ray cluster (yet): later
                log.info("thermal agent on %s not startable now: %s", node, exc)
                self._lookup_after[node] = time.monotonic() + config.agent_restart_retry_s
                return None
        return self._handles[node]

    def poll(self, after_seq: dict[str, int]) -> dict[str, Poll | None]:
        import ray

        refs = {}
        for node in self._nodes:
            handle = self._handle(node)
            if handle is not None:
                refs[node] = handle.poll.remote(after_seq.get(node, 0))
        out: dict[str, Poll | None] = dict.fromkeys(self._nodes)
        if not refs:
            return out
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=self._timeout_s)
        ready_set = set(ready)
        for node, ref in refs.items():
            if ref not in ready_set:
                continue
            try:
                reply = ray.get(ref)
            except Exception as exc:  # actor died: forget the handle, look it up again later
                log.warning("thermal agent on %s unreachable: %s", node, exc)
                self._handles.pop(node, None)
                continue
            try:  # the Ray boundary: plain values back into a typed Poll
                out[node] = Poll.from_dict(reply, node)
            except ClusterError as exc:  # e.g. an agent of another edgekit build
                log.warning("thermal agent on %s: %s", node, exc)
        return out
