"""CPU utilisation, memory and load: `proc/{stat,meminfo,loadavg}` under the sysroot, psutil
when the sysroot does not carry them. Utilisation needs two samples, so it is a small class."""

from __future__ import annotations

from pathlib import Path

import psutil

from edgekit.thermal.reading import MEASURED, Reading, absent


def _cpu_times(root: Path) -> tuple[float, float, str] | None:
    """(busy, total) jiffies from the aggregate `cpu` line of proc/stat."""
    path = root / "proc/stat"
    try:
        first = path.read_text().splitlines()[0].split()
        if first[0] != "cpu":
            return None
        vals = [float(v) for v in first[1:]]
    except (OSError, IndexError, ValueError):
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)  # idle + iowait
    total = sum(vals[:8])  # guest time is already inside user/nice
    return total - idle, total, str(path)


def _psutil_times() -> tuple[float, float, str]:
    """Same as _cpu_times from psutil (each CpuUtil keeps its own last point, unlike
    psutil.cpu_percent(None), whose shared state breaks with several samplers per process)."""
    t = psutil.cpu_times()
    total = sum(t)
    return total - t.idle - getattr(t, "iowait", 0.0), total, "psutil.cpu_times"


class CpuUtil:
    """Utilisation (0..1) between consecutive calls; the first call primes and reports absent."""

    def __init__(self, root: Path):
        self._root = root
        first = _cpu_times(root) or _psutil_times()
        self._last: tuple[float, float] | None = first[:2]

    def read(self) -> Reading:
        busy, total, where = _cpu_times(self._root) or _psutil_times()
        last, self._last = self._last, (busy, total)
        if last is None or total <= last[1]:
            return absent("frac", f"{where}: priming (needs two samples)")
        frac = (busy - last[0]) / (total - last[1])
        return Reading(round(max(0.0, min(1.0, frac)), 4), "frac", MEASURED, where)


def memory_mb(root: Path) -> dict[str, Reading]:
    """MemTotal / MemAvailable in MB from proc/meminfo under the sysroot, else psutil."""
    path = root / "proc/meminfo"
    fields: dict[str, float] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                fields[key] = float(rest.split()[0]) / 1024.0
    except (OSError, ValueError, IndexError):
        fields = {}
    if len(fields) == 2:
        return {
            "total": Reading(round(fields["MemTotal"], 1), "MB", MEASURED, str(path)),
            "available": Reading(round(fields["MemAvailable"], 1), "MB", MEASURED, str(path)),
        }
    vm = psutil.virtual_memory()
    return {
        "total": Reading(round(vm.total / 2**20, 1), "MB", MEASURED, "psutil"),
        "available": Reading(round(vm.available / 2**20, 1), "MB", MEASURED, "psutil"),
    }


def load_1m(root: Path) -> Reading:
    """1-minute load average from proc/loadavg under the sysroot, else psutil."""
    path = root / "proc/loadavg"
    try:
        return Reading(float(path.read_text().split()[0]), "procs", MEASURED, str(path))
    except (OSError, ValueError, IndexError):
        try:
            return Reading(psutil.getloadavg()[0], "procs", MEASURED, "psutil.getloadavg")
        except OSError as exc:
            return absent("procs", f"load average unavailable: {exc}")
