"""The node inventory (`pis.txt`): one board per line.

    # comment
    [user@]host[:port] [key=value ...]
    pi@192.168.1.21 name=pi1 role=head cooling=fan
    pi2.local:2222 key=~/.ssh/pi_ed25519 label.rack=top

Recognised keys are listed in KEYS; a few well-known labels (LABEL_KEYS) may be written bare,
any other label needs the `label.` prefix. So a typo such as `nmae=pi1` is an error (with a
suggestion) instead of silently becoming a label. Host aliases from ~/.ssh/config are resolved
by the SSH layer (edgekit.remote.sshconfig), not here: the inventory keeps what the user wrote.

Every value that reaches a node's shell, a unit file or a path has a strict charset, checked
here so a hostile line is refused (file:line and the field named) before anything runs:
names (edgekit.names), users, hosts, labels, `python=` (a command name or an absolute path)
and `root=` (an absolute path, `~` or `~/...`, plain parts, no `..`). Only `key=`, a file on
this host that paramiko reads, is free text. Remote commands quote these values all the same
(edgekit.names.shell_path).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from edgekit import names
from edgekit.errors import InventoryError

#: attribute -> one-line meaning (shown in errors and docs)
KEYS: dict[str, str] = {
    "name": "node name used everywhere in edgekit (default: the host)",
    "key": "SSH identity file",
    "role": "head or worker (default worker)",
    "speed": "relative compute speed for partitioning (default 1.0)",
    "ram": "RAM available for models, e.g. 3.5G (default: measured)",
    "root": "deploy root on the node (default ~/.edgekit)",
    "python": "python3 interpreter on the node (default python3)",
}
#: labels that may be written without the `label.` prefix
LABEL_KEYS = frozenset({"cooling", "board", "zone", "rack", "location", "power", "case"})
ROLES = ("head", "worker")

_LABEL_RE = re.compile(r"^label\.[a-z][a-z0-9_.-]*$")
#: every value below reaches a shell, a unit file or a path on some node or on the host, so
#: each has a strict charset; a user and a host never start with '-' (an option to ssh)
_ADDR_RE = re.compile(
    r"^(?:(?P<user>[A-Za-z_][A-Za-z0-9_.-]{0,31})@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9_.-]{0,252})"
    r"(?::(?P<port>[^:\s]*))?$"
)
_LABEL_VALUE_RE = re.compile(r"[A-Za-z0-9_.,:/@+-]{1,128}")
#: python=: a command looked up in PATH, or an absolute path
_PYTHON_RE = re.compile(r"[A-Za-z0-9_.+-]+|/[A-Za-z0-9_.+/-]+")


@dataclass(frozen=True)
class Node:
    """One line of the inventory, as the user wrote it."""

    name: str
    host: str
    user: str | None = None
    port: int | None = None
    key: str | None = None
    role: str = "worker"
    speed: float = 1.0
    ram_bytes: int | None = None
    root: str = "~/.edgekit"
    python: str = "python3"
    labels: dict[str, str] = field(default_factory=dict)
    source: str = ""  # "file:line" for error messages

    @property
    def address(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{user}{host}{port}"


@dataclass(frozen=True)
class Inventory:
    path: Path
    nodes: tuple[Node, ...]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise InventoryError(f"no node named {name!r} (known: {known})", where=str(self.path))

    @property
    def head(self) -> Node | None:
        return next((n for n in self.nodes if n.role == "head"), None)


def parse_size(text: str) -> int:
    """'1.5G', '512M', '2048' (bytes) -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 512M, 1.5G)")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * 1024 ** " KMGT".index(unit or " "))


def load(path: str | Path) -> Inventory:
    """Read and validate an inventory file; every problem names file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError("inventory file not found", where=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"cannot read inventory: {exc}", where=str(path)) from None
    return parse(text, source=str(path))


def parse(text: str, source: str = "<inventory>") -> Inventory:
    nodes: list[Node] = []
    seen_names: dict[str, str] = {}
    seen_hosts: dict[tuple[str, int | None], str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{lineno}"
        node = _parse_line(line, where)
        if node.name in seen_names:
            raise InventoryError(
                f"duplicate node name {node.name!r} (first at {seen_names[node.name]})", where=where
            )
        host_key = (node.host.lower(), node.port)
        if host_key in seen_hosts:
            raise InventoryError(
                f"duplicate host {node.address!r} (first at {seen_hosts[host_key]})", where=where
            )
        seen_names[node.name] = where
        seen_hosts[host_key] = where
        nodes.append(node)
    if not nodes:
        raise InventoryError("inventory lists no nodes", where=source)
    heads = [n for n in nodes if n.role == "head"]
    if len(heads) > 1:
        raise InventoryError(
            f"more than one node has role=head ({', '.join(n.name for n in heads)})",
            where=heads[1].source,
        )
    return Inventory(path=Path(source), nodes=tuple(nodes))


def _parse_line(line: str, where: str) -> Node:
    address, *attrs = line.split()
    match = _ADDR_RE.match(address)
    if not match or "=" in address:
        raise InventoryError(
            f"malformed address {address!r}: expected [user@]host[:port]", where=where
        )
    host = match.group("host").strip("[]")
    port = _parse_port(match.group("port"), where) if match.group("port") is not None else None
    values: dict[str, str] = {}
    labels: dict[str, str] = {}
    for attr in attrs:
        key, sep, value = attr.partition("=")
        if not sep or not key or not value:
            raise InventoryError(f"malformed attribute {attr!r}: expected key=value", where=where)
        if key in KEYS:
            if key in values:
                raise InventoryError(f"attribute {key!r} given twice", where=where)
            values[key] = value
        elif key in LABEL_KEYS:
            labels[key] = value
        elif _LABEL_RE.match(key):
            labels[key.removeprefix("label.")] = value
        else:
            raise InventoryError(_unknown_key_message(key), where=where)
    return _build_node(host, port, match.group("user"), values, labels, where)


def _parse_port(text: str, where: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InventoryError(f"bad port {text!r}: must be a number from 1 to 65535", where=where)
    return int(text)


def _unknown_key_message(key: str) -> str:
    known = sorted([*KEYS, *LABEL_KEYS])
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"unknown key {key!r}{hint}; known keys: {', '.join(sorted(KEYS))}; "
        f"labels: {', '.join(sorted(LABEL_KEYS))} or label.<name>=<value>"
    )


def _build_node(
    host: str,
    port: int | None,
    user: str | None,
    values: dict[str, str],
    labels: dict[str, str],
    where: str,
) -> Node:
    name = values.get("name", host)
    if not names.is_name(name):
        raise InventoryError(
            f"bad node name {name!r}: letters, digits, '.', '_' and '-' only "
            f"({names.NAME_RULE})", where=where
        )
    _check_values(values, labels, where)
    role = values.get("role", "worker")
    if role not in ROLES:
        raise InventoryError(f"bad role {role!r}: must be one of {', '.join(ROLES)}", where=where)
    try:
        speed = float(values.get("speed", "1.0"))
    except ValueError:
        speed = -1.0
    if not 0 < speed < float("inf"):
        raise InventoryError(f"bad speed {values['speed']!r}: a positive number", where=where)
    ram = None
    if "ram" in values:
        try:
            ram = parse_size(values["ram"])
        except ValueError as exc:
            raise InventoryError(str(exc), where=where) from None
    return Node(
        name=name,
        host=host,
        user=user,
        port=port,
        key=values.get("key"),
        role=role,
        speed=speed,
        ram_bytes=ram,
        root=values.get("root", "~/.edgekit"),
        python=values.get("python", "python3"),
        labels=labels,
        source=where,
    )


def _check_values(values: dict[str, str], labels: dict[str, str], where: str) -> None:
    """The free-form attributes that reach a node's shell or file system: root, python,
    labels. (`key` is a file on this host, read by paramiko, never by a shell.)"""
    root = values.get("root")
    if root is not None and (why := names.root_problem(root)):
        raise InventoryError(f"bad root {root!r}: {why}", where=where)
    python = values.get("python")
    if python is not None and (not _PYTHON_RE.fullmatch(python) or "/../" in f"{python}/"):
        raise InventoryError(
            f"bad python {python!r}: a command name (python3) or an absolute path of "
            f"{names.PATH_RULE}", where=where)
    for key, value in labels.items():
        if not _LABEL_VALUE_RE.fullmatch(value):
            raise InventoryError(
                f"bad label {key!r} value {value!r}: 1-128 letters, digits or . _ , : / @ + -",
                where=where)


def render(nodes: list[Node] | tuple[Node, ...]) -> str:
    """Write nodes back in inventory syntax (used by the virtual cluster)."""
    lines = []
    for n in nodes:
        parts = [n.address, f"name={n.name}"]
        if n.key:
            parts.append(f"key={n.key}")
        if n.role != "worker":
            parts.append(f"role={n.role}")
        if n.speed != 1.0:
            parts.append(f"speed={n.speed:g}")
        for k, v in n.labels.items():
            parts.append(f"{k}={v}" if k in LABEL_KEYS else f"label.{k}={v}")
        lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"
