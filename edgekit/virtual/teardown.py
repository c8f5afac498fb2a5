"""Undo everything a cluster record says exists, in an order that always works: stop the
supervisor, kill every process in each node's cgroup (sshd and all it started, daemons
included, the node's systemd user manager and its units too), then remove groups (the
manager's delegated ones and /run/user/<uid> as well), users, known_hosts lines, files.
Safe to repeat, and safe on the record of an `up` that died half-way (every step tolerates
things that were never made).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import time
from pathlib import Path

import psutil

from edgekit.errors import ClusterError
from edgekit.virtual import netlink, provision, state, usermanager
from edgekit.virtual.cgroups import NodeGroup

STATE_FILES = (
    "status.json",
    "conditions.json",
    "inventory.txt",
    "id_ed25519",
    "id_ed25519.pub",
    "supervisor.pid",
    "supervisor.log",
)


def supervisor_pid(home: Path, cluster_id: str) -> int | None:
    """The pid of this cluster's supervisor if it is alive (checked by its command line)."""
    try:
        pid = int((state.state_dir(home) / "supervisor.pid").read_text().split()[0])
        cmd = psutil.Process(pid).cmdline()
    except (FileNotFoundError, ValueError, IndexError, psutil.Error):
        return None
    if "edgekit.virtual.supervisor" in cmd and str(home) in cmd:
        return pid
    return None


def stop_supervisor(home: Path, cluster_id: str) -> None:
    pid = supervisor_pid(home, cluster_id)
    if pid is None:
        return
    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    except psutil.NoSuchProcess:
        pass


def kill_user_processes(user: str) -> None:
    """Belt and braces: any process of the node's user that is somehow outside its cgroup."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return
    for _ in range(50):
        # a zombie is dead already and holds nothing userdel or rmdir minds; the node's user
        # manager (parent: the host's init) stays one for ~2 s here, which cost every teardown
        procs = [
            p
            for p in psutil.process_iter(["uids", "status"])
            if p.info["uids"] and p.info["uids"].real == uid
            and p.info["status"] != psutil.STATUS_ZOMBIE
        ]
        if not procs:
            return
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        time.sleep(0.05)
    raise ClusterError(f"processes of user {user} survive SIGKILL")


def _uid(user: str) -> int:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return 0


def kill_sshd(pid: int, config: Path) -> None:
    """The node's sshd if it is still there (e.g. it never joined its group)."""
    try:
        proc = psutil.Process(pid)
        if str(config) in proc.cmdline():
            proc.kill()
            proc.wait(timeout=5)
    except (psutil.Error, ValueError):
        pass


def teardown(home: Path, rec: state.ClusterRecord) -> list[str]:
    """Remove the cluster; returns what was done, one line per step, for the CLI."""
    done: list[str] = []
    errors: list[str] = []
    stop_supervisor(home, rec.id)
    done.append("supervisor stopped")
    for node in rec.nodes:
        try:
            group = NodeGroup(rec.id, node.name)
            if group.exists():
                group.kill_all()
            if node.sshd_pid:
                kill_sshd(node.sshd_pid, node.node_dir(rec.run_dir) / "sshd_config")
            kill_user_processes(node.user)
            if node.netns:
                netlink.remove(rec.id, int(node.name[2:]))
            if node.init == "systemd":  # its manager died with the group: its cgroups, /run/user
                usermanager.cleanup(group, node.uid or _uid(node.user))
            group.remove()
            provision.delete_user(node.user)
            done.append(f"{node.name}: processes, cgroup and user {node.user} removed")
        except (ClusterError, OSError) as exc:
            errors.append(f"{node.name}: {exc}")
    lines = [n.host_key_line for n in rec.nodes if n.host_key_line]
    state.remove_known_hosts(state.known_hosts_path(home), lines)
    if rec.run_dir.is_relative_to(state.RUN_ROOT) and rec.run_dir != state.RUN_ROOT:
        shutil.rmtree(rec.run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # another cluster (other EDGEKIT_HOME) lives there
            state.RUN_ROOT.rmdir()
    if errors:  # keep the record so a second `down` can finish the job
        raise ClusterError("cluster only partly removed: " + "; ".join(errors))
    sdir = state.state_dir(home)
    for name in STATE_FILES:
        (sdir / name).unlink(missing_ok=True)
    state.record_path(home).unlink(missing_ok=True)
    done.append("state, known_hosts lines and node files removed")
    if os.path.exists(rec.run_dir):
        raise ClusterError("node files could not be removed", where=str(rec.run_dir))
    return done
