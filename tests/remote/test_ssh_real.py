"""SSH layer and `nodes check` against real OpenSSH servers on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from remote_sshd import Sshd, free_port, needs_sshd, start_sshd, trust

from edgekit import inventory
from edgekit.remote.hostkeys import project_known_hosts
from edgekit.remote.probe import check_nodes
from edgekit.remote.ssh import Connection, RemoteCommandError, run_each


def line(server: Sshd, name: str = "pi1", key: Path | None = None) -> str:
    return f"root@127.0.0.1:{server.port} name={name} key={key or server.client_key}"


def node(server: Sshd, **kw):  # type: ignore[no-untyped-def]
    return inventory.parse(line(server, **kw)).nodes[0]


def test_unknown_host_key_refused_then_accepted_once(edgekit_home: Path, sshd: Sshd) -> None:
    n = node(sshd)
    [rep] = check_nodes([n])
    assert not rep.reachable and rep.kind == "hostkey-unknown"
    assert "--accept-new-host-keys" in rep.verdict and "SHA256:" in rep.verdict
    assert not project_known_hosts().exists()
    for _ in range(2):
        [rep] = check_nodes([n], accept_new_host_keys=True)
        assert rep.reachable, rep.verdict
    assert len(project_known_hosts().read_text().splitlines()) == 1  # recorded once
    [rep] = check_nodes([n])  # now known: no opt-in needed
    assert rep.reachable


def test_changed_host_key_refused_loudly_even_with_opt_in(
    edgekit_home: Path, sshd: Sshd, tmp_path: Path
) -> None:
    other = tmp_path / "other_host"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, b64 = (other.with_suffix(".pub")).read_text().split()[:2]
    (edgekit_home / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {kind} {b64}\n")
    [rep] = check_nodes([node(sshd)], accept_new_host_keys=True)
    assert rep.kind == "hostkey-changed"
    assert "HOST KEY CHANGED" in rep.verdict and "man-in-the-middle" in rep.verdict


def test_user_known_hosts_is_honoured(edgekit_home: Path, sshd: Sshd) -> None:
    known = Path.home() / ".ssh" / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_pub}\n")
    [rep] = check_nodes([node(sshd)])
    assert rep.reachable, rep.verdict


def test_auth_failure_refused_port_dns_and_timeout_each_reported(
    edgekit_home: Path, sshd: Sshd, tmp_path: Path
) -> None:
    trust(edgekit_home, sshd)
    wrong = tmp_path / "wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    silent = socket.socket()  # accepts TCP, never speaks SSH: a hung board
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    closed = free_port()
    text = "\n".join([
        line(sshd, "good"),
        line(sshd, "badkey", key=wrong).replace("127.0.0.1", "localhost"),
        f"root@127.0.0.1:{closed} name=refused key={sshd.client_key}",
        f"root@no-such-host.invalid name=dns key={sshd.client_key}",
        f"root@127.0.0.1:{silent.getsockname()[1]} name=hung key={sshd.client_key}",
    ])
    (edgekit_home / "known_hosts").write_text(
        f"[127.0.0.1]:{sshd.port} {sshd.host_pub}\n[localhost]:{sshd.port} {sshd.host_pub}\n"
    )
    reports = {r.name: r for r in check_nodes(list(inventory.parse(text)), connect_timeout_s=2)}
    silent.close()
    assert reports["good"].ready, reports["good"].verdict  # one failure never hides the others
    assert reports["badkey"].kind == "auth"
    assert reports["refused"].kind == "refused"
    assert reports["dns"].kind == "dns"
    assert reports["hung"].kind == "timeout"
    assert all(not reports[n].ready for n in ("badkey", "refused", "dns", "hung"))


def test_32_bit_node_refused_for_serving(edgekit_home: Path, tmp_path: Path) -> None:
    needs_sshd()
    server = start_sshd(tmp_path / "s32", personality="linux32")
    try:
        trust(edgekit_home, server)
        [rep] = check_nodes([node(server)])
        assert rep.reachable and not rep.ready
        assert rep.arch in ("i686", "i386") and "32-bit" in rep.verdict
    finally:
        server.proc.kill()


def test_commands_reuse_connection_timeout_and_stdin(edgekit_home: Path, sshd: Sshd) -> None:
    trust(edgekit_home, sshd)
    with Connection(node(sshd)) as conn:
        assert conn.run("cat", stdin="secret-on-stdin").stdout == "secret-on-stdin"
        first = conn.client()
        assert conn.run("echo hi").stdout.strip() == "hi"
        assert conn.client() is first  # reused, not reopened
        assert conn.run("exit 3").exit_code == 3
        with pytest.raises(RemoteCommandError, match="exit code 3"):
            conn.run("echo boom >&2; exit 3", check=True)
        with pytest.raises(RemoteCommandError, match="timed out"):
            conn.run("sleep 5", timeout_s=0.5)


def test_proxyjump_through_a_real_jump_host(edgekit_home: Path, tmp_path: Path) -> None:
    needs_sshd()
    jump = start_sshd(tmp_path / "jump")
    target = start_sshd(tmp_path / "target", client_key=jump.client_key)
    try:
        trust(edgekit_home, jump)
        trust(edgekit_home, target)
        cfg = Path.home() / ".ssh" / "config"
        cfg.write_text(
            f"Host behind\n  HostName 127.0.0.1\n  Port {target.port}\n  User root\n"
            f"  IdentityFile {jump.client_key}\n  ProxyJump root@127.0.0.1:{jump.port}\n"
            f"Host 127.0.0.1\n  IdentityFile {jump.client_key}\n"
        )
        n = inventory.parse("behind name=b").nodes[0]
        out = run_each([n], lambda nd: Connection(nd).run("echo via-jump").stdout.strip())
        assert out["b"].value == "via-jump", out["b"].error
    finally:
        jump.proc.kill()
        target.proc.kill()


def test_cli_nodes_check_json_and_exit_codes(edgekit_home: Path, sshd: Sshd) -> None:
    trust(edgekit_home, sshd)
    inv = edgekit_home / "pis.txt"
    inv.write_text(line(sshd) + "\n")
    cmd = [sys.executable, "-m", "edgekit.cli.main", "nodes", "check", "--nodes", str(inv)]
    ok = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["ready"] == 1 and data["nodes"][0]["arch"] == "x86_64"
    inv.write_text(line(sshd) + f"\nroot@127.0.0.1:{free_port()} name=down\n")
    bad = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 4
    assert json.loads(bad.stdout)["ready"] == 1
    inv.write_text("pi1 nmae=x\n")
    broken = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert broken.returncode == 3 and f"{inv}:1" in broken.stderr


def test_parallel_pool_is_bounded_and_reports_all() -> None:
    nodes = list(inventory.parse("\n".join(f"h{i}" for i in range(10))).nodes)
    active, peak, lock = [0], [0], threading.Lock()

    def work(n):  # type: ignore[no-untyped-def]
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        threading.Event().wait(0.05)
        with lock:
            active[0] -= 1
        if n.name == "h3":
            raise RuntimeError("boom")
        return n.name

    from edgekit.remote.ssh import run_each as run

    out = run(nodes, work, max_parallel=3)
    assert len(out) == 10 and peak[0] <= 3
    assert not out["h3"].ok and "boom" in (out["h3"].error or "")
    assert all(out[f"h{i}"].ok for i in range(10) if i != 3)
