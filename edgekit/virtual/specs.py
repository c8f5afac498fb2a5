"""What a virtual node should be (`NodeSpec`), and the checks a set of specs passes before
anything is created: init systems the host can run, architectures it can emulate."""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import ClusterError, InputError
from edgekit.virtual import boards, qemu, usermanager


@dataclass(frozen=True)
class NodeSpec:
    """What one virtual node should be.

    linux32: start its sshd under `setarch linux32`, so `uname -m` in its sessions reports a
    32-bit machine (i686) - a board the probe must refuse.
    start_temp_c: start hot instead of at the idle temperature (quick heating in tests).
    init: "systemd" (a systemd user manager, as on a Pi: deploy runs services as user units)
    or "none" (deploy falls back to edgekit's supervisor); None: systemd where the host can.
    arch: "x86_64" (the node runs this machine's own userland) or "aarch64" (every process
    of the node is aarch64: an arm64 Debian userland under qemu-user, CPU model per board;
    rootfs.py, qemu.py).
    """

    board: str = "pi4"
    cooling: str = "heatsink"
    ambient_c: float = boards.ambient_c
    ram_bytes: int | None = None
    linux32: bool = False
    start_temp_c: float | None = None
    init: str | None = None
    arch: str = "x86_64"


INITS = ("systemd", "none")
ARCHES = ("x86_64", "aarch64")


def resolve_inits(specs: list[NodeSpec]) -> list[str]:
    """Each node's init: as asked, default systemd where this host can run user managers."""
    why_not = usermanager.unavailable()
    out = []
    for i, s in enumerate(specs):
        if s.init not in (None, *INITS):
            raise InputError(f"bad init {s.init!r}: use one of {', '.join(INITS)}")
        if s.init == "systemd" and why_not:
            raise ClusterError(f"nodes cannot run systemd here: {why_not}",
                               hint="use init none (edgekit cluster up --init none)")
        if s.arch == "aarch64":
            # the user manager is this machine's x86 systemd outside the node's chroot: the
            # units it starts would not run in the node's arm64 userland
            if s.init == "systemd":
                raise InputError(f"pi{i + 1}: aarch64 virtual nodes run without a systemd "
                                 "user manager (deploy uses edgekit's supervisor there)",
                                 hint="use --init none for aarch64 nodes")
            out.append("none")
            continue
        out.append(s.init or ("none" if why_not else "systemd"))
    return out


def check_arches(specs: list[NodeSpec]) -> None:
    """Bad arch names, and aarch64 nodes where this host cannot run them, fail before
    anything is created."""
    for i, s in enumerate(specs):
        if s.arch not in ARCHES:
            raise InputError(f"pi{i + 1}: bad arch {s.arch!r}: use one of {', '.join(ARCHES)}")
        if s.arch == "aarch64" and s.linux32:
            raise InputError(f"pi{i + 1}: --linux32 is for x86 nodes (a 32-bit personality)")
    if any(s.arch == "aarch64" for s in specs):
        why = qemu.unavailable()
        if why:
            raise ClusterError(f"aarch64 virtual nodes cannot run here: {why}",
                               hint=qemu.INSTALL_HINT)
