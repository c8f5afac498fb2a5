"""What a command that acts on many nodes reports: one typed outcome per node and the fleet's
result, in the spirit of fabric's GroupResult / GroupException.

Every multi-node path uses these: the parallel SSH runner (`remote.ssh.run_each` returns
`Outcome`s, a `NodeOutcome` carrying the function's value), deploy and its sibling commands
(`deploy.report.NodeResult` / `RunResult`), and their `--json` output (`to_dict`). A failure
that has to stop a command raises `FleetError`, which carries the result, so the CLI can show
per node what happened.
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterator, ValuesView
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

from edgekit.errors import NodeError

N = TypeVar("N", bound="NodeOutcome")


@dataclass
class NodeOutcome:
    """One node: how far it got (`step`), and whether it went well; if not, the kind of
    failure (timeout, refused, dns, auth, hostkey-unknown, not-fit, error, ...) and why."""

    node: str
    ok: bool = True
    step: str = ""
    detail: str = ""
    kind: str = ""  # "" while ok
    seconds: float = 0.0

    def fail(self, step: str, detail: str, kind: str = "error") -> None:
        self.ok, self.step, self.detail, self.kind = False, step, detail, kind

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FleetResult(Generic[N]):
    """Every node's outcome of one command, plus an error that concerns no single node."""

    command: str
    nodes: dict[str, N] = field(default_factory=dict)
    error: str = ""
    make: Callable[[str], N] = field(default=NodeOutcome, repr=False)  # type: ignore[assignment]

    @property
    def ok(self) -> bool:
        return not self.error and all(r.ok for r in self.nodes.values())

    @property
    def succeeded(self) -> dict[str, N]:
        return {n: r for n, r in self.nodes.items() if r.ok}

    @property
    def failed(self) -> dict[str, N]:
        return {n: r for n, r in self.nodes.items() if not r.ok}

    # read like the dict of outcomes it holds: result[name], result.items(), name in result
    def __getitem__(self, name: str) -> N:
        return self.nodes[name]

    def __contains__(self, name: object) -> bool:
        return name in self.nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def items(self) -> ItemsView[str, N]:
        return self.nodes.items()

    def values(self) -> ValuesView[N]:
        return self.nodes.values()

    def node(self, name: str) -> N:
        """`name`'s outcome, created (ok, no step yet) on first use."""
        if name not in self.nodes:
            self.nodes[name] = self.make(name)
        return self.nodes[name]

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "ok": self.ok, "error": self.error,
                "succeeded": sorted(self.succeeded), "failed": sorted(self.failed),
                "nodes": [r.to_dict() for r in self.nodes.values()]}

    def raise_if_failed(self, what: str | None = None) -> None:
        if not self.ok:
            raise FleetError(self, what)


class FleetError(NodeError):
    """Some nodes failed (or the command as a whole did); `.result` says which and why."""

    def __init__(self, result: FleetResult, what: str | None = None):
        failed = "; ".join(f"{n}: {r.step or '?'}: {r.detail}" for n, r in result.failed.items())
        message = what or f"{result.command} failed"
        super().__init__(f"{message}: {result.error or failed}",
                         where=", ".join(sorted(result.failed)) or None)
        self.result = result
