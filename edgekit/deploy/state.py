"""Host-side record of a deployment: what runs where, so every command needs only the
inventory. One JSON file per inventory (layout.deployment_dir), written atomically, plus the
secrets beside it (0600). A lock file serialises commands on the same deployment.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import ClusterError
from edgekit.tokenfile import check_private

STATE_FILE = "state.json"


@dataclass
class NodeState:
    root: str = ""  # expanded deploy root
    systemd: bool = False
    fingerprint: str = ""
    arch: str = ""
    cores: int = 1
    ram_bytes: int = 0
    address: str = ""  # this node's IP as the host reaches it
    line: str = ""  # its inventory line, so a node later removed from the inventory is found
    selftest: str = ""  # key of its last passing self-test (edgekit.deploy.selftest.key)


@dataclass
class AppState:
    """One deployed model: its plan and the versions known on each node (newest last)."""

    bundle: str
    version: str
    plan: dict[str, Any]
    history: list[str] = field(default_factory=list)  # versions, newest last
    active: dict[str, str] = field(default_factory=dict)  # node -> active version
    bundles: dict[str, str] = field(default_factory=dict)  # version -> host bundle folder


@dataclass
class HeadState:
    where: str = "host"  # "host" or the name of the role=head node
    ray_address: str = ""
    api_url: str = ""  # on a head node's loopback: reached through an SSH tunnel (headnode)
    api_port: int = 0
    api_host: str = "127.0.0.1"  # what the API binds (`edgekit deploy --api-host`)
    api_nodes: list[str] = field(default_factory=list)  # the node list the API runs with


@dataclass
class DeployState:
    inventory: str
    nodes: dict[str, NodeState] = field(default_factory=dict)
    apps: dict[str, AppState] = field(default_factory=dict)
    head: HeadState = field(default_factory=HeadState)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeployState:
        return cls(
            inventory=d["inventory"],
            nodes={k: NodeState(**v) for k, v in d.get("nodes", {}).items()},
            apps={k: AppState(**v) for k, v in d.get("apps", {}).items()},
            head=HeadState(**d.get("head", {})),
        )


def load(folder: Path, inventory: str) -> DeployState:
    path = folder / STATE_FILE
    if not path.exists():
        return DeployState(inventory=inventory)
    try:
        return DeployState.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClusterError(f"unreadable deploy state: {exc}", where=str(path),
                           hint="move it away and run deploy again") from exc


def save(folder: Path, st: DeployState) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = folder / f".{STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(st.to_dict(), indent=2) + "\n")
    os.replace(tmp, folder / STATE_FILE)


def exists(folder: Path) -> bool:
    return (folder / STATE_FILE).exists()


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One edgekit command at a time per deployment; a second one fails at once."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ClusterError("another edgekit command is working on this deployment",
                               where=str(folder)) from None
        yield
    finally:
        os.close(fd)


def secret(folder: Path, name: str) -> Path:
    """A host-generated secret file (0600), created once and reused; one that other users
    can read (someone loosened it) is refused with the fix named, not sent to the nodes."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / name
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    check_private(path, name)
    return path
