"""A real OpenSSH server on loopback for the SSH-layer tests (one per test that asks).

This is the component a user has (sshd), not a mock: key-only auth, its own host key.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    port: int
    dir: Path
    client_key: Path
    host_pub: str
    proc: subprocess.Popen


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(base: Path, *, setenv: dict[str, str] | None = None,
               personality: str | None = None, client_key: Path | None = None) -> Sshd:
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    _keygen(base / "host_key")
    if client_key is None:
        client_key = base / "id_ed25519"
        _keygen(client_key)
    (base / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    os.chmod(base / "authorized_keys", 0o600)
    port = free_port()
    env_line = ""
    if setenv:
        env_line = "SetEnv " + " ".join(f"{k}={v}" for k, v in setenv.items())
    (base / "sshd_config").write_text(f"""
ListenAddress 127.0.0.1
Port {port}
HostKey {base}/host_key
AuthorizedKeysFile {base}/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
PidFile {base}/sshd.pid
Subsystem sftp internal-sftp
StrictModes no
{env_line}
""")
    Path("/run/sshd").mkdir(exist_ok=True)
    cmd = [SSHD, "-D", "-e", "-f", str(base / "sshd_config")]
    if personality:
        cmd = ["setarch", personality, *cmd]
    with open(base / "sshd.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError(f"sshd did not start: {(base / 'sshd.log').read_text()}")
    host_pub = (base / "host_key.pub").read_text().split()
    return Sshd(port, base, client_key, f"{host_pub[0]} {host_pub[1]}", proc)


def needs_sshd() -> None:
    if os.geteuid() != 0 or not Path(SSHD).exists():
        pytest.skip("needs root and OpenSSH sshd (bash dev.sh test installs it)")


@pytest.fixture
def edgekit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolate ~/.edgekit and ~/.ssh/known_hosts for a test."""
    from edgekit import settings

    home = tmp_path / "ekhome"
    home.mkdir()
    monkeypatch.setattr(settings, "EDGEKIT_HOME", home)
    monkeypatch.setenv("EDGEKIT_HOME", str(home))
    fake_user_home = tmp_path / "userhome"
    (fake_user_home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(fake_user_home))
    monkeypatch.setenv("EDGEKIT_SSH_CONFIG", str(fake_user_home / ".ssh" / "config"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    needs_sshd()
    server = start_sshd(tmp_path / "sshd")
    yield server
    server.proc.terminate()
    server.proc.wait(timeout=10)


def trust(home: Path, server: Sshd) -> None:
    """Record a server's host key in the project known_hosts, as `cluster up` does."""
    with open(home / "known_hosts", "a") as fh:
        fh.write(f"[127.0.0.1]:{server.port} {server.host_pub}\n")
