"""One control group per virtual node: CPU quota, CPU-time counter, memory cap, kill-all.

cgroup v1 (separate `cpu`, `cpuacct`, `memory` hierarchies, as on this machine) and cgroup v2
(`cpu.max`, `cpu.stat`, `memory.max`) are both handled; a group's processes are everything
started through the node's sshd, because children inherit the group across fork.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from edgekit.errors import ClusterError

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
TOP = "edgekit-virtual"


def version() -> int:
    """1 or 2, whichever offers a CPU quota here; raise if neither does."""
    if (ROOT / "cpu" / "cpu.cfs_quota_us").exists():
        return 1
    controllers = ROOT / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return 2
    raise ClusterError(
        "no cgroup CPU controller found (need cgroup v1 'cpu' or cgroup v2 with 'cpu')",
        where=str(ROOT),
    )


class NodeGroup:
    """The control group(s) of one node, named <TOP>/<cluster id>/<node name>."""

    def __init__(self, cluster_id: str, node: str, ver: int | None = None):
        self.ver = ver or version()
        self.rel = Path(TOP) / cluster_id / node
        if self.ver == 1:
            self.cpu = ROOT / "cpu" / self.rel
            self.acct = ROOT / "cpuacct" / self.rel
            self.mem = ROOT / "memory" / self.rel
            self.dirs = [self.cpu, self.acct]
            if (ROOT / "memory" / "memory.limit_in_bytes").exists():
                self.dirs.append(self.mem)
        else:
            self.cpu = self.acct = self.mem = ROOT / self.rel
            self.dirs = [self.cpu]

    # --- lifecycle --------------------------------------------------------------------------
    def create(self) -> None:
        try:
            if self.ver == 2:
                self._enable_v2_controllers()
            for d in self.dirs:
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClusterError(f"cannot create cgroup: {exc}", where=str(self.cpu)) from None

    def _enable_v2_controllers(self) -> None:
        parent = ROOT
        for part in self.rel.parts:
            control = parent / "cgroup.subtree_control"
            try:
                control.write_text("+cpu +memory")
            except OSError:  # no memory controller delegated here: CPU alone still works
                control.write_text("+cpu")
            parent = parent / part
            parent.mkdir(exist_ok=True)

    def procs_files(self) -> list[Path]:
        """Files a process writes its pid into to join this node's group(s)."""
        return [d / "cgroup.procs" for d in self.dirs]

    def pids(self) -> set[int]:
        """Every process in the group or below it (a node's user manager and its units sit
        in child groups on cgroup v2)."""
        found: set[int] = set()
        for d in self.dirs:
            for f in [d / "cgroup.procs", *(d.glob("*/**/cgroup.procs") if d.is_dir() else ())]:
                try:
                    found.update(int(x) for x in f.read_text().split())
                except FileNotFoundError:
                    continue
        return found

    def kill_all(self, timeout_s: float = 10.0) -> None:
        """SIGKILL every process in the group until none is left (forks racing included)."""
        deadline = time.monotonic() + timeout_s
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise ClusterError(f"processes {sorted(pids)} survive SIGKILL", where=str(self.cpu))
            time.sleep(0.05)

    def remove(self) -> None:
        """Remove the node's group dirs and the cluster's parents once they are empty."""
        for d in self.dirs:
            for sub in _subdirs(d):
                sub.rmdir()
            for path in (d, d.parent, d.parent.parent):
                try:
                    path.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    break  # not empty: another node or cluster still uses it

    def exists(self) -> bool:
        return any(d.exists() for d in self.dirs)

    # --- limits and counters ----------------------------------------------------------------
    def set_cpu(self, cores: float) -> None:
        quota = max(1000, int(cores * PERIOD_US))
        if self.ver == 1:
            (self.cpu / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.cpu / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (self.cpu / "cpu.max").write_text(f"{quota} {PERIOD_US}")

    def cpu_cores(self) -> float:
        """The quota currently in force, in cores."""
        if self.ver == 1:
            quota = int((self.cpu / "cpu.cfs_quota_us").read_text())
            period = int((self.cpu / "cpu.cfs_period_us").read_text())
        else:
            q, p = (self.cpu / "cpu.max").read_text().split()
            quota, period = (-1 if q == "max" else int(q)), int(p)
        return quota / period if quota > 0 else float(os.cpu_count() or 1)

    def usage_ns(self) -> int:
        """CPU time used by the group since it was made, in nanoseconds."""
        if self.ver == 1:
            return int((self.acct / "cpuacct.usage").read_text())
        for line in (self.cpu / "cpu.stat").read_text().splitlines():
            key, value = line.split()
            if key == "usage_usec":
                return int(value) * 1000
        return 0

    def set_memory(self, limit_bytes: int) -> None:
        name = "memory.limit_in_bytes" if self.ver == 1 else "memory.max"
        path = self.mem / name
        if path.parent.exists():
            path.write_text(str(limit_bytes))

    def memory_bytes(self) -> int:
        name = "memory.usage_in_bytes" if self.ver == 1 else "memory.current"
        try:
            return int((self.mem / name).read_text())
        except (FileNotFoundError, ValueError):
            return 0


def _subdirs(d: Path) -> list[Path]:
    """Child groups of `d`, deepest first (the order rmdir needs)."""
    if not d.is_dir():
        return []
    found = [p for p in d.rglob("*") if p.is_dir()]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def rmdir_tree(d: Path, timeout_s: float = 5.0) -> None:
    """Remove an empty group and its empty children (retried briefly: a group whose last
    process was just killed stays busy until the kernel has reaped it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            for sub in [*_subdirs(d), d]:
                with contextlib.suppress(FileNotFoundError):
                    sub.rmdir()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
