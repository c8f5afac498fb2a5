"""A node's Pi files and its `vcgencmd`, built in a temp dir (no root needed)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from edgekit.virtual import boards, sysroot
from edgekit.virtual.sysroot import Reading

GiB = 1024**3


def make(tmp_path: Path, board: str, reading: Reading | None = None) -> Path:
    b = boards.BOARDS[board]
    sysroot.build(tmp_path, b, 8 * GiB, serial="10000000deadbeef")
    r = reading or Reading(61.84, b.max_mhz, 0x50005, 5.0, 0.5, 0.3, 512 * 1024**2)
    sysroot.publish(tmp_path, b, 8 * GiB, r)
    return tmp_path


def vcgencmd(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(root / "usr/bin/vcgencmd"), *args], capture_output=True, text=True)


@pytest.mark.parametrize(("board", "model", "dotprod"), [
    ("pi4", "Raspberry Pi 4 Model B Rev 1.4", False),
    ("pi5", "Raspberry Pi 5 Model B Rev 1.0", True),
])  # fmt: skip
def test_identity_files(tmp_path: Path, board: str, model: str, dotprod: bool):
    root = make(tmp_path, board)
    assert (root / "proc/device-tree/model").read_bytes() == model.encode() + b"\0"
    cpuinfo = (root / "proc/cpuinfo").read_text()
    assert len(re.findall(r"^processor\s*: \d$", cpuinfo, re.M)) == 4
    features = re.findall(r"^Features\s*: (.*)$", cpuinfo, re.M)
    assert len(features) == 4
    assert all(("asimddp" in f.split()) == dotprod and "asimd" in f.split() for f in features)
    assert re.search(r"^Revision\s*: d0", cpuinfo, re.M)  # 8 GB -> 'd'
    meminfo = (root / "proc/meminfo").read_text()
    total = int(re.search(r"MemTotal:\s+(\d+) kB", meminfo).group(1))
    assert 7.5 * 1024**2 < total <= 8 * 1024**2
    assert int(re.search(r"MemAvailable:\s+(\d+) kB", meminfo).group(1)) < total


def test_sensor_files(tmp_path: Path):
    root = make(tmp_path, "pi5")
    zone = root / "sys/class/thermal/thermal_zone0"
    assert (zone / "type").read_text() == "cpu-thermal\n"
    assert (zone / "temp").read_text() == "61840\n"
    freq = root / "sys/devices/system/cpu/cpu0/cpufreq"
    assert (freq / "scaling_cur_freq").read_text() == "2400000\n"
    assert (freq / "cpuinfo_max_freq").read_text() == "2400000\n"
    assert (freq / "cpuinfo_min_freq").read_text() == "1500000\n"
    hwmon = {(d / "name").read_text().strip(): d for d in (root / "sys/class/hwmon").iterdir()}
    assert (hwmon["rpi_volt"] / "in0_lcrit_alarm").read_text() == "0\n"
    assert int((hwmon["pwmfan"] / "pwm1").read_text()) == round(0.3 * 255)
    assert int((hwmon["pwmfan"] / "fan1_input").read_text()) > 0


def test_pi4_has_no_fan_hwmon(tmp_path: Path):
    root = make(tmp_path, "pi4")
    names = {(d / "name").read_text().strip() for d in (root / "sys/class/hwmon").iterdir()}
    assert "pwmfan" not in names and "rpi_volt" in names


def test_vcgencmd_formats(tmp_path: Path):
    root = make(tmp_path, "pi4", Reading(61.84, 1000, 0x50005, 4.0, 0.5, 0.0, 0))
    assert vcgencmd(root, "get_throttled").stdout == "throttled=0x50005\n"
    assert vcgencmd(root, "measure_temp").stdout == "temp=61.8'C\n"
    assert vcgencmd(root, "measure_clock", "arm").stdout == "frequency(48)=1000000000\n"


def test_vcgencmd_unknown_commands_fail_like_the_real_one(tmp_path: Path):
    root = make(tmp_path, "pi4")
    for args in (["no_such_command"], ["pmic_read_adc"]):  # a Pi 4 has no PMIC ADC
        res = vcgencmd(root, *args)
        assert res.returncode != 0
        assert res.stdout.startswith("error=2 ")
    assert vcgencmd(root, "measure_clock", "nonsense").returncode != 0


def test_pmic_rails_pair_up_and_add_up_to_the_board_power(tmp_path: Path):
    root = make(tmp_path, "pi5", Reading(70.0, 2400, 0, 8.0, 1.0, 0.5, 0))
    out = vcgencmd(root, "pmic_read_adc").stdout
    amps = dict(re.findall(r"^\s*(\S+)_A current\(\d+\)=([\d.]+)A$", out, re.M))
    volts = dict(re.findall(r"^\s*(\S+)_V volt\(\d+\)=([\d.]+)V$", out, re.M))
    assert "VDD_CORE" in amps and "EXT5V" in volts and "EXT5V" not in amps
    total = sum(float(a) * float(volts[name]) for name, a in amps.items())
    assert abs(1.1451 * total + 0.5879 - 8.0) < 0.05
    assert "  VDD_CORE_A current(7)=" in out
