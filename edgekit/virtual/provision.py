"""Operating-system pieces of one virtual node: its Unix user, keys and OpenSSH server."""

from __future__ import annotations

import os
import pwd
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import ClusterError

SSHD = "/usr/sbin/sshd"
PROFILE = """\
# edgekit virtual node. sshd's SetEnv gives every session EDGEKIT_SYSROOT and a PATH that
# starts with the node's firmware tools; Debian's /etc/profile resets PATH in login shells,
# so put them back in front here.
if [ -n "$EDGEKIT_SYSROOT" ]; then PATH="$EDGEKIT_SYSROOT/usr/bin:$PATH"; export PATH; fi
"""


def run(cmd: list[str], where: str, retries: int = 0) -> str:
    """Run a system tool; retry while /etc/passwd is locked by a concurrent useradd."""
    for attempt in range(retries + 1):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return proc.stdout
        if "lock" in proc.stderr.lower() and attempt < retries:
            time.sleep(0.2 * (attempt + 1))
            continue
        detail = (proc.stderr or proc.stdout).strip()
        raise ClusterError(f"{shlex.join(cmd)} failed ({proc.returncode}): {detail}", where=where)
    raise AssertionError("unreachable")


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def create_user(name: str, home: Path) -> None:
    """A login user with no password ('*', not locked: sshd refuses locked accounts)."""
    run(
        ["useradd", "--system", "--no-create-home", "--home-dir", str(home),
         "--shell", "/bin/bash", "--user-group", "--password", "*", name],
        where=f"user {name}",
        retries=10,
    )  # fmt: skip
    entry = pwd.getpwnam(name)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    home.chmod(0o700)
    profile = home / ".profile"
    profile.write_text(PROFILE)
    for path in (home, profile):
        os.chown(path, entry.pw_uid, entry.pw_gid)


def delete_user(name: str) -> None:
    if user_exists(name):
        run(["userdel", name], where=f"user {name}", retries=10)


def keygen(path: Path, comment: str) -> str:
    """A new ed25519 key pair (private key mode 0600); returns the public key line."""
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        where=str(path))  # fmt: skip
    path.chmod(0o600)
    return path.with_name(path.name + ".pub").read_text().strip()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_path(sysroot: Path) -> str:
    """The node's PATH: its firmware tools (vcgencmd) first."""
    return f"{sysroot}/usr/bin:/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class SshdSettings:
    """One node's sshd: where it listens, who may log in, its keys, its sessions' environment.

    runtime_dir: the node user's XDG_RUNTIME_DIR where a systemd user manager runs (what
    pam_systemd gives SSH sessions on a Pi; this sshd runs without PAM). chroot + qemu_cpu:
    an aarch64 node, whose sessions live in its arm64 userland (rootfs.py) and whose every
    process is emulated as that CPU model (qemu-user reads QEMU_CPU).
    """

    port: int
    user: str
    host_key: Path
    pid_file: Path
    authorized_keys: Path
    sysroot: Path
    address: str = "127.0.0.1"
    runtime_dir: Path | None = None
    chroot: Path | None = None
    qemu_cpu: str | None = None


@dataclass(frozen=True)
class SshdFiles:
    """The files of one node's sshd, all in its node directory."""

    config: Path
    log: Path
    pid_file: Path

    @classmethod
    def in_dir(cls, node_dir: Path) -> SshdFiles:
        return cls(node_dir / "sshd_config", node_dir / "sshd.log", node_dir / "sshd.pid")


def sshd_config(s: SshdSettings) -> str:
    """The sshd_config text for ``s``."""
    env = f"EDGEKIT_SYSROOT={s.sysroot} PATH={node_path(s.sysroot)}"
    if s.runtime_dir is not None:
        env += f" XDG_RUNTIME_DIR={s.runtime_dir}"
    if s.qemu_cpu is not None:
        env += f" QEMU_CPU={s.qemu_cpu}"
    extra = f"ChrootDirectory {s.chroot}\n" if s.chroot is not None else ""
    return f"""\
# sshd of one edgekit virtual node (written by `edgekit cluster up`)
Port {s.port}
ListenAddress {s.address}
HostKey {s.host_key}
PidFile {s.pid_file}
AuthorizedKeysFile {s.authorized_keys}
AllowUsers {s.user}
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
PrintMotd no
X11Forwarding no
Subsystem sftp internal-sftp
SetEnv {env}
{extra}"""


def start_sshd(
    files: SshdFiles,
    procs_files: list[Path],
    linux32: bool,
    prefix: tuple[str, ...] = (),
    boot: tuple[str, str] | None = None,
) -> int:
    """Start sshd inside the node's cgroup(s); return its pid once it listens.

    A small shell joins the groups and then execs sshd, so the daemon and everything it
    forks start inside them. sshd binds its port before it daemonizes, so when the launcher
    returns the port is open. boot: shell run (before, after) sshd starts, in a mount
    namespace of the node's own that sshd shares (usermanager.launcher).
    """
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation directory
    joins = "; ".join(f"echo $$ > {shlex.quote(str(f))}" for f in procs_files)
    config, log, pid_file = files.config, files.log, files.pid_file
    argv = [SSHD, "-f", str(config), "-E", str(log)]
    if boot is not None:
        script = f"{boot[0]}\n{shlex.join(argv)} || exit $?\n{boot[1]}\n"
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    if linux32:  # a 32-bit personality: `uname -m` says i686 in every session
        argv = ["setarch", "linux32", *argv]
    argv = [*prefix, *argv]  # e.g. nsenter into the node's network namespace
    script = f"{joins}; exec {shlex.join(argv)}"
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        log_tail = log.read_text()[-2000:] if log.exists() else ""
        raise ClusterError(
            f"sshd did not start ({proc.returncode}): {proc.stderr.strip()} {log_tail.strip()}",
            where=str(config),
        )
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text().strip():
            return int(pid_file.read_text().strip())
        time.sleep(0.02)
    raise ClusterError("sshd started but wrote no pid file", where=str(pid_file))
