"""A systemd user manager per virtual node, started the way a Pi starts a lingering user's
manager at boot, so `edgekit deploy` takes its systemd path here exactly as on a board.

On a Pi, PID 1 is systemd and starts `user@<uid>.service` for every lingering user at boot:
`systemd --user` in the cgroup `.../user@<uid>.service`, delegated to the user, with
XDG_RUNTIME_DIR=/run/user/<uid> (0700, the user's). SSH sessions get XDG_RUNTIME_DIR from
pam_systemd, and `systemctl --user` reaches the manager at $XDG_RUNTIME_DIR/systemd/private.

Here PID 1 is not systemd, and `systemd --user` refuses to start unless /run/systemd/system
exists ("not booted with systemd") and it sits in a cgroup it may write. So each node boots in
a mount namespace of its own, shared by its sshd and its manager, with a tmpfs on /run/systemd
holding `system/` (what sd_booted() - systemd itself and the node probe - looks for) and
`user.conf.d/edgekit-virtual.conf` (DefaultEnvironment: EDGEKIT_SYSROOT and the node's PATH;
a user manager resets PATH for its units). The manager runs in `user@<uid>.service` under the
node's group in the name=systemd and cgroup2 hierarchies (hybrid hosts; on a cgroup2-only host
under the node's own group), owned by the user, and by inheritance in the node's cpu, cpuacct
and memory groups, so its units stay under the board's CPU cap. Node code sees what a Pi shows.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from edgekit.errors import ClusterError
from edgekit.virtual import cgroups, provision
from edgekit.virtual.cgroups import NodeGroup

CANDIDATES = ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
TOOLS = ("unshare", "setpriv", "setsid")
RUNTIME_ROOT = Path("/run/user")
CONF = "/run/systemd/user.conf.d/edgekit-virtual.conf"
#: systemd refuses `daemon-reload` with less than 16 MB free on /run/systemd
TMPFS_OPTIONS = "mode=0755,size=64m"
#: files a delegated group's owner needs (systemd's cgroup delegation rules, v1 and v2)
DELEGATED_FILES = ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "tasks")


def binary() -> str | None:
    return next((p for p in CANDIDATES if os.access(p, os.X_OK)), None)


def hierarchies() -> list[Path]:
    """cgroup v1 hosts: the name=systemd and cgroup2 ("unified") mounts a manager writes to."""
    return [cgroups.ROOT / h for h in ("systemd", "unified")
            if (cgroups.ROOT / h / "cgroup.procs").exists()]


def unavailable() -> str | None:
    """Why nodes cannot have a systemd user manager on this host (None when they can)."""
    if binary() is None:
        return "no systemd binary (apt-get install systemd)"
    for tool in TOOLS:
        if not shutil.which(tool):
            return f"{tool} not found (apt-get install util-linux)"
    try:
        ver = cgroups.version()
    except ClusterError as exc:
        return exc.message
    if ver == 1 and not hierarchies():
        return "no name=systemd or cgroup2 hierarchy to delegate to a user manager"
    return None


def runtime_dir(uid: int) -> Path:
    return RUNTIME_ROOT / str(uid)


def delegated(group: NodeGroup, uid: int) -> list[Path]:
    """The manager's own cgroup(s), one per hierarchy systemd manages."""
    name = f"user@{uid}.service"
    if group.ver == 2:
        return [group.cpu / name]
    return [h / group.rel / name for h in hierarchies()]


def prepare(group: NodeGroup, uid: int, gid: int) -> None:
    """Fresh delegated cgroups and a fresh /run/user/<uid> (a tmpfs on a Pi: empty at boot)."""
    if uid <= 0:
        raise ClusterError(f"refusing a user manager for uid {uid}")
    try:
        for d in delegated(group, uid):
            cgroups.rmdir_tree(d)
            d.mkdir(parents=True, exist_ok=True)
            for path in (d, *(d / f for f in DELEGATED_FILES)):
                if path.exists():
                    os.chown(path, uid, gid)
        rt = runtime_dir(uid)
        shutil.rmtree(rt, ignore_errors=True)
        RUNTIME_ROOT.mkdir(mode=0o755, exist_ok=True)
        rt.mkdir(mode=0o700)
        os.chown(rt, uid, gid)
        rt.chmod(0o700)
    except OSError as exc:
        raise ClusterError(f"cannot prepare the user manager: {exc}") from None


def cleanup(group: NodeGroup, uid: int) -> None:
    """Remove the delegated cgroups (with their parents when empty) and /run/user/<uid>."""
    if uid <= 0:
        return
    for d in delegated(group, uid):
        cgroups.rmdir_tree(d)
        if group.ver == 1:  # the node's dirs in these hierarchies exist only for the manager
            for parent in (d.parent, d.parent.parent, d.parent.parent.parent):
                try:
                    parent.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    break  # another node or cluster still uses it
    shutil.rmtree(runtime_dir(uid), ignore_errors=True)


@dataclass(frozen=True)
class ManagerUser:
    """Who a node's systemd user manager runs as, and the sysroot its units see."""

    name: str
    uid: int
    gid: int
    home: Path
    sysroot: Path


def launcher(who: ManagerUser, group: NodeGroup, log: Path, pid_file: Path) -> tuple[str, str]:
    """Shell for the node's boot, run as root in its new mount namespace: (before sshd starts,
    after sshd listens). Before: the tmpfs on /run/systemd. After: the manager, detached (own
    session, output to `log`), its pid in `pid_file`."""
    user, uid, gid, home, sysroot = who.name, who.uid, who.gid, who.home, who.sysroot
    path = provision.node_path(sysroot)
    q = shlex.quote
    conf = f'[Manager]\nDefaultEnvironment="EDGEKIT_SYSROOT={sysroot}" "PATH={path}"\n'
    before = "\n".join([
        "mkdir -p /run/systemd",
        f"mount -t tmpfs -o {TMPFS_OPTIONS} edgekit-run-systemd /run/systemd || exit 1",
        f"mkdir -p /run/systemd/system {q(str(Path(CONF).parent))}",
        f"printf %s {q(conf)} > {CONF}",
    ])
    env = [f"HOME={home}", f"USER={user}", f"LOGNAME={user}", "SHELL=/bin/bash",
           f"XDG_RUNTIME_DIR={runtime_dir(uid)}", f"EDGEKIT_SYSROOT={sysroot}", f"PATH={path}"]
    manager = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups",
               "env", "-i", *env, str(binary()), "--user"]
    joins = "".join(f"echo $$ > {q(str(d / 'cgroup.procs'))}; " for d in delegated(group, uid))
    inner = f"{joins}exec {shlex.join(manager)}"
    after = (f"setsid sh -c {q(inner)} </dev/null >>{q(str(log))} 2>&1 &\n"
             f"echo $! > {q(str(pid_file))}")
    return before, after


def is_manager(pid: int) -> bool:
    try:
        cmd = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return bool(cmd) and cmd[0].endswith("/systemd") and "--user" in cmd


def wait_started(pid_file: Path, uid: int, log: Path, timeout_s: float = 60.0) -> int:
    """The manager's pid once it listens on $XDG_RUNTIME_DIR/systemd/private."""
    socket = runtime_dir(uid) / "systemd" / "private"
    deadline = time.monotonic() + timeout_s
    pid = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            pid = pid or int(pid_file.read_text().split()[0])
        if pid and not psutil.pid_exists(pid):
            break
        if pid and socket.is_socket() and is_manager(pid):
            return pid
        time.sleep(0.05)
    tail = log.read_text()[-1500:].strip() if log.exists() else ""
    state = "exited" if pid and not psutil.pid_exists(pid) else "did not start in time"
    raise ClusterError(f"systemd --user {state}: {tail}", where=str(log))


def stop(pid: int, timeout_s: float = 60.0) -> bool:
    """Ask the manager to exit as at shutdown (SIGTERM: it starts exit.target, stopping every
    unit); True when it is gone in time."""
    if not pid or not is_manager(pid):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        psutil.Process(pid).wait(timeout_s)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return False
    return True
