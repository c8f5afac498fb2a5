"""SSH host-key verification: known keys are checked, new keys need an explicit opt-in.

Two files are consulted: the user's ~/.ssh/known_hosts (read-only for us) and edgekit's own
$EDGEKIT_HOME/known_hosts, where keys the user chose to trust (`--accept-new-host-keys`) and the
virtual cluster's generated keys are recorded. A key that differs from a recorded one is
refused loudly in every case: paramiko raises BadHostKeyException and we name both fingerprints.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from pathlib import Path

import paramiko

from edgekit import settings
from edgekit.errors import HostKeyError

_write_lock = threading.Lock()


def project_known_hosts() -> Path:
    return settings.EDGEKIT_HOME / "known_hosts"


def user_known_hosts() -> Path:
    return Path.home() / ".ssh" / "known_hosts"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint, e.g. SHA256:abc..."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_entry_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def load_into(client: paramiko.SSHClient) -> None:
    """Load both known_hosts files into a client (missing files are fine)."""
    if user_known_hosts().is_file():
        client.load_system_host_keys(str(user_known_hosts()))
    if project_known_hosts().is_file():
        # Not SSHClient.load_host_keys: that would make paramiko rewrite the file on save.
        for name, keys in paramiko.HostKeys(str(project_known_hosts())).items():
            for keytype, key in keys.items():
                client.get_host_keys().add(name, keytype, key)


class VerifyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown host keys unless the user opted in; record accepted keys once."""

    def __init__(self, node_name: str, accept_new: bool):
        self.node_name = node_name
        self.accept_new = accept_new

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey):
        if not self.accept_new:
            raise HostKeyError(
                f"host key unknown ({key.get_name()} {fingerprint(key)})",
                where=f"node {self.node_name} ({hostname})",
                hint="check the fingerprint on the board (ssh-keygen -lf "
                "/etc/ssh/ssh_host_ed25519_key.pub), then rerun with --accept-new-host-keys",
            )
        record(hostname, key)


def record(hostname: str, key: paramiko.PKey) -> None:
    """Append one host key to edgekit's known_hosts (0600), once."""
    path = project_known_hosts()
    with _write_lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = paramiko.HostKeys(str(path)) if path.is_file() else paramiko.HostKeys()
        if existing.check(hostname, key):
            return
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with open(path, "a", encoding="ascii") as fh:
            fh.write(line)
        path.chmod(0o600)


def changed_key_error(node_name: str, exc: paramiko.BadHostKeyException) -> HostKeyError:
    return HostKeyError(
        f"HOST KEY CHANGED: expected {fingerprint(exc.expected_key)}, "
        f"got {fingerprint(exc.key)} - possible man-in-the-middle; refusing to connect",
        where=f"node {node_name}",
        hint=f"if the board was reinstalled, remove its line from {project_known_hosts()} "
        f"or {user_known_hosts()} and verify the new fingerprint",
    )
