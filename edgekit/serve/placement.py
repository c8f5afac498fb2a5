"""Placing workers on the Ray cluster's nodes, and waiting for them to load their models.

Every node advertises the custom resource `edgekit-node-<name>` (set by `edgekit deploy`, or
by the test cluster). A whole model gets one worker per node; a sharded model gets pipelines
of distinct nodes (`len(nodes) // stages` of them). Each actor asks for a sliver of its node's
resource so several models can share a node, and nothing else.

A shelf is never all up: a named node that is not in the Ray cluster yet gets its replicas
all the same, out of routing, with no worker; `health.HealthMonitor` creates the worker when
Ray lists the node, as it recreates one after a death. Serving starts once `min_nodes` named
nodes are live; readiness says `degraded` and names what is missing until the rest join.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import ray
from ray import exceptions as rex

from edgekit import names
from edgekit.errors import ClusterError
from edgekit.node import stack
from edgekit.serve.health import StageActor, actors_of
from edgekit.serve.models import ModelSpec
from edgekit.serve.nodefiles import NodeFile
from edgekit.serve.router import Replica, Router
from edgekit.serve.runtime import open_runtime
from edgekit.serve.settings import Tunables
from edgekit.serve.tensors import TensorSpec
from edgekit.serve.worker import ChannelSpec, StageRole, remote_worker_class

log = logging.getLogger("edgekit.serve")
#: worker actor names: edgekit:<model>:<stage>:<node>:g<generation> (namespace "edgekit")
ACTOR_PREFIX = "edgekit:"


class PoolView(Protocol):
    """What placement reads and fills of `pool.WorkerPool` (which imports this module)."""

    router: Router
    t: Tunables
    models: dict[str, ModelInfo]
    order: dict[str, list[str]]  # model -> the nodes it is placed on, in order
    node_bundles: bool
    max_queue: int
    compress: bool
    threads: int | None
    transport: Any

    def stacks(self) -> dict[str, dict[str, Any]]: ...


@dataclass
class ModelInfo:
    spec: ModelSpec
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    keeps: list[list[str] | None] = field(default_factory=list)

    @property
    def batchable(self) -> bool:
        return all(len(t.shape) >= 1 and t.shape[0] == -1 for t in self.inputs + self.outputs)


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


def _served_elsewhere(model: str, actor: str) -> ClusterError:
    return ClusterError(
        f"model '{model}' is already served on this Ray cluster by another edgekit serve "
        f"(its worker {actor} exists)",
        hint=f"stop that server, or serve this one under another name: --model OTHER=PATH "
             f"(not '{model}')",
    )


def choose_nodes(nodes: list[str] | None, live: dict[str, float], min_nodes: int) -> list[str]:
    """The nodes to place on: the named ones (live or not, once `min_nodes` of them are
    live), or every live edgekit node."""
    if not live:
        raise ClusterError(
            f"no Ray node carries an '{names.node_resource('<name>')}' resource",
            hint="start workers with ray start --resources or edgekit deploy",
        )
    chosen = sorted(live) if not nodes else list(nodes)
    up = [n for n in chosen if n in live]
    if len(up) < min(max(1, min_nodes), len(chosen)):
        missing = [n for n in chosen if n not in live]
        raise ClusterError(
            f"only {len(up)} of {len(chosen)} nodes are in the Ray cluster (at least "
            f"{max(1, min_nodes)} wanted); missing: {', '.join(missing)}",
            hint=f"live edgekit nodes: {', '.join(sorted(live)) or 'none'}",
        )
    missing = [n for n in chosen if n not in live]
    if missing:
        log.warning("nodes not in the Ray cluster yet: %s; serving on %s, the others join "
                    "when they come up", ", ".join(missing), ", ".join(up))
    return chosen


def wait_for_a_node(wait_s: float, poll_s: float = 1.0) -> dict[str, float]:
    """The live edgekit nodes, once there is one or after `wait_s`. A deploy starts the API
    while its nodes' Ray is still joining (an emulated aarch64 board takes 20-45 s): without
    the wait the API exited ("no Ray node carries...") and its supervisor restarted it until
    one had joined. A cluster with some edgekit nodes is not waited for (`--min-nodes` is
    checked at once); `edgekit serve` by hand is probed before it gets here (preflight.py)."""
    deadline = time.monotonic() + wait_s
    live = edgekit_nodes()
    while not live and time.monotonic() < deadline:
        time.sleep(poll_s)
        live = edgekit_nodes()
    return live


def place(pool: PoolView, specs: list[ModelSpec], nodes: list[str] | None,
          min_nodes: int = 1) -> None:
    live = wait_for_a_node(pool.t.join_wait_s)
    chosen = choose_nodes(nodes, live, min_nodes)
    check_names_free(specs, pool.t.name_wait_s)
    for spec in specs:
        info = describe_model(spec)
        pool.models[spec.name] = info
        pool.order[spec.name] = chosen
        for replica in replicas_for(pool, spec, info, groups_of(spec, chosen), live):
            pool.router.add(replica)
            absent = [s.node for s in actors_of(replica) if s.dead]
            if absent:
                pool.router.mark_dead(replica, f"{', '.join(absent)} not in the Ray cluster")


def groups_of(spec: ModelSpec, chosen: list[str]) -> list[tuple[str, ...]]:
    """The node groups a model is placed on: one node per replica of a whole model, K
    distinct nodes per pipeline of K stages (the nodes in order)."""
    k = len(spec.stages)
    if k > len(chosen):
        raise ClusterError(f"model '{spec.name}' has {k} stages but only {len(chosen)} nodes",
                           where=spec.name)
    return [tuple(chosen[p * k : (p + 1) * k]) for p in range(len(chosen) // k)]


def replicas_for(pool: PoolView, spec: ModelSpec, info: ModelInfo,
                 groups: list[tuple[str, ...]], live: dict[str, float] | Any,
                 tag: str = "") -> list[Replica]:
    """One replica per group, its workers created on the nodes in `live` (the others wait
    for health to create them). `tag` makes the actor names of a rolling update's new
    version differ from the old version's still running beside them."""
    blobs = [
        # a worker of a known version reads its own folder, never `current` (nodefiles.py)
        NodeFile(spec.name, s.relpath or s.file.name, s.sha256,
                 spec.version if s.sha256 else "") if pool.node_bundles
        else ray.put(s.file.read_bytes())
        for s in spec.stages
    ]
    out = []
    for group in groups:
        stages = [_stage(spec.name, node, _maker(pool, spec, info, i, node, blobs[i], tag),
                         node in live) for i, node in enumerate(group)]
        out.append(Replica(spec.name, group, stages, pool.max_queue, version=spec.version))
    return out


def _stage(model: str, node: str, make: Any, live: bool) -> StageActor:
    if not live:  # health makes its worker (generation 0) when Ray lists the node
        return StageActor(node, make, None, generation=-1, dead=True, answering=False)
    try:
        return StageActor(node, make, make(0))
    except rex.ActorAlreadyExistsError as exc:  # started since the check
        raise _served_elsewhere(model, str(exc)[:120]) from None


def check_names_free(specs: list[ModelSpec], wait_s: float) -> None:
    """Refuse a model that another `edgekit serve` runs on this Ray cluster (its workers'
    names are taken). A server that just died frees them within a moment: wait a little."""
    deadline = time.monotonic() + wait_s
    while True:
        taken = ray.util.list_named_actors()
        held = [(s.name, n) for s in specs for n in taken
                if n.startswith(f"{ACTOR_PREFIX}{s.name}:")]
        if not held:
            return
        if time.monotonic() > deadline:
            raise _served_elsewhere(*held[0])
        time.sleep(0.5)


# reason: a worker's identity is model, stage, node, version tag; the rest is what it loads
def _maker(pool: PoolView, spec: ModelSpec, info: ModelInfo, index: int, node: str,
           blob: Any, tag: str = ""):
    """A function generation -> new worker actor for this stage on this node."""
    where = f"{spec.name}[{index}]@{node}" if spec.sharded else f"{spec.name}@{node}"
    last = index == len(spec.stages) - 1
    role = StageRole(info.keeps[index], pool.compress, last) if spec.sharded else None
    cls = remote_worker_class()
    key = getattr(pool.transport, "key", None)  # the direct channel's; None: Ray calls

    def make(generation: int):
        name = f"{ACTOR_PREFIX}{spec.name}:{index}:{node}:{tag}g{generation}"
        channel = ChannelSpec(key, name, pool.t.channel_max_frame_bytes,
                              not last) if key is not None else None
        # the node's CPUs as Ray sees them now (a node that joined late was unknown before)
        threads = pool.threads or max(1, int(edgekit_nodes().get(node, 1.0)))
        return cls.options(
            resources={names.node_resource(node): pool.t.resource_sliver}, name=name,
        ).remote(node, where, spec.runtime, blob, threads, role, channel)

    return make


async def wait_ready(pool: PoolView, timeout_s: float) -> None:
    """Wait until every placed worker answers (its model loaded) and its channel is open;
    raises ClusterError if not. Replicas waiting for a node are left to health."""
    actors = [s for r in pool.router.replicas for s in actors_of(r) if not s.dead]
    try:
        found = await asyncio.wait_for(
            asyncio.gather(*[s.actor.describe.remote() for s in actors]), timeout_s)
    except TimeoutError as exc:
        raise ClusterError(f"workers did not load their models within {timeout_s} s") from exc
    except rex.RayError as exc:
        raise ClusterError(f"workers did not start: {exc}") from exc
    for s, info in zip(actors, found, strict=True):
        s.described(info)
    whole = [r for r in pool.router.replicas if r.alive]
    try:
        await asyncio.wait_for(asyncio.gather(*[pool.transport.attach(r) for r in whole]),
                               timeout_s)
    except (OSError, TimeoutError, rex.RayError) as exc:
        raise ClusterError(f"cannot open the tensor channels to the workers: "
                           f"{type(exc).__name__}: {exc}",
                           hint="a firewall between head and nodes? (docs/SERVING.md)") from exc
    for node, st in pool.stacks().items():
        if stack.warning(st):  # never silent: the API's log says it too
            log.warning("worker on %s: %s", node, stack.warning(st))
