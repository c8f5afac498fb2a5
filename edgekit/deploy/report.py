"""Per-node results of a deploy-family command, and the hooks the CLI draws progress with."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


class Reporter(Protocol):
    def step(self, node: str, text: str) -> None: ...
    def bytes(self, node: str, sent: int, total: int) -> None: ...


class Quiet:
    def step(self, node: str, text: str) -> None:
        pass

    def bytes(self, node: str, sent: int, total: int) -> None:
        pass


@dataclass
class NodeResult:
    node: str
    ok: bool = True
    step: str = ""  # last step reached (or the one that failed)
    detail: str = ""
    version: str = ""
    sent_bytes: int = 0
    runtime: str = ""  # "provisioned", "up to date"
    services: str = ""  # "systemd", "supervisor"
    healthy: bool | None = None
    log_tail: str = ""
    seconds: float = 0.0
    selftest: dict[str, Any] = field(default_factory=dict)  # edgekit.deploy.selftest summary

    def fail(self, step: str, detail: str) -> None:
        self.ok, self.step, self.detail = False, step, detail


@dataclass
class RunResult:
    command: str
    nodes: dict[str, NodeResult] = field(default_factory=dict)
    plan: list[str] = field(default_factory=list)
    head: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and all(r.ok for r in self.nodes.values())

    def node(self, name: str) -> NodeResult:
        return self.nodes.setdefault(name, NodeResult(name))

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "ok": self.ok, "seconds": round(self.seconds, 2),
                "error": self.error, "plan": self.plan, "head": self.head,
                "nodes": [asdict(r) for r in self.nodes.values()]}
