"""The arm64 userland of aarch64 virtual nodes, and each node's view of it.

64-bit Raspberry Pi OS is Debian bookworm for arm64, so an aarch64 virtual node logs in to a
Debian bookworm arm64 userland (python3.11 with venv, bash, coreutils, procps, iproute2),
built once with mmdebstrap (the well-kept tool for foreign-architecture chroots: it resolves
dependencies with apt and runs the maintainer scripts under qemu through binfmt_misc) and
cached read-only, keyed by its recipe.

Each node sees it through an overlay (its own upper layer: /etc/passwd with the node user,
/tmp, what it changes survives a reboot like an SD card) mounted in the node's private mount
namespace, with the node's home and sysroot bound in at the same paths as on the host, and
/proc, /sys and /dev from the host. sshd's ChrootDirectory puts every login there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from edgekit.errors import ClusterError

SUITE = "bookworm"
#: what a Pi's 64-bit OS has that node code or deploy uses (minbase adds bash, coreutils, ...)
PACKAGES = ("python3", "python3-venv", "procps", "iproute2", "openssh-sftp-server",
            "ca-certificates", "libgomp1")
CACHE_ENV = "EDGEKIT_ROOTFS_CACHE"
BUILD_TIMEOUT_S = 3600.0
STAMP = ".edgekit-rootfs.json"


def cache_root() -> Path:
    """Root-owned and not writable by others all the way up: sshd refuses a ChrootDirectory
    (and an overlay lower layer reached through it) under anything else."""
    return Path(os.environ.get(CACHE_ENV, "/var/cache/edgekit-virtual/rootfs"))


def recipe() -> dict[str, object]:
    return {"suite": SUITE, "arch": "arm64", "variant": "minbase", "packages": sorted(PACKAGES)}


def path() -> Path:
    key = hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / f"{SUITE}-arm64-{key}"


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # one build at a time, the others wait and reuse it
        yield


def ensure(say: Callable[[str], None] = lambda _m: None) -> Path:
    """The cached userland, built first if needed (a few minutes under qemu, once)."""
    out = path()
    if (out / STAMP).exists():
        return out
    root = cache_root()
    with _locked(root):
        if (out / STAMP).exists():
            return out
        for d in (root, *root.parents):
            if d.stat().st_uid != 0 or d.stat().st_mode & 0o022:
                raise ClusterError("the rootfs cache must be root-owned and not group- or "
                                   "world-writable all the way up (sshd's ChrootDirectory)",
                                   where=str(d), hint=f"set {CACHE_ENV} to such a folder")
            if d == Path("/"):
                break
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        say(f"building the arm64 {SUITE} userland (once, cached in {out})")
        log = root / f"{out.name}.log"
        cmd = ["mmdebstrap", "--mode=root", "--architectures=arm64", "--variant=minbase",
               "--include=" + ",".join(PACKAGES), SUITE, str(tmp)]
        t0 = time.monotonic()
        with log.open("w") as fh:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False,
                                  timeout=BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = log.read_text()[-1500:]
            raise ClusterError(f"mmdebstrap failed ({proc.returncode}): {tail}", where=str(log))
        stamp = {**recipe(), "seconds": round(time.monotonic() - t0, 1)}
        (tmp / STAMP).write_text(json.dumps(stamp) + "\n")
        tmp.chmod(0o755)
        tmp.rename(out)
    return out


def build_seconds() -> float | None:
    try:
        return float(json.loads((path() / STAMP).read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        return None


def node_dirs(node_dir: Path) -> tuple[Path, Path, Path]:
    """(upper, work, root) of one node's overlay."""
    base = node_dir / "arm64"
    return base / "upper", base / "work", base / "root"


def prepare_node(node_dir: Path, lower: Path, user: str, home: Path, sysroot: Path) -> Path:
    """The node's upper layer (users, host files, mount points); returns its chroot path."""
    upper, work, root = node_dirs(node_dir)
    for d in (upper.parent, upper, work, root):
        d.mkdir(mode=0o755, parents=True, exist_ok=True)
        d.chmod(0o755)
    entry = pwd.getpwnam(user)
    etc = upper / "etc"
    etc.mkdir(mode=0o755, exist_ok=True)
    passwd = (lower / "etc/passwd").read_text()
    passwd += f"{user}:x:{entry.pw_uid}:{entry.pw_gid}::{home}:/bin/bash\n"
    group = (lower / "etc/group").read_text() + f"{user}:x:{entry.pw_gid}:\n"
    (etc / "passwd").write_text(passwd)
    (etc / "group").write_text(group)
    for name in ("hosts", "resolv.conf"):  # the host's network view, as the x86 nodes have
        src = Path("/etc") / name
        if src.exists():
            (etc / name).unlink(missing_ok=True)
            shutil.copyfile(src, etc / name)
    for mount_point in (home, sysroot):
        (upper / mount_point.relative_to("/")).mkdir(parents=True, exist_ok=True)
    tmp = upper / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)
    return root


def mount_script(node_dir: Path, lower: Path, home: Path, sysroot: Path) -> str:
    """Shell lines, run in the node's own mount namespace before its sshd starts, that
    assemble the chroot; everything goes away with the namespace's last process."""
    upper, work, root = node_dirs(node_dir)
    q = shlex.quote
    r = str(root)
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    lines = [
        "set -e",
        f"mount -t overlay overlay -o {q(opts)} {q(r)}",
        f"mount --rbind /proc {q(r + '/proc')}",
        f"mount --rbind /sys {q(r + '/sys')}",
        f"mount --rbind /dev {q(r + '/dev')}",
        f"mount -t tmpfs -o mode=0755,size=64m tmpfs {q(r + '/run')}",
        f"mount --bind {q(str(home))} {q(r + str(home))}",
        f"mount --bind {q(str(sysroot))} {q(r + str(sysroot))}",
        "set +e",
    ]
    return "\n".join(lines)
