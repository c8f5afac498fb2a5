"""Sensors against sysroot folders in the real file formats, and a firmware-format vcgencmd."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import PMIC_PI5, add_hwmon, make_sysroot, set_stat, write

from edgekit.thermal import firmware, sensors
from edgekit.thermal.agent import Sampler


def test_thermal_zones_all_read_and_soc_is_cpu_thermal(tmp_path: Path) -> None:
    root = make_sysroot(tmp_path, temp_mc=61234)
    write(root / "sys/class/thermal/thermal_zone1/temp", "45000\n")
    write(root / "sys/class/thermal/thermal_zone1/type", "gpu-thermal\n")
    zones = sensors.thermal_zones(root)
    assert set(zones) == {"thermal_zone0:cpu-thermal", "thermal_zone1:gpu-thermal"}
    soc = sensors.soc_temp(zones)
    assert soc.value == 61.234 and soc.source == "measured"


def test_no_thermal_zone_is_absent_not_a_crash(tmp_path: Path) -> None:
    root = make_sysroot(tmp_path, temp_mc=None)
    soc = sensors.soc_temp(sensors.thermal_zones(root))
    assert soc.source == "absent" and "no thermal zone" in soc.detail


def test_out_of_range_and_garbage_temperatures_are_absent_with_reason(tmp_path: Path) -> None:
    for raw, word in (
        ("200000", "out of physical range"),
        ("-5000000", "out of physical range"),
        ("hot", "not an integer"),
    ):
        root = make_sysroot(tmp_path / raw, temp_mc=0)
        write(root / "sys/class/thermal/thermal_zone0/temp", raw + "\n")
        soc = sensors.soc_temp(sensors.thermal_zones(root))
        assert soc.source == "absent" and word in soc.detail
        assert "thermal_zone0/temp" in soc.detail


def test_minus_five_celsius_is_plausible(tmp_path: Path) -> None:
    root = make_sysroot(tmp_path, temp_mc=-5000)  # a board in a cold shed
    assert sensors.soc_temp(sensors.thermal_zones(root)).value == -5.0


def test_cpufreq_cur_and_max(tmp_path: Path) -> None:
    root = make_sysroot(tmp_path, cur_khz=1000000, max_khz=1800000)
    f = sensors.cpufreq_mhz(root)
    assert f["cur"].value == 1000.0 and f["max"].value == 1800.0


def test_under_voltage_fan_found_by_hwmon_name(tmp_path: Path) -> None:
    root = make_sysroot(tmp_path)
    add_hwmon(root, 0, "cpu_thermal", {"temp1_input": "50000"})
    add_hwmon(root, 3, "rpi_volt", {"in0_lcrit_alarm": "1"})
    add_hwmon(root, 2, "pwmfan", {"fan1_input": "3120", "pwm1": "100"})
    assert sensors.under_voltage_hwmon(root).value is True
    assert sensors.fan_rpm(root).value == 3120
    assert sensors.under_voltage_hwmon(make_sysroot(tmp_path / "b")).source == "absent"


def test_hwmon_power_ina219_and_ina3221(tmp_path: Path) -> None:
    a = make_sysroot(tmp_path / "a")
    add_hwmon(a, 1, "ina219", {"power1_input": "5120000"})
    assert sensors.hwmon_power(a).value == 5.12
    b = make_sysroot(tmp_path / "b")
    add_hwmon(b, 1, "ina3221", {"curr1_input": "1000", "in1_input": "5100"})
    assert sensors.hwmon_power(b).value == 5.1
    c = make_sysroot(tmp_path / "c")
    add_hwmon(c, 1, "ina219", {"power1_input": "900000000"})
    assert sensors.hwmon_power(c).source == "absent"


def test_power_estimate_follows_board_model_util_and_clock() -> None:
    pi4_full = sensors.estimate_power("Raspberry Pi 4 Model B Rev 1.4", 1.0, 1500, 1500)
    pi4_idle = sensors.estimate_power("Raspberry Pi 4 Model B Rev 1.4", 0.0, 1500, 1500)
    pi5_full = sensors.estimate_power("Raspberry Pi 5 Model B Rev 1.0", 1.0, 2400, 2400)
    throttled = sensors.estimate_power("Raspberry Pi 4 Model B Rev 1.4", 1.0, 750, 1500)
    assert (pi4_idle.value, pi4_full.value, pi5_full.value) == (3.1, 6.1, 9.0)
    assert throttled.value == 4.6 and throttled.source == "estimated"
    assert "unknown" in sensors.estimate_power("", 0.5, None, None).detail


def test_throttled_decoding_now_and_since_boot() -> None:
    r = firmware.parse_throttled("throttled=0x50005\n")
    v = r.value
    assert v["under_voltage_now"] and v["throttled_now"] and not v["freq_capped_now"]
    assert v["under_voltage_since_boot"] and v["throttled_since_boot"]
    assert not v["soft_temp_limit_since_boot"] and v["any_now"]
    assert firmware.parse_throttled("throttled=0x0").value["any_now"] is False
    assert firmware.parse_throttled("VCHI initialization failed").source == "absent"


def test_pmic_pairs_rails_by_name_and_corrects() -> None:
    r = firmware.parse_pmic(PMIC_PI5)
    rails = 0.05171850 * 3.31250200 + 0.75012000 * 0.72178200 + 0.0
    assert abs(r.value - (1.1451 * rails + 0.5879)) < 1e-3
    assert "3 rails" in r.detail  # EXT5V (volt only) is not paired
    assert firmware.parse_pmic("garbage\n").source == "absent"


def test_vcgencmd_real_script_missing_failing_garbage(vcgencmd_dir: Path) -> None:
    vc = firmware.Vcgencmd()
    (vcgencmd_dir / "throttled").write_text("0x20002")
    assert firmware.get_throttled(vc).value["freq_capped_now"] is True
    assert firmware.measure_clock_arm(vc).value == 1500.0
    (vcgencmd_dir / "clock_hz").write_text("banana")
    assert firmware.measure_clock_arm(vc).source == "absent"
    (vcgencmd_dir / "throttled").unlink()  # the script now exits 255
    fail = firmware.get_throttled(vc)
    assert fail.source == "absent" and "exit 255" in fail.detail
    spawns = vc.spawns
    assert "backing off" in firmware.get_throttled(vc).detail and vc.spawns == spawns
    assert "not registered" in firmware.pmic_power(vc).detail  # Pi 4: no PMIC


def test_vcgencmd_missing_from_path(no_vcgencmd: None) -> None:
    r = firmware.get_throttled(firmware.Vcgencmd())
    assert r.source == "absent" and "not found on PATH" in r.detail


def test_sampler_prefers_pmic_then_hwmon_then_estimate(tmp_path: Path, vcgencmd_dir: Path) -> None:
    root = make_sysroot(tmp_path / "r")
    s = Sampler("n1", root)
    set_stat(root, busy=1500, idle=1500)  # 50 % busy since the sampler primed
    est = s.sample()
    assert est.power_w.source == "estimated" and est.util.value == 0.5
    add_hwmon(root, 0, "ina219", {"power1_input": "4000000"})
    assert s.sample().power_w.value == 4.0
    (vcgencmd_dir / "pmic").write_text(PMIC_PI5)
    s2 = Sampler("n1", root)
    assert s2.sample().power_w.detail.startswith("pmic_read_adc")


def test_agent_once_json_cli_with_broken_sensors(
    tmp_path: Path, vcgencmd_dir: Path, monkeypatch
) -> None:
    root = make_sysroot(tmp_path / "r", temp_mc=None)
    (vcgencmd_dir / "throttled").write_text("zzz")  # garbage
    env = {"EDGEKIT_SYSROOT": str(root), "PATH": str(vcgencmd_dir) + ":/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "edgekit.thermal.agent", "--once", "--json", "--node", "pi1"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    sample = json.loads(out.stdout)
    assert sample["node"] == "pi1" and sample["temp_c"]["source"] == "absent"
    assert sample["throttled"]["source"] == "absent" and "garbage" in sample["throttled"]["detail"]
    assert sample["freq_mhz"]["value"] == 1500.0
    # the sysroot's proc/stat is frozen: no utilisation, so no power estimate either (says why)
    assert sample["power_w"]["source"] == "absent" and "utilisation" in sample["power_w"]["detail"]


def test_real_clock_from_firmware_only_while_capped(tmp_path: Path, vcgencmd_dir: Path) -> None:
    root = make_sysroot(tmp_path / "r", cur_khz=1500000)
    s = Sampler("n1", root)
    (vcgencmd_dir / "clock_hz").write_text("750000000")
    first = s.sample()
    assert first.freq_mhz.value == 1500.0 and "scaling_cur_freq" in first.freq_mhz.detail
    (vcgencmd_dir / "throttled").write_text("0x60006")  # capped + throttled now
    hot = s.sample()
    assert hot.freq_mhz.value == 750.0 and hot.freq_mhz.detail.startswith("vcgencmd")
    assert hot.capped_now and hot.throttle_raw == 0x60006
