"""Per-node results of a deploy-family command (edgekit.fleet's types, with deploy's fields),
and the hooks the CLI draws progress with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgekit.fleet import FleetResult, NodeOutcome


class Reporter(Protocol):
    def step(self, node: str, text: str) -> None: ...
    def bytes(self, node: str, sent: int, total: int) -> None: ...


class Quiet:
    def step(self, node: str, text: str) -> None:
        pass

    def bytes(self, node: str, sent: int, total: int) -> None:
        pass


@dataclass
class NodeResult(NodeOutcome):
    """One node's outcome of deploy, rollback or undeploy (edgekit.fleet.NodeOutcome: node,
    ok, step reached, detail, failure kind, seconds) with what those commands add."""

    version: str = ""
    sent_bytes: int = 0
    runtime: str = ""  # "provisioned", "up to date"
    services: str = ""  # "systemd", "supervisor"
    healthy: bool | None = None
    log_tail: str = ""
    selftest: dict[str, Any] = field(default_factory=dict)  # edgekit.deploy.selftest summary
    #: a node that does not serve: what to do about it (edgekit.deploy.stragglers)
    hint: str = ""
    #: its services run and keep trying: it joins, and the API adds it, without a redeploy
    joins_later: bool = False


#: what a deploy-family command came to (the CLI's exit code follows it: docs/DEPLOY.md)
OK, DEGRADED, FAILED = "ok", "degraded", "failed"


@dataclass
class RunResult(FleetResult[NodeResult]):
    """Every node's NodeResult, the plan, where the head runs, and how long it all took.
    `min_nodes`: a deploy serving on at least that many nodes, some others not, is DEGRADED
    (it serves); with fewer it FAILED."""

    plan: list[str] = field(default_factory=list)
    head: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    min_nodes: int = 1
    make: Callable[[str], NodeResult] = field(default=NodeResult, repr=False)

    @property
    def serving(self) -> list[str]:
        return [n for n, r in self.nodes.items() if r.ok and r.healthy]

    @property
    def outcome(self) -> str:
        if self.ok:
            return OK
        if self.command == "deploy" and len(self.serving) >= max(1, self.min_nodes):
            return DEGRADED
        return FAILED

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "outcome": self.outcome, "serving": self.serving,
                "min_nodes": self.min_nodes, "seconds": round(self.seconds, 2),
                "plan": self.plan, "head": self.head}


@dataclass
class NodeStatus(NodeOutcome):
    """One node as `edgekit status` finds it (ok: reachable over SSH): the active and kept
    version of every model, its services, whether the API sees a live worker there, and
    what that worker computes with (kernel variant, runtime versions, fallback warning)."""

    active: dict[str, str | None] = field(default_factory=dict)
    kept: dict[str, list[str]] = field(default_factory=dict)
    services: dict[str, bool | None] = field(default_factory=dict)
    systemd: bool = False
    healthy: bool = False
    kernels: str = ""
    onnxruntime: str = ""
    litert: str = ""
    warning: str = ""
    #: model -> the version its live workers run ("" none live there, None: API not asked);
    #: `active` is the version on disk (edgekit.deploy.truth)
    served: dict[str, str | None] = field(default_factory=dict)
    mismatch: str = ""  # on disk vs served, in words ("" when they agree)
    fix: str = ""  # what to do about the mismatch
    load_error: str = ""  # why its worker could not load the model (the API's word)
    boot_problem: str = ""  # what its last service start found damaged on disk
    thermal: dict[str, Any] = field(default_factory=dict)  # edgekit.deploy.truth.thermal

    def to_dict(self) -> dict[str, Any]:
        return {"reachable": self.ok, "error": self.detail or None, **super().to_dict()}


@dataclass
class DeployStatus(FleetResult[NodeStatus]):
    """`edgekit status`: every deployed node's NodeStatus, the models, the head and its API."""

    inventory: str = ""
    head: dict[str, Any] = field(default_factory=dict)
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    api_ready: bool = False
    api_error: str = ""
    #: the API answered at all (False: unreachable; the nodes' on-disk facts still show)
    api_reachable: bool = False
    tunnel: bool = False
    make: Callable[[str], NodeStatus] = field(default=NodeStatus, repr=False)

    @property
    def mismatched(self) -> list[str]:
        """Nodes whose version on disk is not the one served there."""
        return [n for n, r in self.items() if r.mismatch]

    def to_dict(self) -> dict[str, Any]:
        """The `status --json` document: nodes keyed by name (as before the fleet types)."""
        return {**super().to_dict(), "inventory": self.inventory, "head": self.head,
                "apps": self.apps, "api_ready": self.api_ready, "api_error": self.api_error,
                "api_reachable": self.api_reachable, "mismatch": self.mismatched,
                "tunnel": self.tunnel, "nodes": {n: r.to_dict() for n, r in self.items()}}
