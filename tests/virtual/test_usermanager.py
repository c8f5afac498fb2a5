"""Each virtual node's systemd user manager (edgekit/virtual/usermanager.py): started as a
lingering user's manager is on a Pi at boot, inside the node's cgroups and a mount namespace
its sshd shares; a reboot of the node brings its enabled units back."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest
from vcluster_helpers import connect, needs_cluster, run

from edgekit.virtual import usermanager
from edgekit.virtual.cluster import VirtualCluster

pytestmark = [needs_cluster, pytest.mark.cluster]
UNIT = """[Unit]
Description=edgekit test unit
[Service]
ExecStart=/bin/sleep 600
Restart=always
[Install]
WantedBy=default.target
"""


@pytest.fixture
def vc(shared_cluster: VirtualCluster) -> VirtualCluster:
    if shared_cluster.record.node("pi2").init != "systemd":
        pytest.skip(f"no systemd user managers here: {usermanager.unavailable()}")
    return shared_cluster


def _dead(pid: int) -> bool:
    """Gone, or a zombie its parent (the host's init) has not reaped yet."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _main_pid(c, unit: str) -> int:
    return int(run(c, f"systemctl --user show -p MainPID --value {unit}")[1].strip() or 0)


def test_manager_runs_as_a_lingering_users_manager_on_a_pi(vc: VirtualCluster):
    rec = vc.record.node("pi2")
    assert rec.manager_pid in vc.group("pi2").pids()  # under the board's CPU cap
    assert f"/user@{rec.uid}.service/" in Path(f"/proc/{rec.manager_pid}/cgroup").read_text()
    rt = usermanager.runtime_dir(rec.uid).stat()
    assert (rt.st_uid, rt.st_mode & 0o777) == (rec.uid, 0o700)
    with connect(vc, "pi2") as c:
        _, out, _ = run(c, "echo $XDG_RUNTIME_DIR; test -d /run/systemd/system && echo booted; "
                           "systemctl --user is-system-running --wait")
        assert out.split()[:2] == [str(usermanager.runtime_dir(rec.uid)), "booted"]
        assert out.split()[2] in ("running", "degraded"), out
        # units see the node's files and firmware tools, as sessions do
        _, env, _ = run(c, "systemd-run --user --wait --pipe sh -c "
                           "'echo $EDGEKIT_SYSROOT; command -v vcgencmd'")
        assert env.split() == [str(vc.sysroot("pi2")), f"{vc.sysroot('pi2')}/usr/bin/vcgencmd"]
    # the node's /run/systemd is its own: the host does not see it
    assert "edgekit-run-systemd" not in Path("/proc/self/mounts").read_text()


def test_reboot_brings_enabled_units_back(vc: VirtualCluster):
    with connect(vc, "pi2") as c:
        home = run(c, "echo $HOME")[1].strip()
        run(c, "mkdir -p ~/.config/systemd/user")
        with c.open_sftp() as sftp, sftp.open(f"{home}/.config/systemd/user/ek-t.service",
                                              "w") as fh:
            fh.write(UNIT)
        assert run(c, "systemctl --user daemon-reload && "
                      "systemctl --user enable --now ek-t.service")[0] == 0
        old = _main_pid(c, "ek-t.service")
        stray = int(run(c, "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!")[1])
    rec = vc.reboot("pi2")
    assert rec.manager_pid and _dead(stray) and _dead(old)
    try:
        with connect(vc, "pi2") as c:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _main_pid(c, "ek-t.service") == 0:
                time.sleep(0.2)
            assert run(c, "systemctl --user is-active ek-t.service")[1].strip() == "active"
            assert _main_pid(c, "ek-t.service") in vc.group("pi2").pids()
    finally:
        with connect(vc, "pi2") as c:
            run(c, "systemctl --user disable --now ek-t.service; "
                   "rm ~/.config/systemd/user/ek-t.service; systemctl --user daemon-reload")
