"""Placement: which node runs which model stage. Pure: plain data in, plain data out.

Whole-model replicas go on every fit node (fastest first) when the model fits one node.
A bundle with K > 1 stages (or a model that fits no single node, or `--stages K`) becomes
pipelines of K distinct nodes; spare nodes form extra pipelines when there are K of them.
The result is an ordered node list: consecutive groups of K nodes form one pipeline, which
is how the serving layer (edgekit.serve.pool) groups `--nodes`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.errors import ModelError

MB = 1024 * 1024


@dataclass(frozen=True)
class NodeCapacity:
    name: str
    ram_bytes: int  # memory available to models (after the Ray worker's own share)
    speed: float = 1.0
    cores: int = 1


@dataclass
class Plan:
    mode: str  # "replicas" or "pipeline"
    stages: int
    groups: list[list[str]]  # one entry per replica; stage i of a group runs on group[i]
    stage_mem_bytes: list[int]
    unused: dict[str, str] = field(default_factory=dict)  # node -> why it gets nothing

    @property
    def nodes(self) -> list[str]:
        return [n for g in self.groups for n in g]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "nodes": self.nodes}

    def describe(self) -> list[str]:
        lines = []
        for i, g in enumerate(self.groups):
            if self.mode == "replicas":
                lines.append(f"replica {i + 1}: {g[0]}")
            else:
                parts = [f"stage {s} on {n} ({self.stage_mem_bytes[s] // MB} MB)"
                         for s, n in enumerate(g)]
                lines.append(f"pipeline {i + 1}: " + ", ".join(parts))
        lines += [f"{n}: unused ({why})" for n, why in self.unused.items()]
        return lines


def _order(nodes: list[NodeCapacity]) -> list[NodeCapacity]:
    return sorted(nodes, key=lambda n: (-n.speed, -n.ram_bytes, n.name))


def plan(stage_mem_bytes: list[int], nodes: list[NodeCapacity], *,
         replicas: int | None = None, model: str = "model") -> Plan:
    """Place a model whose stages need `stage_mem_bytes` (one entry: a whole model)."""
    if not nodes:
        raise ModelError("no fit node to place the model on", where=model)
    k = len(stage_mem_bytes)
    if k == 1:
        return _replicas(stage_mem_bytes[0], nodes, replicas, model)
    return _pipelines(stage_mem_bytes, nodes, replicas, model)


def _replicas(need: int, nodes: list[NodeCapacity], limit: int | None, model: str) -> Plan:
    fit = [n for n in _order(nodes) if n.ram_bytes >= need]
    unused = {n.name: f"needs {need // MB} MB, has {n.ram_bytes // MB} MB"
              for n in nodes if n.ram_bytes < need}
    if not fit:
        biggest = max(nodes, key=lambda n: n.ram_bytes)
        raise ModelError(
            f"the model needs {need // MB} MB but the largest node ({biggest.name}) has "
            f"{biggest.ram_bytes // MB} MB for models",
            where=model,
            hint="split it into a pipeline: `edgekit bundle MODEL --stages K`, then deploy "
                 "the bundle",
        )
    chosen = fit[:limit] if limit else fit
    for n in fit[len(chosen):]:
        unused[n.name] = f"--replicas {limit}"
    return Plan("replicas", 1, [[n.name] for n in chosen], [need], unused)


def _pipelines(mems: list[int], nodes: list[NodeCapacity], limit: int | None,
               model: str) -> Plan:
    k = len(mems)
    if k > len(nodes):
        raise ModelError(f"the bundle has {k} stages but only {len(nodes)} fit nodes",
                         where=model, hint=f"add nodes or re-bundle with --stages {len(nodes)}")
    free = _order(nodes)
    groups: list[list[str]] = []
    # stages sorted by need, largest first, each takes the smallest free node that holds it:
    # big boards stay free for the big stages of the next pipeline
    by_need = sorted(range(k), key=lambda s: -mems[s])
    while len(free) >= k and (limit is None or len(groups) < limit):
        pool = sorted(free, key=lambda n: (n.ram_bytes, -n.speed, n.name))
        group: dict[int, NodeCapacity] = {}
        for s in by_need:
            pick = next((n for n in pool if n.ram_bytes >= mems[s]), None)
            if pick is None:
                break
            group[s] = pick
            pool.remove(pick)
        if len(group) < k:
            break
        groups.append([group[s].name for s in range(k)])
        free = [n for n in free if n.name not in groups[-1]]
    if not groups:
        worst = max(range(k), key=lambda s: mems[s])
        biggest = max(nodes, key=lambda n: n.ram_bytes)
        raise ModelError(
            f"stage {worst} needs {mems[worst] // MB} MB; the largest node ({biggest.name}) "
            f"has {biggest.ram_bytes // MB} MB for models",
            where=model, hint="re-bundle with more stages",
        )
    unused = {n.name: f"not enough spare nodes for another {k}-stage pipeline" for n in free}
    return Plan("pipeline", k, groups, list(mems), unused)


def auto_stages(model_mem_bytes: int, nodes: list[NodeCapacity]) -> int:
    """Stages needed so that an even split fits the largest nodes (1 if it fits one)."""
    rams = sorted((n.ram_bytes for n in nodes), reverse=True)
    for k in range(1, len(rams) + 1):
        if model_mem_bytes / k <= rams[k - 1]:
            return k
    raise ModelError(
        f"the model needs {model_mem_bytes // MB} MB; all {len(rams)} nodes together have "
        f"{sum(rams) // MB} MB for models", where="plan",
    )
