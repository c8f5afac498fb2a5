"""Sysroot folders in the real Pi file formats, and a `vcgencmd` on PATH printing real output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

VCGENCMD = """#!/bin/sh
# vcgencmd look-alike: answers from files beside it, in the firmware's output format.
d="$(dirname "$0")"
case "$1" in
  get_throttled) [ -f "$d/throttled" ] || exit 255; echo "throttled=$(cat "$d/throttled")" ;;
  measure_clock) echo "frequency(48)=$(cat "$d/clock_hz")" ;;
  measure_temp) echo "temp=61.8'C" ;;
  pmic_read_adc)
    [ -f "$d/pmic" ] || { echo "Command not registered" >&2; exit 255; }; cat "$d/pmic" ;;
  *) echo "Command not registered" >&2; exit 255 ;;
esac
"""

PMIC_PI5 = """\
   3V7_WL_SW_A current(0)=0.00000000A
   3V3_SYS_A current(1)=0.05171850A
   VDD_CORE_A current(7)=0.75012000A
   EXT5V_V volt(24)=5.15638000V
   3V7_WL_SW_V volt(8)=3.71266800V
   3V3_SYS_V volt(9)=3.31250200V
   VDD_CORE_V volt(15)=0.72178200V
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_sysroot(
    root: Path,
    *,
    temp_mc: int | None = 55000,
    board: str = "Raspberry Pi 4 Model B Rev 1.4",
    cur_khz: int = 1500000,
    max_khz: int = 1500000,
) -> Path:
    """A Pi-like sysroot: device-tree model, a cpu-thermal zone, cpufreq, meminfo, loadavg, stat."""
    write(root / "proc/device-tree/model", board + "\x00")
    if temp_mc is not None:
        write(root / "sys/class/thermal/thermal_zone0/temp", f"{temp_mc}\n")
        write(root / "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    cf = root / "sys/devices/system/cpu/cpu0/cpufreq"
    write(cf / "scaling_cur_freq", f"{cur_khz}\n")
    write(cf / "scaling_max_freq", f"{max_khz}\n")
    write(cf / "cpuinfo_max_freq", f"{max_khz}\n")
    write(
        root / "proc/meminfo",
        "MemTotal:        3884564 kB\nMemFree:  100 kB\nMemAvailable:    3311216 kB\n",
    )
    write(root / "proc/loadavg", "0.52 0.40 0.30 1/123 4567\n")
    set_stat(root, busy=1000, idle=1000)
    return root


def set_stat(root: Path, busy: int, idle: int) -> None:
    write(
        root / "proc/stat",
        f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {busy} 0 0 {idle} 0 0 0 0 0 0\n",
    )


def add_hwmon(root: Path, index: int, name: str, files: dict[str, str]) -> Path:
    d = root / f"sys/class/hwmon/hwmon{index}"
    write(d / "name", name + "\n")
    for k, v in files.items():
        write(d / k, v + "\n")
    return d


@pytest.fixture
def sysroot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_sysroot(tmp_path / "root")
    monkeypatch.setenv("EDGEKIT_SYSROOT", str(root))
    return root


@pytest.fixture
def vcgencmd_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on PATH with a firmware-format vcgencmd; its state files live beside it."""
    d = tmp_path / "bin"
    d.mkdir()
    script = d / "vcgencmd"
    script.write_text(VCGENCMD)
    script.chmod(0o755)
    (d / "throttled").write_text("0x0")
    (d / "clock_hz").write_text("1500000000")
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    return d


@pytest.fixture
def no_vcgencmd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH without any vcgencmd (only the system folders)."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
