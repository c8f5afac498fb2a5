"""A virtual node's copy of the Raspberry Pi files and `vcgencmd` (docs/NODE-INTERFACE.md).

`build` lays out the fixed files once; `publish` rewrites the changing ones (temperature,
clock, memory, fan, firmware answers) from the supervisor, each by write-then-rename so a
reader never sees a half-written file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import ClusterError
from edgekit.virtual.boards import FAN_MAX_RPM, Board, revision_code

TEMPLATE = Path(__file__).resolve().parents[2] / "cluster" / "vcgencmd.sh"
VCGENCMD_STATE = "run/vcgencmd"  # under the sysroot: one rendered answer per command
CPUFREQ = "sys/devices/system/cpu/cpu0/cpufreq"
THERMAL = "sys/class/thermal/thermal_zone0"
HWMON_TEMP, HWMON_VOLT, HWMON_FAN = (
    "sys/class/hwmon/hwmon0",
    "sys/class/hwmon/hwmon1",
    "sys/class/hwmon/hwmon2",
)


@dataclass(frozen=True)
class Reading:
    """Everything that changes on a node, as the supervisor last computed it."""

    temp_c: float
    freq_mhz: int
    throttled: int
    power_w: float
    util: float
    fan_duty: float
    mem_used_bytes: int


def write_atomic(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def cpuinfo(board: Board, ram_bytes: int, serial: str) -> str:
    blocks = []
    for n in range(4):
        blocks.append(
            f"processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {board.features}\n"
            f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {board.cpu_variant}\n"
            f"CPU part\t: {board.cpu_part}\nCPU revision\t: {board.cpu_revision}\n"
        )
    tail = (
        f"Revision\t: {revision_code(board, ram_bytes)}\nSerial\t\t: {serial}\n"
        f"Model\t\t: {board.model}\n"
    )
    return "\n".join(blocks) + "\n" + tail


def build(root: Path, board: Board, ram_bytes: int, serial: str) -> None:
    """Create the node's fixed files and its `vcgencmd` (root-owned, readable by the node)."""
    if not TEMPLATE.is_file():
        raise ClusterError("vcgencmd template missing", where=str(TEMPLATE))
    write_atomic(root / "proc/device-tree/model", board.model.encode() + b"\0")
    write_atomic(root / "proc/cpuinfo", cpuinfo(board, ram_bytes, serial))
    write_atomic(root / THERMAL / "type", "cpu-thermal\n")
    freq = root / CPUFREQ
    write_atomic(freq / "cpuinfo_max_freq", f"{board.max_mhz * 1000}\n")
    write_atomic(freq / "cpuinfo_min_freq", f"{board.min_mhz * 1000}\n")
    write_atomic(freq / "scaling_min_freq", f"{board.min_mhz * 1000}\n")
    write_atomic(freq / "scaling_governor", "ondemand\n")
    write_atomic(root / HWMON_TEMP / "name", "cpu_thermal\n")
    write_atomic(root / HWMON_VOLT / "name", "rpi_volt\n")
    write_atomic(root / HWMON_VOLT / "in0_lcrit_alarm", "0\n")
    if board.has_fan_header:
        write_atomic(root / HWMON_FAN / "name", "pwmfan\n")
    script = TEMPLATE.read_text().replace("@STATE@", str(root / VCGENCMD_STATE))
    write_atomic(root / "usr/bin/vcgencmd", script, mode=0o755)
    for d in (root, *root.rglob("*")):
        if d.is_dir():
            d.chmod(0o755)


def publish(root: Path, board: Board, ram_bytes: int, r: Reading) -> None:
    """Rewrite every changing file from one reading."""
    millideg = round(r.temp_c * 1000)
    write_atomic(root / THERMAL / "temp", f"{millideg}\n")
    write_atomic(root / HWMON_TEMP / "temp1_input", f"{millideg}\n")
    khz = f"{r.freq_mhz * 1000}\n"
    freq = root / CPUFREQ
    write_atomic(freq / "scaling_cur_freq", khz)
    write_atomic(freq / "cpuinfo_cur_freq", khz)
    write_atomic(freq / "scaling_max_freq", f"{board.max_mhz * 1000}\n")
    write_atomic(root / "proc/meminfo", meminfo(ram_bytes, r.mem_used_bytes))
    if board.has_fan_header:
        write_atomic(root / HWMON_FAN / "pwm1", f"{round(r.fan_duty * 255)}\n")
        write_atomic(root / HWMON_FAN / "fan1_input", f"{round(r.fan_duty * FAN_MAX_RPM)}\n")
    state = root / VCGENCMD_STATE
    write_atomic(state / "get_throttled", f"throttled={r.throttled:#x}\n")
    write_atomic(state / "measure_temp", f"temp={r.temp_c:.1f}'C\n")
    write_atomic(state / "measure_clock_arm", f"frequency(48)={r.freq_mhz * 1_000_000}\n")
    if board.has_pmic:
        write_atomic(state / "pmic_read_adc", pmic_read_adc(board, r))


def meminfo(ram_bytes: int, used_bytes: int) -> str:
    # A Pi reports a little less than its RAM as MemTotal (firmware and kernel reservations).
    total_kb = ram_bytes // 1024 - 60 * 1024
    used_kb = min(max(used_bytes // 1024, 0), total_kb)
    free_kb = total_kb - used_kb
    return (
        f"MemTotal:       {total_kb:>8} kB\nMemFree:        {free_kb:>8} kB\n"
        f"MemAvailable:   {free_kb:>8} kB\nBuffers:               0 kB\n"
        f"Cached:                0 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n"
    )


# Fixed rails of a Pi 5 at rest (name, current A, voltage V, current index, voltage index).
_RAILS = (
    ("3V7_WL_SW", 0.0, 3.7468, 0, 8),
    ("3V3_SYS", 0.0517, 3.3, 1, 9),
    ("1V8_SYS", 0.162, 1.8, 2, 10),
    ("DDR_VDD2", 0.0215, 1.11, 3, 11),
    ("DDR_VDDQ", 0.0, 0.6, 4, 12),
    ("1V1_SYS", 0.1737, 1.11, 5, 13),
    ("0V8_SW", 0.305, 0.8, 6, 14),
)


def pmic_read_adc(board: Board, r: Reading) -> str:
    """Rail currents and voltages such that the community formula W = 1.1451*sum + 0.5879
    gives back the model's board power; the core rail takes whatever the others do not."""
    rails_w = sum(a * v for _, a, v, _, _ in _RAILS)
    core_w = max((r.power_w - 0.5879) / 1.1451 - rails_w, 0.05)
    core_v = 0.72 + 0.19 * (r.freq_mhz - board.min_mhz) / (board.max_mhz - board.min_mhz) * r.util
    core_a = core_w / core_v
    lines = [f"{name + '_A':>12} current({ia})={a:.8f}A" for name, a, _, ia, _ in _RAILS]
    lines.append(f"{'VDD_CORE_A':>12} current(7)={core_a:.8f}A")
    lines += [f"{name + '_V':>12} volt({iv})={v:.8f}V" for name, _, v, _, iv in _RAILS]
    lines.append(f"{'VDD_CORE_V':>12} volt(15)={core_v:.8f}V")
    lines.append(f"{'EXT5V_V':>12} volt(24)={5.12:.8f}V")
    return "\n".join(lines) + "\n"
