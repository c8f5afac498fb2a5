"""Power for one virtual node: boot (its sshd and, on `init=systemd` nodes, its systemd user
manager in the node's own mount namespace) and reboot (shut down, kill what is left, boot).

A reboot keeps what a board keeps across one - the user, home, deploy root, sysroot, cgroup,
port and host key - and loses what it loses: every process, SSH session and /run/user/<uid>.
Units the user enabled (WantedBy=default.target) come back with the manager, as on a Pi with
lingering on.
"""

from __future__ import annotations

import pwd
from pathlib import Path

from edgekit.errors import ClusterError
from edgekit.virtual import netlink, provision, rootfs, state, teardown, usermanager
from edgekit.virtual.cgroups import NodeGroup


def boot(rec: state.ClusterRecord, node: state.NodeRecord) -> None:
    """Start the node's sshd (its config is written) and user manager; records their pids."""
    ndir = node.node_dir(rec.run_dir)
    group = NodeGroup(rec.id, node.name)
    for name in ("sshd.pid", "manager.pid"):  # a previous boot's: must not be taken for ours
        (ndir / name).unlink(missing_ok=True)
    prefix = tuple(netlink.enter(node.netns)) if node.netns else ()
    boot_sh = None
    if node.init == "systemd":
        entry = pwd.getpwnam(node.user)
        usermanager.prepare(group, entry.pw_uid, entry.pw_gid)
        who = usermanager.ManagerUser(node.user, entry.pw_uid, entry.pw_gid,
                                      node.home(rec.run_dir), node.sysroot(rec.run_dir))
        boot_sh = usermanager.launcher(who, group, ndir / "manager.log", ndir / "manager.pid")
    if node.arch == "aarch64":  # its chroot is assembled in its own mount namespace
        boot_sh = (rootfs.mount_script(ndir, Path(node.rootfs), node.home(rec.run_dir),
                                       node.sysroot(rec.run_dir)), "")
    node.sshd_pid = provision.start_sshd(
        provision.SshdFiles.in_dir(ndir), group.procs_files(), node.linux32, prefix, boot_sh
    )
    if node.init == "systemd":
        node.manager_pid = usermanager.wait_started(ndir / "manager.pid", node.uid,
                                                    ndir / "manager.log")


def power_off(rec: state.ClusterRecord, node: state.NodeRecord, graceful: bool = True) -> None:
    """graceful: the manager stops its units first (as `systemctl poweroff` would); then
    every process of the node is killed, sshd and SSH sessions included."""
    if graceful and node.manager_pid:
        usermanager.stop(node.manager_pid)  # what did not stop in time is killed below
    group = NodeGroup(rec.id, node.name)
    if group.exists():
        group.kill_all()
    if node.sshd_pid:
        teardown.kill_sshd(node.sshd_pid, node.node_dir(rec.run_dir) / "sshd_config")
    teardown.kill_user_processes(node.user)
    node.sshd_pid = node.manager_pid = 0


def reboot(rec: state.ClusterRecord, node: state.NodeRecord, graceful: bool = True) -> None:
    if not node.port:
        raise ClusterError(f"{node.name} was never started", hint="edgekit cluster down; up")
    power_off(rec, node, graceful)
    boot(rec, node)
