"""The virtual cluster for real: sshd over paramiko, Unix users, cgroups (root only)."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from vcluster_helpers import connect, needs_cluster, run

from edgekit import inventory
from edgekit.errors import ClusterError
from edgekit.virtual import state, usermanager
from edgekit.virtual.cgroups import NodeGroup
from edgekit.virtual.cluster import NodeSpec, VirtualCluster

pytestmark = [needs_cluster, pytest.mark.cluster]


def leftovers(vc: VirtualCluster) -> list[str]:
    """Everything of this cluster still on the machine (should be nothing after down)."""
    found = []
    ports = {n.port for n in vc.nodes}
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in ports:
            found.append(f"port {conn.laddr.port} listening")
    for n in vc.nodes:
        try:
            uid = pwd.getpwnam(n.user).pw_uid
            found.append(f"user {n.user}")
        except KeyError:
            uid = None
        for p in psutil.process_iter(["uids", "cmdline"]):
            if uid is not None and p.info["uids"] and p.info["uids"].real == uid:
                found.append(f"process {p.pid} of {n.user}")
            if any(str(vc.record.run_dir) in arg for arg in p.info["cmdline"] or []):
                found.append(f"process {p.pid}: {p.info['cmdline']}")
        if NodeGroup(vc.record.id, n.name).exists():
            found.append(f"cgroup of {n.name}")
        if n.init == "systemd":  # the user manager's cgroups and runtime dir
            found += [str(d) for d in usermanager.delegated(NodeGroup(vc.record.id, n.name),
                                                            n.uid) if d.exists()]
            if usermanager.runtime_dir(n.uid).exists():
                found.append(str(usermanager.runtime_dir(n.uid)))
    if vc.record.run_dir.exists():
        found.append(str(vc.record.run_dir))
    if "edgekit-run-systemd" in Path("/proc/self/mounts").read_text():
        found.append("a node's /run/systemd tmpfs is visible outside its mount namespace")
    kh = vc.known_hosts_path
    if kh.exists() and any(n.host_key_line in kh.read_text() for n in vc.nodes):
        found.append("known_hosts lines")
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "edgekit.virtual.supervisor" in cmd and str(vc.home) in cmd:
            found.append(f"supervisor {p.pid}")
    return found


def test_up_then_down_leaves_nothing(tmp_path: Path):
    # a few commands leave work behind through the node's sshd, a daemon included
    vc = VirtualCluster.up([NodeSpec("pi4"), NodeSpec("pi5")], home=tmp_path)
    with connect(vc, "pi1") as c:
        run(c, "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!")
        run(c, "nohup sh -c 'while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &")
        if vc.record.node("pi1").init == "systemd":  # a unit of its systemd user manager
            assert run(c, "systemd-run --user --unit=ek-sleep sleep 600")[0] == 0
    before = leftovers(vc)
    assert any("process" in x for x in before) and any("cgroup" in x for x in before)
    vc.down()
    assert leftovers(vc) == []
    assert not state.record_path(tmp_path).exists()
    vc.down()  # idempotent


def test_second_up_is_refused_naming_the_running_cluster(shared_cluster: VirtualCluster):
    with pytest.raises(ClusterError) as err:
        VirtualCluster.up([NodeSpec("pi4")], home=shared_cluster.home)
    assert shared_cluster.name in str(err.value) and "already running" in str(err.value)


def test_failed_up_cleans_up_after_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from edgekit.virtual import cluster as cluster_mod

    def broken(home: Path, rec: state.ClusterRecord) -> None:
        raise ClusterError("supervisor refused to start (test)")

    monkeypatch.setattr(cluster_mod, "start_supervisor", broken)
    users_before = {u.pw_name for u in pwd.getpwall()}
    dirs_before = set(state.RUN_ROOT.iterdir()) if state.RUN_ROOT.exists() else set()
    with pytest.raises(ClusterError, match="refused to start"):
        VirtualCluster.up([NodeSpec("pi4"), NodeSpec("pi5")], home=tmp_path)
    assert state.load(tmp_path) is None
    assert {u.pw_name for u in pwd.getpwall()} == users_before
    dirs_after = set(state.RUN_ROOT.iterdir()) if state.RUN_ROOT.exists() else set()
    assert dirs_after <= dirs_before
    assert not state.known_hosts_path(tmp_path).read_text().strip()


def test_inventory_is_what_the_rest_of_edgekit_reads(shared_cluster: VirtualCluster):
    inv = inventory.load(shared_cluster.inventory_path)
    assert [n.name for n in inv] == ["pi1", "pi2", "pi3"]
    assert [n.labels["board"] for n in inv] == ["pi4", "pi5", "pi4"]
    for node, rec in zip(inv, shared_cluster.nodes, strict=True):
        assert (node.host, node.port, node.user) == ("127.0.0.1", rec.port, rec.user)
        assert node.key == str(shared_cluster.identity_path)
    assert os.stat(shared_cluster.identity_path).st_mode & 0o777 == 0o600
    lines = shared_cluster.known_hosts_path.read_text().splitlines()
    assert all(any(line == n.host_key_line for line in lines) for n in shared_cluster.nodes)


def test_each_node_has_its_own_host_key(shared_cluster: VirtualCluster):
    keys = {n.host_key_line.split()[-1] for n in shared_cluster.nodes}
    assert len(keys) == len(shared_cluster.nodes)


def test_node_identity_over_ssh(shared_cluster: VirtualCluster):
    expected = {"pi1": ("Raspberry Pi 4", False), "pi2": ("Raspberry Pi 5", True)}
    for name, (model, dotprod) in expected.items():
        with connect(shared_cluster, name) as c:
            rc, out, _ = run(c, "cat $EDGEKIT_SYSROOT/proc/device-tree/model")
            assert rc == 0 and out.startswith(model) and out.endswith("\0")
            _, out, _ = run(c, "grep -m1 ^Features $EDGEKIT_SYSROOT/proc/cpuinfo")
            assert ("asimddp" in out.split()) == dotprod
            _, out, _ = run(c, "command -v vcgencmd; echo $EDGEKIT_SYSROOT")
            path, root = out.split()
            assert path == f"{root}/usr/bin/vcgencmd"


def test_login_shell_keeps_the_node_path(shared_cluster: VirtualCluster):
    with connect(shared_cluster, "pi1") as c:
        _, out, _ = run(c, "bash -lc 'command -v vcgencmd'")
        assert out.strip() == f"{shared_cluster.sysroot('pi1')}/usr/bin/vcgencmd"


def test_vcgencmd_over_ssh(shared_cluster: VirtualCluster):
    with connect(shared_cluster, "pi2") as c:
        assert run(c, "vcgencmd get_throttled")[1].startswith("throttled=0x")
        assert run(c, "vcgencmd measure_temp")[1].rstrip().endswith("'C")
        assert run(c, "vcgencmd measure_clock arm")[1].startswith("frequency(48)=")
        assert "VDD_CORE_A current(7)=" in run(c, "vcgencmd pmic_read_adc")[1]
        rc, out, _ = run(c, "vcgencmd bogus")
        assert rc != 0 and out.startswith("error=")
    with connect(shared_cluster, "pi1") as c:
        assert run(c, "vcgencmd pmic_read_adc")[0] != 0  # a Pi 4 has no PMIC ADC


def test_homes_are_isolated(shared_cluster: VirtualCluster):
    with connect(shared_cluster, "pi1") as c:
        assert run(c, "echo secret > ~/mine && pwd")[0] == 0
        home1 = run(c, "pwd")[1].strip()
    with connect(shared_cluster, "pi2") as c:
        rc, out, _ = run(c, f"cat {home1}/mine; ls {home1}")
        assert rc != 0 and "secret" not in out
        assert run(c, "test -e ~/mine")[0] != 0


def test_sftp_works_and_lands_in_the_node_home(shared_cluster: VirtualCluster):
    with connect(shared_cluster, "pi3") as c:
        sftp = c.open_sftp()
        with sftp.open("uploaded.txt", "w") as fh:
            fh.write("hello")
        sftp.close()
        assert run(c, "cat ~/uploaded.txt")[1] == "hello"


def test_linux32_node_reports_a_32_bit_machine(shared_cluster: VirtualCluster):
    with connect(shared_cluster, "pi3") as c:
        assert run(c, "uname -m")[1].strip() in ("i686", "i386", "armv7l")
    with connect(shared_cluster, "pi1") as c:
        assert run(c, "uname -m")[1].strip() == os.uname().machine


def test_everything_started_over_ssh_is_in_the_node_cgroup(shared_cluster: VirtualCluster):
    group = shared_cluster.group("pi2")
    with connect(shared_cluster, "pi2") as c:
        _, out, _ = run(c, "setsid sleep 30 </dev/null >/dev/null 2>&1 & echo $!")
        assert int(out) in group.pids()
        run(c, f"kill {int(out)}")


def test_status_and_heat(shared_cluster: VirtualCluster):
    rows = {r["name"]: r for r in shared_cluster.status()}
    assert set(rows) == {"pi1", "pi2", "pi3"}
    assert rows["pi2"]["cap_cores"] > 2 * rows["pi1"]["cap_cores"]
    assert sum(r["cap_cores"] for r in rows.values()) <= (os.cpu_count() or 1)
    assert {"temp_c", "freq_mhz", "throttled", "util"} <= set(rows["pi1"])
    shared_cluster.heat("pi3", ambient_c=30.0)
    conditions = json.loads((state.state_dir(shared_cluster.home) / "conditions.json").read_text())
    assert conditions["pi3"]["ambient_c"] == 30.0


def test_cli_up_status_down(tmp_path: Path):
    env = {**os.environ, "EDGEKIT_HOME": str(tmp_path)}
    edgekit = [sys.executable, "-m", "edgekit.cli.main", "cluster"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*edgekit, *args], env=env, capture_output=True, text=True)

    up = cli("up", "--nodes", "2", "--board", "pi5,pi4", "--cooling", "fan", "--json")
    assert up.returncode == 0, up.stderr
    data = json.loads(up.stdout)
    assert [n["board"] for n in data["nodes"]] == ["pi5", "pi4"]
    try:
        again = cli("up", "--nodes", "1")
        assert again.returncode == ClusterError.exit_code and "already running" in again.stderr
        status = json.loads(cli("status", "--json").stdout)
        assert status["running"] and len(status["nodes"]) == 2
        heat = cli("heat", "pi1", "--cooling", "none", "--ambient", "30", "--json")
        assert json.loads(heat.stdout)["cooling"] == "none"
        reboot = cli("reboot", "pi2", "--json")
        assert reboot.returncode == 0, reboot.stderr
        assert json.loads(reboot.stdout)["port"] == data["nodes"][1]["port"]
    finally:
        down = cli("down", "--json")
    assert down.returncode == 0 and json.loads(down.stdout)["removed"]
    assert cli("down", "--json").returncode == 0  # idempotent


def test_link_gives_each_node_its_own_shaped_network(tmp_path: Path):
    vc = VirtualCluster.up([NodeSpec("pi4"), NodeSpec("pi5")], home=tmp_path, link="1gbit")
    try:
        inv = inventory.load(vc.inventory_path)
        assert {n.host for n in inv}.isdisjoint({"127.0.0.1"}) and all(n.port is None for n in inv)
        for node in vc.nodes:
            assert node.port == 22 and "1gbit" in node.shaper
            with connect(vc, node.name) as c:
                cmd = "cat /proc/net/fib_trie $EDGEKIT_SYSROOT/proc/device-tree/model"
                _, out, _ = run(c, cmd)
                assert node.address in out and "Raspberry Pi" in out
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert all(n.netns in listed for n in vc.nodes)
    finally:
        vc.down()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not any(n.netns in listed for n in vc.nodes)
    assert f"ekv{vc.record.id}h" not in links
    assert leftovers(vc) == []
