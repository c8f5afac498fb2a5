"""`edgekit shard` end to end: probe, cost, partition, extract, validate (nothing written)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import onnx

from edgekit.errors import ModelError
from edgekit.model import balance, partition, profile, shard
from edgekit.model.macs import node_costs
from edgekit.model.shapes import concrete_shapes

Feeds = shard.Feeds


@dataclass
class StagePlan:
    index: int
    nodes: int
    first_node: str
    last_node: str
    inputs: list[shard.TensorInfo]
    outputs: list[shard.TensorInfo]
    mem_bytes: int
    predicted_ms: float  # compute + sending its outputs over the link
    compute_ms: float
    transfer_ms: float


@dataclass
class ShardResult:
    stages: list[StagePlan]
    models: list[onnx.ModelProto] = field(repr=False)
    cost_source: str  # "profile" or "macs"
    link_bytes_per_s: float
    balance_ratio: float
    slowest_ms: float
    naive_balance_ratio: float
    naive_slowest_ms: float
    validation: shard.Validation
    whole_ms: float | None = None
    bound_ms: float = 0.0  # no split can make the slowest stage faster than this
    largest_node: str = ""  # the most expensive single (indivisible) node ...
    largest_node_ms: float = 0.0  # ... and its time
    problem: partition.Problem | None = field(default=None, repr=False)
    overlap: bool = False  # stage cost max(compute, send) instead of compute + send


def node_times(model: onnx.ModelProto, feed: Feeds) -> profile.NodeTimes:
    """Per-node times (ORT's profiler) of ``model`` as :func:`shard_model` orders its nodes."""
    prep = shard.prepare(model, feed)
    return profile.measure(prep.model, feed)


@dataclass(frozen=True)
class Targets:
    """The pipeline a model is split for: ``k`` stages, each stage node's speed factor and
    memory cap (one per stage; None: all 1.0 / unlimited), the link between the nodes, and
    whether a stage sends while it computes the next request (``overlap``)."""

    k: int
    speeds: Sequence[float] | None = None
    mem_caps: Sequence[float] | None = None
    link_bytes_per_s: float = 125e6
    overlap: bool = False


def shard_model(
    model: onnx.ModelProto,
    targets: Targets,
    samples: Sequence[Feeds],
    *,
    measure: bool = True,
    times: profile.NodeTimes | None = None,
    tolerance: float = 1e-5,
) -> ShardResult:
    """Split ``model`` into ``targets.k`` validated stages. ``samples[0]`` drives
    probing/profiling; ``times`` (from :func:`node_times`) reuses one measurement across
    several plans; without it, ``measure`` profiles the model, else MACs estimate it."""
    t, k = targets, targets.k
    prep = shard.prepare(model, samples[0])
    times = _times(prep, samples[0], measure, times)
    prob = shard.problem(prep, times.ms)
    plan = partition.solve(prob, k, speeds=t.speeds, mem_caps=t.mem_caps,
                           link_bytes_per_s=t.link_bytes_per_s, overlap=t.overlap)
    naive = partition.evaluate(prob, partition.naive_bounds(prob.n, k), t.speeds or [1.0] * k,
                               t.link_bytes_per_s, t.overlap)
    models = [shard.extract_stage(prep, st.start, st.end, f"stage_{idx}")
              for idx, st in enumerate(plan.stages)]
    check = shard.validate(prep.model, models, samples, tolerance)
    bound = balance.lower_bound_ms(prob, k, t.speeds)
    return ShardResult(
        stages=[_stage_plan(prep, idx, st) for idx, st in enumerate(plan.stages)],
        models=models,
        cost_source=times.source,
        link_bytes_per_s=t.link_bytes_per_s,
        balance_ratio=plan.balance,
        slowest_ms=plan.slowest_ms,
        naive_balance_ratio=naive.balance,
        naive_slowest_ms=naive.slowest_ms,
        validation=check,
        whole_ms=times.whole_ms,
        bound_ms=bound.slowest_ms,
        largest_node=prep.nodes[bound.largest_node].name,
        largest_node_ms=bound.largest_node_ms,
        problem=prob,
        overlap=t.overlap,
    )


def _times(prep: shard.Prepared, feed: Feeds, measure: bool,
           times: profile.NodeTimes | None) -> profile.NodeTimes:
    """The node times to plan with: given, profiled, or estimated from MACs."""
    if times is not None:
        if len(times.ms) != len(prep.model.graph.node):
            raise ModelError(f"{len(times.ms)} node times for {len(prep.model.graph.node)} nodes")
        return times
    if measure:
        return profile.measure(prep.model, feed)
    shapes = {i: list(v.shape) for i, v in feed.items()}
    return profile.from_macs(node_costs(prep.model.graph, concrete_shapes(prep.model, shapes)))


def _stage_plan(prep: shard.Prepared, idx: int, st: partition.Stage) -> StagePlan:
    ins, outs = shard.stage_io(prep, st.start, st.end)
    nodes = prep.nodes[st.start : st.end]
    return StagePlan(
        index=idx,
        nodes=len(nodes),
        first_node=nodes[0].name,
        last_node=nodes[-1].name,
        inputs=[shard.tensor_info(prep, t) for t in ins],
        outputs=[shard.tensor_info(prep, t) for t in outs],
        mem_bytes=st.mem_bytes,
        predicted_ms=st.cost_ms,
        compute_ms=st.compute_ms,
        transfer_ms=st.transfer_ms,
    )
