"""Workers on the Ray cluster: placement, calls with retry on another replica.

Placement: every node advertises the custom resource `edgekit-node-<name>` (set by
`edgekit deploy`, or by the test cluster). A whole model gets one worker per node; a sharded
model gets pipelines of distinct nodes (`len(nodes) // stages` of them). Each actor asks for a
sliver of its node's resource so several models can share a node, and nothing else.

Failure: an actor or node that dies makes its calls raise; the request is retried on another
replica (inference is idempotent) and the replica leaves routing. `health.HealthMonitor`
recreates the worker once Ray lists the node again and readmits the replica when it answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from ray import exceptions as rex

from edgekit import names
from edgekit.errors import ClusterError
from edgekit.node import stack
from edgekit.serve.chanauth import new_key
from edgekit.serve.channel import ChannelLost
from edgekit.serve.deadline import DeadlineExceeded, Deadlines
from edgekit.serve.health import HealthMonitor, StageActor, actors_of
from edgekit.serve.models import ModelSpec
from edgekit.serve.nodefiles import NodeFile
from edgekit.serve.router import NoCapacity, Replica, Router, Saturated
from edgekit.serve.runtime import open_runtime
from edgekit.serve.settings import Tunables
from edgekit.serve.tensors import TensorSpec
from edgekit.serve.transport import DirectTransport, RayTransport
from edgekit.serve.worker import ChannelSpec, RunError, StageRole, remote_worker_class

log = logging.getLogger("edgekit.serve")
#: worker actor names: edgekit:<model>:<stage>:<node>:g<generation> (namespace "edgekit")
ACTOR_PREFIX = "edgekit:"


@dataclass
class ModelInfo:
    spec: ModelSpec
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    keeps: list[list[str] | None] = field(default_factory=list)

    @property
    def batchable(self) -> bool:
        return all(len(t.shape) >= 1 and t.shape[0] == -1 for t in self.inputs + self.outputs)


@dataclass
class Result:
    outputs: dict[str, np.ndarray]
    compute_ms: float
    node: str
    queue_ms: float
    attempts: int


def describe_model(spec: ModelSpec) -> ModelInfo:
    """Inputs/outputs of the whole model and, for pipelines, what each stage's carry keeps."""
    stages = [
        open_runtime(spec.runtime, s.file.read_bytes(), 1, f"{spec.name}[{s.index}]")
        for s in spec.stages
    ]
    produced: set[str] = set()
    inputs: list[TensorSpec] = []
    for rt in stages:
        inputs += [t for t in rt.inputs if t.name not in produced and t not in inputs]
        produced |= {t.name for t in rt.outputs}
    outputs = stages[-1].outputs
    keeps: list[list[str] | None] = [None]
    if spec.sharded:
        final = {t.name for t in outputs}
        keeps = [
            sorted(final | {t.name for later in stages[i + 1 :] for t in later.inputs})
            for i in range(len(stages))
        ]
    return ModelInfo(spec, inputs, outputs, keeps)


def _served_elsewhere(model: str, actor: str) -> ClusterError:
    return ClusterError(
        f"model '{model}' is already served on this Ray cluster by another edgekit serve "
        f"(its worker {actor} exists)",
        hint=f"stop that server, or serve this one under another name: --model OTHER=PATH "
             f"(not '{model}')",
    )


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


def edgekit_nodes() -> dict[str, float]:
    """Live nodes that carry an edgekit resource: name -> CPU count of that Ray node."""
    found: dict[str, float] = {}
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources", {})
        for key in res:
            node = names.resource_node(key)
            if node is not None:
                found[node] = float(res.get("CPU", 1.0))
    return found


class WorkerPool:
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
        #: request path (transport.py); the channel key lives as long as this server
        self.transport: DirectTransport | RayTransport = (
            DirectTransport(new_key(), self.t, router.mark_dead) if transport == "direct"
            else RayTransport())
        self.health = HealthMonitor(router, edgekit_nodes, self.t, transport=self.transport)
        self.deadlines = Deadlines(self.t)  # per-model deadlines: `deadlines.fixed`
        self._probes: set[asyncio.Task] = set()

    # --- placement ---------------------------------------------------------------------
    def place(self, specs: list[ModelSpec], nodes: list[str] | None) -> None:
        live = edgekit_nodes()
        if not live:
            raise ClusterError(
                f"no Ray node carries an '{names.node_resource('<name>')}' resource",
                hint="start workers with ray start --resources or edgekit deploy",
            )
        chosen = sorted(live) if not nodes else list(nodes)
        missing = [n for n in chosen if n not in live]
        if missing:
            raise ClusterError(
                f"nodes not in the Ray cluster: {', '.join(missing)}",
                hint=f"live edgekit nodes: {', '.join(sorted(live))}",
            )
        self._check_names_free(specs)
        for spec in specs:
            info = describe_model(spec)
            self.models[spec.name] = info
            k = len(spec.stages)
            if k > len(chosen):
                raise ClusterError(
                    f"model '{spec.name}' has {k} stages but only {len(chosen)} nodes",
                    where=spec.name,
                )
            blobs = [
                NodeFile(spec.name, s.relpath or s.file.name, s.sha256) if self.node_bundles
                else ray.put(s.file.read_bytes())
                for s in spec.stages
            ]
            for p in range(len(chosen) // k):
                group = tuple(chosen[p * k : (p + 1) * k])
                stages = []
                for stage, node in zip(spec.stages, group, strict=True):
                    make = self._maker(spec, info, stage.index, node, blobs[stage.index],
                                       live[node])
                    try:
                        stages.append(StageActor(node, make, make(0)))
                    except rex.ActorAlreadyExistsError as exc:  # started since the check
                        raise _served_elsewhere(spec.name, str(exc)[:120]) from None
                self.router.add(Replica(spec.name, group, stages, self.max_queue))

    def _check_names_free(self, specs: list[ModelSpec]) -> None:
        """Refuse a model that another `edgekit serve` runs on this Ray cluster (its workers'
        names are taken). A server that just died frees them within a moment: wait a little."""
        deadline = time.monotonic() + self.t.name_wait_s
        while True:
            names = ray.util.list_named_actors()
            held = [(s.name, n) for s in specs for n in names
                    if n.startswith(f"{ACTOR_PREFIX}{s.name}:")]
            if not held:
                return
            if time.monotonic() > deadline:
                raise _served_elsewhere(*held[0])
            time.sleep(0.5)

    def _maker(self, spec, info, index, node, blob, cpus):
        """A function generation -> new worker actor for this stage on this node."""
        threads = self.threads or max(1, int(cpus))
        where = f"{spec.name}[{index}]@{node}" if spec.sharded else f"{spec.name}@{node}"
        last = index == len(spec.stages) - 1
        role = StageRole(info.keeps[index], self.compress, last) if spec.sharded else None
        cls = remote_worker_class()
        direct = isinstance(self.transport, DirectTransport)

        def make(generation: int):
            name = f"{ACTOR_PREFIX}{spec.name}:{index}:{node}:g{generation}"
            channel = ChannelSpec(self.transport.key, name, self.t.channel_max_frame_bytes,
                                  not last) if direct else None
            return cls.options(
                resources={names.node_resource(node): self.t.resource_sliver}, name=name,
            ).remote(node, where, spec.runtime, blob, threads, role, channel)

        return make

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Wait until every worker answers (its model loaded); raises ClusterError if not."""
        timeout_s = timeout_s or self.t.worker_start_timeout_s
        actors = [s for r in self.router.replicas for s in actors_of(r)]
        try:
            found = await asyncio.wait_for(
                asyncio.gather(*[s.actor.describe.remote() for s in actors]), timeout_s
            )
        except TimeoutError as exc:
            raise ClusterError(f"workers did not load their models within {timeout_s} s") from exc
        except rex.RayError as exc:
            raise ClusterError(f"workers did not start: {exc}") from exc
        for s, info in zip(actors, found, strict=True):
            s.described(info)
        try:
            await asyncio.wait_for(asyncio.gather(
                *[self.transport.attach(r) for r in self.router.replicas]), timeout_s)
        except (OSError, TimeoutError, rex.RayError) as exc:
            raise ClusterError(f"cannot open the tensor channels to the workers: "
                               f"{type(exc).__name__}: {exc}",
                               hint="a firewall between head and nodes? (docs/SERVING.md)") from exc
        for node, st in self.stacks().items():
            if stack.warning(st):  # never silent: the API's log says it too
                log.warning("worker on %s: %s", node, stack.warning(st))

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
                if attempts == 0:
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
            return Result(out, ms, node, queue_ms, attempts)

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
                "nodes": list(r.nodes),
                "alive": r.alive,
                "generations": [s.generation for s in actors_of(r)],
                "outstanding": r.outstanding,
                "peak_outstanding": r.peak_outstanding,
                "max_queue": r.max_queue,
            }
            for r in self.router.replicas
        ]
