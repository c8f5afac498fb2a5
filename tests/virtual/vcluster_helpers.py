"""Helpers for the virtual cluster tests: skip reason, a strict paramiko client."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import paramiko
import pytest

from edgekit.errors import ClusterError
from edgekit.virtual import cgroups
from edgekit.virtual.cluster import VirtualCluster


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "the virtual cluster needs root (users, cgroups, sshd)"
    if not Path("/usr/sbin/sshd").exists():
        return "OpenSSH server not installed (apt-get install openssh-server)"
    try:
        cgroups.version()
    except ClusterError as exc:
        return exc.render()
    for tool in ("ssh-keygen", "useradd", "setarch", "setsid"):
        if not shutil.which(tool):
            return f"{tool} missing"
    return None


SKIP_REASON = _why_not()
needs_cluster = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


def connect(vc: VirtualCluster, node: str) -> paramiko.SSHClient:
    """A paramiko client that trusts only the host keys `up` recorded."""
    rec = vc.record.node(node)
    client = paramiko.SSHClient()
    client.load_host_keys(str(vc.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        rec.address,
        port=rec.port,
        username=rec.user,
        key_filename=str(vc.identity_path),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def run(client: paramiko.SSHClient, command: str, timeout: float = 30) -> tuple[int, str, str]:
    _, out, err = client.exec_command(command, timeout=timeout)
    rc = out.channel.recv_exit_status()
    return rc, out.read().decode(), err.read().decode()


