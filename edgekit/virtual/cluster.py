"""The virtual Raspberry Pi cluster: Python API behind `edgekit cluster up/down/status/heat`.

specs = [NodeSpec("pi4", cooling="none"), NodeSpec("pi5", cooling="fan")]
with VirtualCluster.up(specs, home=tmp) as vc:
    inventory.load(vc.inventory_path)  # user@127.0.0.1:PORT name=pi1 key=... board=pi4 ...
    vc.heat("pi1", ambient_c=40)
    vc.status()
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit import inventory
from edgekit.errors import ClusterError
from edgekit.virtual import (
    boards,
    netlink,
    power,
    provision,
    qemu,
    rootfs,
    state,
    teardown,
    thermal,
    usermanager,
)
from edgekit.virtual.cgroups import NodeGroup
from edgekit.virtual.specs import NodeSpec, check_arches, resolve_inits
from edgekit.virtual.sysroot import Reading, build, publish, write_atomic

Progress = Callable[[str], None]


def require_root() -> None:
    if os.geteuid() != 0:
        raise ClusterError(
            "the virtual cluster needs root: it creates one Unix user, one cgroup and one "
            "sshd per node",
            hint="run it as root (e.g. sudo edgekit cluster up ...)",
        )
    for tool in (provision.SSHD, "ssh-keygen", "useradd", "setarch"):
        if not shutil.which(tool):
            raise ClusterError(f"{tool} not found", hint="apt-get install openssh-server")


class VirtualCluster:
    """A running cluster (from `up` or `current`); also a context manager that downs it."""

    def __init__(self, record: state.ClusterRecord, home: Path):
        self.record = record
        self.home = home

    # --- create ----------------------------------------------------------------------------
    @classmethod
    def up(
        cls,
        specs: list[NodeSpec],
        home: Path | None = None,
        budget_cores: float | None = None,
        progress: Progress | None = None,
        link: str | None = None,
    ) -> VirtualCluster:
        """Start the nodes. link: e.g. "1gbit" puts each node's sshd in its own network
        namespace behind a veth pair shaped with tc netem (port 22 on 10.237.S.x)."""
        require_root()
        if not specs:
            raise ClusterError("a cluster needs at least one node")
        home = state.edgekit_home(home)
        say = progress or (lambda _msg: None)
        with state.locked(home):
            refuse_if_present(home)
            rec = plan(specs, budget_cores or boards.cpu_budget_cores(), link)
            state.save(rec, home)  # before anything exists, so `down` can always undo
            try:
                create(rec, home, say)
            except BaseException:
                say("failed: removing what was created")
                teardown.teardown(home, rec)
                raise
        return cls(rec, home)

    @classmethod
    def current(cls, home: Path | None = None) -> VirtualCluster | None:
        home = state.edgekit_home(home)
        rec = state.load(home)
        return cls(rec, home) if rec else None

    # --- use -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.record.name

    @property
    def nodes(self) -> list[state.NodeRecord]:
        return self.record.nodes

    @property
    def inventory_path(self) -> Path:
        return state.state_dir(self.home) / "inventory.txt"

    @property
    def identity_path(self) -> Path:
        return state.state_dir(self.home) / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        return state.known_hosts_path(self.home)

    def sysroot(self, node: str) -> Path:
        return self.record.node(node).sysroot(self.record.run_dir)

    def group(self, node: str) -> NodeGroup:
        return NodeGroup(self.record.id, self.record.node(node).name)

    def running(self) -> bool:
        return teardown.supervisor_pid(self.home, self.record.id) is not None

    def status(self) -> list[dict[str, Any]]:
        measured = state.read_json(state.state_dir(self.home) / "status.json").get("nodes", {})
        rows = []
        for n in self.nodes:
            row: dict[str, Any] = {
                "name": n.name, "user": n.user, "address": n.address, "port": n.port,
                "board": n.board, "link": n.shaper or None,
                "cooling": n.cooling, "ambient_c": n.ambient_c, "ram_bytes": n.ram_bytes,
                "cap_cores": n.cap_cores, "linux32": n.linux32, "init": n.init, "arch": n.arch,
            }  # fmt: skip
            row.update(measured.get(n.name, {}))
            rows.append(row)
        return rows

    def heat(
        self, node: str, cooling: str | None = None, ambient_c: float | None = None
    ) -> dict[str, Any]:
        """Change a node's cooling and/or room temperature; the supervisor applies it next tick."""
        rec = self.record.node(node)
        if cooling is not None:
            boards.cooling(rec.board, cooling)  # validates
        with state.locked(self.home):
            path = state.state_dir(self.home) / "conditions.json"
            data = state.read_json(path)
            entry = data.setdefault(node, {})
            if cooling is not None:
                entry["cooling"] = cooling
            if ambient_c is not None:
                entry["ambient_c"] = float(ambient_c)
            write_atomic(path, _dumps(data))
        return {"name": node, **entry}

    def reboot(self, node: str, graceful: bool = True) -> state.NodeRecord:
        """Power-cycle one node (power.py): every process goes, enabled units come back."""
        return self._power(node, lambda rec, n: power.reboot(rec, n, graceful))

    def power_off(self, node: str, graceful: bool = True) -> state.NodeRecord:
        """Switch one node off (power.py): its processes go, SSH stops answering."""
        return self._power(node, lambda rec, n: power.power_off(rec, n, graceful))

    def power_on(self, node: str) -> state.NodeRecord:
        """Boot a node that was switched off: sshd, and its enabled units where it has a
        user manager."""
        return self._power(node, power.boot)

    def _power(self, node: str,
               act: Callable[[state.ClusterRecord, state.NodeRecord], None]) -> state.NodeRecord:
        """`act` on one node under the cluster's lock; its record saved whatever happens."""
        with state.locked(self.home):
            rec = self.record.node(node)
            try:
                act(self.record, rec)
            finally:
                state.save(self.record, self.home)
        return rec

    def down(self) -> list[str]:
        with state.locked(self.home):
            return teardown.teardown(self.home, self.record)

    def __enter__(self) -> VirtualCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def down(home: Path | None = None) -> list[str]:
    """Remove the cluster of this EDGEKIT_HOME if there is one (idempotent)."""
    home = state.edgekit_home(home)
    with state.locked(home):
        rec = state.load(home)
        if rec is None:
            return []
        return teardown.teardown(home, rec)


def refuse_if_present(home: Path) -> None:
    rec = state.load(home)
    if rec is None:
        return
    names = ", ".join(f"{n.name}:{n.port}" for n in rec.nodes)
    if teardown.supervisor_pid(home, rec.id) is not None:
        raise ClusterError(
            f"virtual cluster {rec.name} is already running ({len(rec.nodes)} nodes: {names})",
            where=str(state.record_path(home)),
            hint="run `edgekit cluster down` first",
        )
    raise ClusterError(
        f"virtual cluster {rec.name} was left behind by an earlier run (its supervisor is gone)",
        where=str(state.record_path(home)),
        hint="run `edgekit cluster down` to clean it up",
    )


def plan(
    specs: list[NodeSpec], budget_cores: float, link: str | None = None
) -> state.ClusterRecord:
    """Names, users and CPU caps for every node; checks boards and cooling names."""
    board_list = [boards.board(s.board) for s in specs]
    for s in specs:
        boards.cooling(s.board, s.cooling)
    check_arches(specs)
    inits = resolve_inits(specs)
    caps = boards.split_caps(board_list, budget_cores)
    while True:
        cid = secrets.token_hex(2)
        users = [f"ekv{cid}-pi{i + 1}" for i in range(len(specs))]
        taken = any(provision.user_exists(u) for u in users) or (state.RUN_ROOT / cid).exists()
        if not taken and not (link and netlink.subnet_in_use(cid)):
            break
    nodes = [
        state.NodeRecord(
            name=f"pi{i + 1}",
            user=users[i],
            board=s.board,
            cooling=s.cooling,
            ambient_c=float(s.ambient_c),
            ram_bytes=s.ram_bytes or board_list[i].default_ram_bytes,
            cap_cores=caps[i],
            linux32=s.linux32,
            start_temp_c=s.start_temp_c,
            link=netlink.parse_rate(link) if link else "",
            netns=netlink.names(cid, i + 1)[0] if link else "",
            init=inits[i],
            arch=s.arch,
        )
        for i, s in enumerate(specs)
    ]
    return state.ClusterRecord(id=cid, run_dir=state.RUN_ROOT / cid, nodes=nodes)


def create(rec: state.ClusterRecord, home: Path, say: Progress) -> None:
    sdir = state.state_dir(home)
    rec.run_dir.mkdir(parents=True, exist_ok=True)
    for d in (state.RUN_ROOT, rec.run_dir):
        d.chmod(0o755)
    if any(n.arch == "aarch64" for n in rec.nodes):
        say("qemu-user for aarch64 (binfmt_misc)")
        qemu.ensure_binfmt()
        lower = rootfs.ensure(say)
        for n in rec.nodes:
            n.rootfs = str(lower) if n.arch == "aarch64" else ""
    say("identity key")
    pub = provision.keygen(sdir / "id_ed25519", f"edgekit-virtual-{rec.id}")
    for node in rec.nodes:
        say(f"{node.name}: user, sysroot, cgroup, sshd")
        create_node(rec, node, pub)
        state.add_known_hosts(state.known_hosts_path(home), [node.host_key_line])
        state.save(rec, home)
    write_atomic(sdir / "inventory.txt", render_inventory(rec, sdir / "id_ed25519"))
    say("supervisor")
    start_supervisor(home, rec)
    rec.complete = True
    state.save(rec, home)


def create_node(rec: state.ClusterRecord, node: state.NodeRecord, identity_pub: str) -> None:
    ndir, home_dir = node.node_dir(rec.run_dir), node.home(rec.run_dir)
    ndir.mkdir(parents=True, exist_ok=True)
    for d in (ndir.parent, ndir):
        d.chmod(0o755)
    (rec.run_dir / "home").mkdir(mode=0o755, exist_ok=True)
    provision.create_user(node.user, home_dir)
    node.uid = pwd.getpwnam(node.user).pw_uid
    board = boards.board(node.board)
    sysroot = node.sysroot(rec.run_dir)
    build(sysroot, board, node.ram_bytes, serial=f"10000000{secrets.token_hex(4)}")
    cond = thermal.Conditions(boards.cooling(node.board, node.cooling), node.ambient_c)
    t = thermal.idle_state(board, cond, node.start_temp_c)
    publish(sysroot, board, node.ram_bytes,
            Reading(t.temp_c, t.freq_mhz, t.throttled, t.power_w, 0.0, t.fan_duty, 0))  # fmt: skip
    group = NodeGroup(rec.id, node.name)
    group.create()
    group.set_cpu(thermal.quota_cores(node.cap_cores, board, t.freq_mhz))
    group.set_memory(node.ram_bytes)
    write_atomic(ndir / "authorized_keys", identity_pub + "\n")
    host_pub = provision.keygen(ndir / "ssh_host_ed25519_key", f"{rec.name}-{node.name}")
    if node.netns:  # its own network: a Pi's address and port 22, behind a shaped link
        node.address, node.shaper = netlink.create(rec.id, int(node.name[2:]), node.link)
    runtime = usermanager.runtime_dir(node.uid) if node.init == "systemd" else None
    chroot = None
    if node.arch == "aarch64":
        chroot = rootfs.prepare_node(ndir, Path(node.rootfs), node.user, home_dir, sysroot)
    for attempt in range(3):  # another program may grab the free port before sshd binds it
        node.port = 22 if node.netns else provision.free_port()
        files = provision.SshdFiles.in_dir(ndir)
        config = provision.sshd_config(provision.SshdSettings(
            port=node.port, user=node.user, host_key=ndir / "ssh_host_ed25519_key",
            pid_file=files.pid_file, authorized_keys=ndir / "authorized_keys", sysroot=sysroot,
            address=node.address, runtime_dir=runtime, chroot=chroot,
            qemu_cpu=qemu.cpu_model(node.board) if chroot else None,
        ))  # fmt: skip
        write_atomic(files.config, config)
        try:
            power.boot(rec, node)
            break
        except ClusterError:
            group.kill_all()  # a half-booted node (sshd without a manager) starts over
            if attempt == 2:
                raise
    key_type, key_b64 = host_pub.split()[:2]
    host = node.address if node.port == 22 else f"[{node.address}]:{node.port}"
    node.host_key_line = f"{host} {key_type} {key_b64}"


def render_inventory(rec: state.ClusterRecord, identity: Path) -> str:
    nodes = [
        inventory.Node(
            name=n.name,
            host=n.address,
            user=n.user,
            port=None if n.port == 22 else n.port,
            key=str(identity),
            labels={"board": n.board, "cooling": n.cooling},
        )
        for n in rec.nodes
    ]
    return f"# virtual cluster {rec.name} (edgekit cluster up)\n" + inventory.render(nodes)


def start_supervisor(home: Path, rec: state.ClusterRecord) -> None:
    """Detached (setsid --fork: reparented to init, so no caller is left with a zombie)."""
    sdir = state.state_dir(home)
    cmd = [sys.executable, "-m", "edgekit.virtual.supervisor", str(home)]
    subprocess.run(
        ["setsid", "--fork", *cmd], check=True, cwd="/", stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        st = state.read_json(sdir / "status.json")
        if st.get("id") == rec.id and teardown.supervisor_pid(home, rec.id):
            return
        time.sleep(0.05)
    log = sdir / "supervisor.log"
    tail = log.read_text()[-1500:] if log.exists() else ""
    raise ClusterError(f"supervisor did not start: {tail}", where=str(log))


def _dumps(data: object) -> str:
    import json

    return json.dumps(data, indent=2) + "\n"
