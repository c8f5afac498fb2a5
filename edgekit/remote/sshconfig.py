"""Resolve an inventory node to connection parameters, honouring ~/.ssh/config.

Inventory values win over ~/.ssh/config (the inventory is the more specific statement).
HostName, User, Port, IdentityFile and ProxyJump are used; paramiko's SSHConfig does the parsing
and Match/Host pattern logic, so we only map its answers.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from edgekit.errors import InputError
from edgekit.inventory import Node


@dataclass(frozen=True)
class Target:
    """Where and as whom to connect, after ~/.ssh/config."""

    name: str
    hostname: str
    port: int
    username: str
    key_filenames: tuple[str, ...] = ()
    jumps: tuple[Target, ...] = field(default=())

    @property
    def label(self) -> str:
        return f"{self.username}@{self.hostname}:{self.port}"


def _user_config() -> paramiko.SSHConfig | None:
    path = Path(os.environ.get("EDGEKIT_SSH_CONFIG", Path.home() / ".ssh" / "config"))
    if not path.is_file():
        return None
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except Exception as exc:  # paramiko raises several types for a bad config
        raise InputError(f"cannot parse SSH config: {exc}", where=str(path)) from None


def resolve(node: Node, config: paramiko.SSHConfig | None = None) -> Target:
    config = config if config is not None else _user_config()
    looked = config.lookup(node.host) if config else {"hostname": node.host}
    keys: list[str] = []
    if node.key:
        keys.append(os.path.expanduser(node.key))
    keys += [os.path.expanduser(k) for k in looked.get("identityfile", [])]
    jumps = tuple(_jump(spec, config) for spec in _split_jumps(looked.get("proxyjump")))
    return Target(
        name=node.name,
        hostname=looked.get("hostname", node.host),
        port=node.port or int(looked.get("port", 22)),
        username=node.user or looked.get("user") or getpass.getuser(),
        key_filenames=tuple(dict.fromkeys(keys)),
        jumps=jumps,
    )


def _split_jumps(value: str | None) -> list[str]:
    if not value or value.lower() == "none":
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


def _jump(spec: str, config: paramiko.SSHConfig | None) -> Target:
    """One ProxyJump hop, `[user@]host[:port]`, itself resolved through ~/.ssh/config."""
    user, _, hostport = spec.rpartition("@")
    host, _, port = hostport.partition(":")
    hop = Node(name=f"jump:{host}", host=host, user=user or None, port=int(port) if port else None)
    resolved = resolve(hop, config)
    return Target(
        resolved.name, resolved.hostname, resolved.port, resolved.username, resolved.key_filenames
    )
