"""The Ray actor that runs on a node: one model, or one stage of a pipeline.

A whole-model worker takes the request's input dict and returns `(outputs, compute_ms)`.
A pipeline stage takes the *carry* dict (request inputs plus every tensor produced so far
that a later stage or the final result still needs), runs its graph on the names it needs,
and returns the new carry. The head chains stages by passing each stage's ObjectRef to the
next, so tensors travel node to node through Ray's object store and never through the head.

With `--compress`, float tensors a stage adds to the carry travel as int8 with one scale per
block (`edgekit.native.codec.pack`, about 3.8x smaller than fp32; its numpy fallback runs
where the C library is not built); `unpack` turns them back into float32 where they are used.

Health pings run in their own concurrency group so a long inference never delays them.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from edgekit.native import codec
from edgekit.node import stack
from edgekit.serve.nodefiles import NodeFile, read_verified
from edgekit.serve.runtime import open_runtime, timed_run


class RunError(Exception):
    """The runtime raised while running a request (a 500 for that request only)."""


def pack(value: np.ndarray) -> np.ndarray | bytes:
    """A float tensor int8-compressed for the next hop; other tensors unchanged."""
    return codec.pack(value, "q8") if value.dtype.kind == "f" else value


def unpack(value: np.ndarray | bytes) -> np.ndarray:
    """Inverse of `pack` (packed tensors are bytes, plain ones arrays)."""
    return codec.unpack(value) if isinstance(value, bytes | bytearray | memoryview) else value


@dataclass(frozen=True)
class StageRole:
    """What a pipeline stage does with the carry: the names it keeps after running, and
    whether the float tensors it adds travel int8-compressed (not from the last stage: its
    outputs are the answer, not a cut)."""

    keep: list[str]
    compress: bool = False
    last: bool = False


@dataclass(frozen=True)
class ChannelSpec:
    """The worker's end of the direct tensor channel (endpoint.py): the server's key (it
    arrives over Ray's token-guarded RPC, never on a command line), this worker's identity
    (its actor name), the largest frame it takes, and whether it forwards to a next stage."""

    key: bytes = field(repr=False)
    identity: str
    max_frame_bytes: int
    forwards: bool = False


class Worker:
    # reason: a Ray actor's constructor: each argument is what the head sends it
    def __init__(
        self,
        node: str,
        where: str,
        runtime: str,
        model: bytes | NodeFile,
        threads: int,
        stage: StageRole | None = None,
        channel: ChannelSpec | None = None,
    ):
        self.node = node
        self.where = where
        if isinstance(model, NodeFile):  # the copy `edgekit deploy` pushed to this node
            model = read_verified(model, node)
        self.runtime = open_runtime(runtime, model, threads, where)
        self.threads = threads
        #: for a stage: names the carry keeps after this stage (None: plain model, no carry)
        self.keep = set(stage.keep) if stage is not None else None
        self.compress = stage is not None and stage.compress and not stage.last
        self._in_names = [s.name for s in self.runtime.inputs]
        #: what this process computes with (kernel variant, ORT/LiteRT versions): the API
        #: shows it per node, so a node left on the numpy fallback is seen
        self.stack = stack.describe()
        self.endpoint = None
        if channel is not None:
            from edgekit.serve.endpoint import Endpoint

            run = self.run_stage if self.keep is not None else self._run_whole
            self.endpoint = Endpoint(ray.util.get_node_ip_address(), channel.key,
                                     channel.identity, run, channel.max_frame_bytes,
                                     channel.forwards)

    def describe(self) -> dict[str, Any]:
        ep = self.endpoint
        return {
            "node": self.node,
            "pid": os.getpid(),
            "threads": self.threads,
            "inputs": self.runtime.inputs,
            "outputs": self.runtime.outputs,
            "stack": self.stack,
            "channel": [*ep.address, ep.identity] if ep is not None else None,
        }

    def link(self, host: str, port: int, identity: str) -> None:
        """Send this stage's outputs to the next stage's worker (the direct channel)."""
        if self.endpoint is None:
            raise RunError(f"{self.where}: started without a tensor channel")
        self.endpoint.link(host, port, identity)

    def busy(self) -> float:
        """Seconds the channel's current request has been computing (0: idle)."""
        return self.endpoint.busy_s() if self.endpoint is not None else 0.0

    def ping(self) -> str:
        return self.node

    def memory(self) -> int:
        """Bytes available on this node now (proc/meminfo under the node's sysroot, as the
        thermal agent reads it): whether a new version's worker fits beside this one."""
        from edgekit import settings
        from edgekit.thermal._procfs import memory_mb

        return int(memory_mb(settings.sysroot())["available"].value * 1024 * 1024)

    def infer(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float, str]:
        """Run the whole model: outputs, compute milliseconds, node name."""
        try:
            out, ms = timed_run(self.runtime, feeds)
        except Exception as exc:  # any runtime failure belongs to this request only
            raise RunError(f"{self.where}: runtime failed: {exc}") from None
        return out, ms, self.node

    def _run_whole(self, feeds: dict[str, Any], ms_so_far: float) -> tuple[dict, float]:
        out, ms, _ = self.infer(feeds)
        return out, ms_so_far + ms

    def stage(self, carry: dict[str, Any], ms_so_far: float) -> tuple[dict[str, Any], float]:
        return self.run_stage(carry, ms_so_far)

    def run_stage(self, carry: dict[str, Any], ms_so_far: float) -> tuple[dict[str, Any], float]:
        """Run one pipeline stage on the carry; returns the next carry and summed compute ms."""
        feeds = {n: unpack(carry[n]) for n in self._in_names}
        try:
            out, ms = timed_run(self.runtime, feeds)
        except Exception as exc:
            raise RunError(f"{self.where}: runtime failed: {exc}") from None
        nxt = {k: v for k, v in carry.items() if self.keep is None or k in self.keep}
        for name, value in out.items():
            if self.keep is None or name in self.keep:
                nxt[name] = pack(value) if self.compress else value
        return nxt, ms_so_far + ms


@functools.cache
def remote_worker_class():
    """The Worker as a Ray actor class (one per process: Ray exports it to each cluster the
    process joins, as it does for a class decorated at import).

    max_restarts=0: a dead worker fails its calls at once (the head retries them on another
    replica) and `health.HealthMonitor` recreates it when its node is back, instead of Ray
    restarting it at a time the head cannot observe.
    """
    return ray.remote(
        num_cpus=0,
        max_restarts=0,
        max_task_retries=0,
        concurrency_groups={"health": 1, "work": 1},
    )(_GroupedWorker)


class _GroupedWorker(Worker):
    @ray.method(concurrency_group="health")
    def ping(self) -> str:
        return super().ping()

    @ray.method(concurrency_group="work")
    def describe(self) -> dict[str, Any]:
        return super().describe()

    @ray.method(concurrency_group="work")
    def infer(self, feeds):
        return super().infer(feeds)

    @ray.method(concurrency_group="work", num_returns=2)
    def stage(self, carry, ms_so_far):
        return super().stage(carry, ms_so_far)

    @ray.method(concurrency_group="work")
    def link(self, host, port, identity):
        return super().link(host, port, identity)

    @ray.method(concurrency_group="health")
    def busy(self) -> float:
        return super().busy()

    @ray.method(concurrency_group="health")
    def memory(self) -> int:
        return super().memory()
