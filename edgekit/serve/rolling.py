"""Rolling model updates without restarting the API (issue 16): Triton's repository extension,
`POST /v2/repository/models/{model}/load` (api.py), hands a new version of a served model to
`Roller.load`, which moves the traffic node by node while the API keeps answering.

Per replica (one node, or one pipeline group), in the order the model was placed:
- **beside**: when every node of the group has the memory (rollcheck.stage_need: the stage's
  planned memory x 1.5 + a worker process, against what the node reports free), the new
  version's workers start next to the old ones (they read versions/<v> on the node, so both
  coexist), load, get channels, pass the self-test (rollcheck.selftest), and then the router
  swaps the two replicas in one step; the old one finishes its requests and is stopped.
- **replaced**: otherwise the old replica leaves routing first (the other replicas serve),
  finishes its requests and is stopped, then the new one starts there. If it fails, the
  old version is put back (health recreates its workers from their own version folder).
While an update runs, a request that finds no replica free waits for one instead of being
refused (pool.WorkerPool.infer), so even a one-node model loses no request to the update.

Pipelines: an unchanged group layout rolls group by group as above. A changed layout (another
stage count), or changed inputs/outputs (old and new replicas could not serve side by side),
brings every new group up beside the old ones when the memory allows and switches the router
in one step; otherwise (said in the report's `note`) old groups are stopped as the new groups
that overlap them start, the others serving meanwhile.

A worker that fails to load: its constructor's real error (health.load_error), in the log and
in /edgekit/status `load_errors`; the node keeps serving the old version; the report names it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.serve import rollcheck
from edgekit.serve.health import actors_of, load_error
from edgekit.serve.models import ModelSpec, load_model_spec
from edgekit.serve.placement import (
    ModelInfo,
    describe_model,
    edgekit_nodes,
    groups_of,
    replicas_for,
)
from edgekit.serve.pool import WorkerPool
from edgekit.serve.router import Replica

log = logging.getLogger("edgekit.serve")
MODES = ("auto", "beside", "replace")


class LoadRefused(Exception):
    """The load request itself is wrong (unknown model, bad bundle): nothing was touched."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class NodeLoad:
    ok: bool = False
    how: str = ""  # "beside", "replaced", "unchanged"
    error: str = ""
    seconds: float = 0.0


@dataclass
class LoadReport:
    model: str
    version: str
    previous: str
    note: str = ""
    nodes: dict[str, NodeLoad] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return any(n.ok for n in self.nodes.values())

    def failures(self) -> str:
        return "; ".join(f"{n}: {r.error}" for n, r in self.nodes.items()
                         if not r.ok and r.how != "kept")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "previous": self.previous,
                "note": self.note, "nodes": {n: asdict(r) for n, r in self.nodes.items()}}


class Roller:
    """One update at a time per server; `on_switch(model, info)` lets the server follow a
    new version's inputs/outputs (body limits)."""

    def __init__(self, pool: WorkerPool, on_switch: Any = None):
        self.pool = pool
        self.on_switch = on_switch
        self.reports: dict[str, dict[str, Any]] = {}  # model -> its last update (status)
        self._lock = asyncio.Lock()
        self.round = 0  # one per update: the new workers' names differ from any before

    async def load(self, model: str, source: Path | None, version: str | None,
                   mode: str = "auto", only: list[str] | None = None) -> LoadReport:
        """Roll `model` to the bundle at `source`; `only`: the nodes to roll (deploy readied
        the new version there; the others keep serving the version they have)."""
        if model not in self.pool.models:
            raise LoadRefused(f"unknown model '{model}'; serving {sorted(self.pool.models)} "
                              "(models come from the command line)", 404)
        if mode not in MODES:
            raise LoadRefused(f"parameter 'mode' must be one of {', '.join(MODES)}")
        placed = set(self.pool.order[model])
        if only is not None and not set(only) <= placed:
            raise LoadRefused(f"parameter 'nodes': {sorted(set(only) - placed)} do not serve "
                              f"{model} here (it is placed on {sorted(placed)})")
        async with self._lock:
            old = self.pool.models[model]
            spec = await self._spec(model, source or old.spec.source, version, old.spec)
            olds = [r for r in self.pool.router.replicas if r.model == model]
            report = LoadReport(model, spec.version, old.spec.version)
            if spec.version == old.spec.version and all(r.version == spec.version
                                                        for r in olds):
                report.nodes = {n: NodeLoad(True, "unchanged") for r in olds for n in r.nodes}
                return report
            try:
                groups_of(spec, self.pool.order[model])
            except EdgekitError as exc:
                raise LoadRefused(str(exc)) from None
            loop = asyncio.get_running_loop()
            info = await loop.run_in_executor(None, describe_model, spec)
            ref = await self._reference(spec, info, report)
            self.round += 1
            self.pool.updating.add(model)
            log.warning("rolling update of %s: %s -> %s", model, old.spec.version, spec.version)
            try:
                await self._roll_all(_Step(self, spec, info, ref, report,
                                           placed if only is None else set(only)), olds, mode)
            finally:
                self.pool.updating.discard(model)
            self.reports[model] = {**report.to_dict(), "t": round(time.time(), 1)}
            log.warning("rolling update of %s to %s: %s", model, spec.version,
                        ", ".join(f"{n} {r.how or 'failed'}" for n, r in report.nodes.items()))
            return report

    async def _spec(self, model: str, source: Path, version: str | None,
                    old: ModelSpec) -> ModelSpec:
        loop = asyncio.get_running_loop()
        try:
            spec = await loop.run_in_executor(None, load_model_spec, model, source)
        except EdgekitError as exc:
            raise LoadRefused(f"cannot load {model} from {source}: {exc}") from None
        if version and not spec.has_version(version):
            raise LoadRefused(f"{source} holds version {spec.version} of {model}, not {version}")
        if spec.runtime != old.runtime:
            raise LoadRefused(f"{source} is a {spec.runtime} model; {model} is served with "
                              f"{old.runtime} (restart the API to change runtimes)")
        spec.max_batch, spec.max_wait_ms = old.max_batch, old.max_wait_ms
        return spec

    async def _reference(self, spec: ModelSpec, info: ModelInfo,
                         report: LoadReport) -> rollcheck.Reference | None:
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, rollcheck.reference, spec, info)
        except Exception as exc:  # e.g. a tensor type without self-test data: said, not fatal
            report.note = f"no self-test of the new workers ({type(exc).__name__}: {exc})"
            return None

    # --- the plan ---------------------------------------------------------------------------
    async def _roll_all(self, step: _Step, olds: list[Replica], mode: str) -> None:
        spec, info, report = step.spec, step.info, step.report
        groups = groups_of(spec, self.pool.order[spec.name])
        by_nodes = {r.nodes: r for r in olds}
        old_info = self.pool.models[spec.name]
        same_io = (info.inputs, info.outputs) == (old_info.inputs, old_info.outputs)
        if same_io and set(by_nodes) == set(groups):
            for g in groups:
                if not set(g) <= step.only:  # not readied for the new version: keeps its own
                    step.kept(by_nodes[g])
                elif by_nodes[g].version == spec.version:  # a retry after a partial update
                    step.done(g, "unchanged", time.monotonic())
                elif not await step.pending(by_nodes[g], g):
                    await step.roll([by_nodes[g]], g, await self._beside(mode, spec, [g]))
            return
        why = ("the inputs/outputs changed" if not same_io else
               f"the layout changed ({len(olds)} x {len(olds[0].nodes) if olds else 0} nodes "
               f"-> {len(groups)} x {len(spec.stages)})")
        left = sorted({n for g in groups for n in g} - step.only)
        if left:  # the old version cannot stay on some nodes while the layout changes
            raise LoadRefused(f"{why}: every node must take the new version at once, and "
                              f"{', '.join(left)} {'is' if len(left) == 1 else 'are'} not "
                              "in this update", 409)
        if await self._beside(mode, spec, groups):
            report.note = f"{why}: every new group started beside the old, then one switch"
            await step.all_at_once(olds, groups)
            return
        report.note = (f"{why}, and not every node has the memory for both versions (or mode "
                       f"replace): old groups stop as the new groups over their nodes start")
        if not same_io:  # old and new cannot serve side by side: requests wait meanwhile
            report.note += "; all old groups stop first (requests wait for the new ones)"
            await step.retire(olds, "inputs/outputs change")
            olds = []
        await step.overlapping(olds, groups)

    async def _beside(self, mode: str, spec: ModelSpec, groups: list[tuple[str, ...]]) -> bool:
        """Whether the new workers of `groups` go beside the old ones (module doc)."""
        if mode != "auto":
            return mode == "beside"
        need: dict[str, int] = {}
        for g in groups:
            for i, node in enumerate(g):
                need[node] = need.get(node, 0) + rollcheck.stage_need(spec, i)
        for node, bytes_needed in need.items():
            free = await rollcheck.free_memory(self.pool.router.replicas, node,
                                               self.pool.t.ping_timeout_s)
            if free is None or free < bytes_needed:
                log.warning("%s: %s MB free, %d MB needed beside the old version: replacing "
                            "in place", node, "?" if free is None else free >> 20,
                            bytes_needed >> 20)
                return False
        return True

    def switch(self, model: str, info: ModelInfo, old: list[Replica], new: list[Replica],
               reason: str) -> None:
        self.pool.router.swap(old, new, reason)
        if new and self.pool.models[model] is not info:
            self.pool.models[model] = info
            if self.on_switch is not None:
                self.on_switch(model, info)


@dataclass
class _Step:
    """The moves of one update: start a group, swap, retire, restore."""

    roller: Roller
    spec: ModelSpec
    info: ModelInfo
    ref: rollcheck.Reference | None
    report: LoadReport
    only: set[str]  # the nodes this update rolls (the others keep their version)

    @property
    def pool(self) -> WorkerPool:
        return self.roller.pool

    async def roll(self, olds: list[Replica], g: tuple[str, ...], beside: bool) -> None:
        t0, label = time.monotonic(), "+".join(g)
        if not beside:
            await self.retire(olds, f"replacing {self.spec.name} on {label}")
        new = await self.start(g)
        if new is None:
            if not beside:
                self.restore(olds)
            return
        self.roller.switch(self.spec.name, self.info, olds if beside else [], [new],
                           f"{self.spec.name} {self.spec.version} on {label}")
        if beside:
            await self.retire(olds, "")
        self.done(g, "beside" if beside else "replaced", t0)

    async def all_at_once(self, olds: list[Replica], groups: list[tuple[str, ...]]) -> None:
        t0, news = time.monotonic(), []
        for g in groups:
            new = await self.start(g)
            if new is None:  # all or nothing: the old layout keeps serving
                for r in news:
                    self.pool.drop(r)
                for n in (n for g2 in groups for n in g2 if g2 != g):
                    self.report.nodes.setdefault(n, NodeLoad(False, "", "not switched: "
                                                             f"group {'+'.join(g)} failed"))
                return
            news.append(new)
        self.roller.switch(self.spec.name, self.info, olds, news,
                           f"{self.spec.name} {self.spec.version}: new layout")
        await self.retire(olds, "")
        for g in groups:
            self.done(g, "beside", t0)

    async def overlapping(self, olds: list[Replica], groups: list[tuple[str, ...]]) -> None:
        """Each new group in turn replaces the old groups over its nodes (a failed one puts
        them back); old groups over no new group go once the new version serves."""
        left = list(olds)
        for g in groups:
            over = [r for r in left if set(r.nodes) & set(g)]
            left = [r for r in left if r not in over]
            await self.roll(over, g, beside=False)
        if any(r.model == self.spec.name and r.version == self.spec.version
               for r in self.pool.router.replicas):
            await self.retire(left, f"{self.spec.name}: not in the new layout")

    async def pending(self, old: Replica, g: tuple[str, ...]) -> bool:
        """A group with a node not in the Ray cluster now: its new replica goes in without
        workers (health creates them, of the new version, when the node joins), replacing
        the old one. False when every node is there."""
        live = await asyncio.get_running_loop().run_in_executor(None, edgekit_nodes)
        absent = [n for n in g if n not in live]
        if not absent:
            return False
        [new] = await asyncio.get_running_loop().run_in_executor(
            None, replicas_for, self.pool, self.spec, self.info, [g], {},
            f"r{self.roller.round}:")
        await self.retire([old], f"{'+'.join(g)}: {', '.join(absent)} not in the Ray cluster")
        self.roller.switch(self.spec.name, self.info, [], [new], "waits for its nodes")
        self.pool.router.mark_dead(new, f"{', '.join(absent)} not in the Ray cluster")
        for n in g:
            self.report.nodes[n] = NodeLoad(False, "pending", f"{', '.join(absent)} not in "
                                            "the Ray cluster: the new version starts there "
                                            "when it joins")
        return True

    def done(self, g: tuple[str, ...], how: str, t0: float) -> None:
        for n in g:
            self.report.nodes[n] = NodeLoad(True, how, "", round(time.monotonic() - t0, 2))

    def kept(self, old: Replica) -> None:
        for n in old.nodes:
            self.report.nodes[n] = NodeLoad(False, "kept", f"kept {old.version}: not part of "
                                                           "this update")

    def failed(self, g: tuple[str, ...], errors: dict[str, str]) -> None:
        first = next(iter(errors.items()))
        for n in g:
            why = errors.get(n) or f"not switched: {first[0]} of its pipeline failed"
            self.report.nodes[n] = NodeLoad(False, "", why)

    async def start(self, g: tuple[str, ...]) -> Replica | None:
        """The new version's replica on group `g`: loaded, attached, self-tested (None,
        with the failure recorded per node, when any of that fails)."""
        loop, t = asyncio.get_running_loop(), self.pool.t
        live = await loop.run_in_executor(None, edgekit_nodes)
        absent = [n for n in g if n not in live]
        if absent:
            self.failed(g, {n: "not in the Ray cluster" for n in absent})
            return None
        [new] = await loop.run_in_executor(None, replicas_for, self.pool, self.spec, self.info,
                                           [g], live, f"r{self.roller.round}:")
        errors = await self._loaded(new, t.worker_start_timeout_s)
        if not errors:
            try:
                await asyncio.wait_for(self.pool.transport.attach(new),
                                       t.channel_connect_timeout_s * len(g))
            except Exception as exc:
                errors = {g[0]: f"cannot open the tensor channel: {type(exc).__name__}: {exc}"}
        if not errors and self.ref is not None:
            why = await rollcheck.selftest(self.pool.transport, new, self.ref,
                                           t.deadline_first_call_s)
            errors = {g[0]: why} if why else {}
        if errors:
            self.pool.drop(new)
            self.failed(g, errors)
            return None
        return new

    async def _loaded(self, new: Replica, timeout_s: float) -> dict[str, str]:
        stages = actors_of(new)
        got = await asyncio.gather(*[asyncio.wait_for(s.actor.describe.remote(), timeout_s)
                                     for s in stages], return_exceptions=True)
        errors = {}
        for s, out in zip(stages, got, strict=True):
            if isinstance(out, BaseException):
                why = (f"did not load its model within {timeout_s:.0f} s"
                       if isinstance(out, TimeoutError) else load_error(out))
                errors[s.node] = why
                self.pool.health.load_errors.failed(s.node, self.spec.name, self.spec.version,
                                                    why)
            else:
                s.described(out)
                self.pool.health.load_errors.loaded(s.node, self.spec.name)
        return errors

    async def retire(self, olds: list[Replica], reason: str) -> None:
        """Out of routing (if still in), requests finished (bounded), workers stopped."""
        if not olds:
            return
        if reason:
            self.pool.router.swap(olds, [], reason)
        deadline = time.monotonic() + self.pool.t.drain_timeout_s
        while any(r.outstanding > 0 for r in olds) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for r in olds:  # a request still on it fails over (ChannelLost): none is lost
            self.pool.drop(r)

    def restore(self, olds: list[Replica]) -> None:
        """The new version failed where the old one was stopped: the old replicas go back,
        out of routing until health has recreated their workers (their own version)."""
        for r in olds:
            for s in actors_of(r):
                s.dead, s.starting, s.next_try_s, s.answering = True, None, 0.0, False
            r.alive = False
        self.pool.router.swap([], olds, f"{self.spec.name}: back to the old version")
        for r in olds:
            self.pool.router.mark_dead(r, "restarting the old version's workers")
