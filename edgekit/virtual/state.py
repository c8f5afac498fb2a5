"""The record of a running virtual cluster, shared by `up`, `down`, the supervisor and `status`.

Host side (under EDGEKIT_HOME/virtual): cluster.json (what exists; written before each thing
is created, so `down` can undo a half-finished `up`), conditions.json (what `cluster heat`
asks for), status.json (what the supervisor last measured), inventory.txt, the identity key.
Node side (under RUN_ROOT/<id>, a root-owned path every node user can traverse): homes,
sysroots, sshd configs and host keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit import settings
from edgekit.virtual.sysroot import write_atomic

#: where node homes and sysroots live; not under EDGEKIT_HOME because that is often inside a
#: 0700 directory (/root, pytest's tmp) that the node users could not enter.
RUN_ROOT = Path(os.environ.get("EDGEKIT_VIRTUAL_RUN", "/var/lib/edgekit-virtual"))


def edgekit_home(home: Path | None = None) -> Path:
    """EDGEKIT_HOME (read at call time, so tests can point it at a temp dir)."""
    return Path(home or os.environ.get("EDGEKIT_HOME", settings.EDGEKIT_HOME)).absolute()


def state_dir(home: Path | None = None) -> Path:
    return edgekit_home(home) / "virtual"


def known_hosts_path(home: Path | None = None) -> Path:
    return edgekit_home(home) / "known_hosts"


@dataclass
class NodeRecord:
    name: str
    user: str
    board: str
    cooling: str
    ambient_c: float
    ram_bytes: int
    cap_cores: float
    linux32: bool = False
    start_temp_c: float | None = None
    port: int = 0
    host_key_line: str = ""  # the exact line added to known_hosts
    sshd_pid: int = 0
    address: str = "127.0.0.1"  # where its sshd listens
    link: str = ""  # with `--link`: the shaped rate, and the node's network namespace
    netns: str = ""
    shaper: str = ""  # the tc qdisc actually in place
    init: str = "none"  # "systemd": a systemd user manager runs for the node user (usermanager.py)
    uid: int = 0  # the node user's uid (to clean /run/user/<uid> after the user is gone)
    manager_pid: int = 0
    arch: str = "x86_64"  # "aarch64": an arm64 userland under qemu-user (rootfs.py)
    rootfs: str = ""  # aarch64: the cached userland its overlay is built on

    def home(self, run_dir: Path) -> Path:
        return run_dir / "home" / self.user

    def node_dir(self, run_dir: Path) -> Path:
        return run_dir / "node" / self.name

    def sysroot(self, run_dir: Path) -> Path:
        return self.node_dir(run_dir) / "sysroot"


@dataclass
class ClusterRecord:
    id: str
    run_dir: Path
    nodes: list[NodeRecord] = field(default_factory=list)
    supervisor_pid: int = 0
    complete: bool = False  # set once `up` finished

    @property
    def name(self) -> str:
        return f"ekv{self.id}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["run_dir"] = str(self.run_dir)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterRecord:
        nodes = [NodeRecord(**n) for n in data.get("nodes", [])]
        return cls(
            id=data["id"],
            run_dir=Path(data["run_dir"]),
            nodes=nodes,
            supervisor_pid=data.get("supervisor_pid", 0),
            complete=data.get("complete", False),
        )

    def node(self, name: str) -> NodeRecord:
        from edgekit.errors import InputError

        for n in self.nodes:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.nodes)
        raise InputError(f"no virtual node named {name!r} (known: {known})")


def record_path(home: Path | None = None) -> Path:
    return state_dir(home) / "cluster.json"


def save(rec: ClusterRecord, home: Path | None = None) -> None:
    write_atomic(record_path(home), json.dumps(rec.to_json(), indent=2) + "\n", mode=0o600)


def load(home: Path | None = None) -> ClusterRecord | None:
    try:
        return ClusterRecord.from_json(json.loads(record_path(home).read_text()))
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def locked(home: Path | None = None) -> Iterator[None]:
    """Serialise up/down/heat of one EDGEKIT_HOME's cluster."""
    d = state_dir(home)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


# --- known_hosts ---------------------------------------------------------------------------
def add_known_hosts(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text().splitlines() if path.exists() else []
    write_atomic(path, "\n".join([*old, *lines]) + "\n", mode=0o644)


def remove_known_hosts(path: Path, lines: list[str]) -> None:
    """Remove exactly the given lines (the ones `up` added); leave everything else."""
    if not path.exists():
        return
    drop = {line.strip() for line in lines if line.strip()}
    kept = [line for line in path.read_text().splitlines() if line.strip() not in drop]
    write_atomic(path, "".join(line + "\n" for line in kept), mode=0o644)
