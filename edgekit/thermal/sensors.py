"""Node sensors read from files under `$EDGEKIT_SYSROOT` (see docs/NODE-INTERFACE.md).

One function per source; each returns a `Reading` (or a dict of them) and never raises for
bad hardware data: a missing file, an unparsable value or one outside the physical range is
`absent` with the path and the reason.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.thermal import config
from edgekit.thermal.reading import ESTIMATED, MEASURED, Reading, absent


def _read(path: Path) -> tuple[str | None, str]:
    try:
        return path.read_text(errors="replace").strip(), ""
    except OSError as exc:
        return None, f"{path}: {exc.strerror or exc}"


def _read_int(path: Path) -> tuple[int | None, str]:
    text, reason = _read(path)
    if text is None:
        return None, reason
    try:
        return int(text.split()[0]), ""
    except (ValueError, IndexError):
        return None, f"{path}: not an integer: {text[:40]!r}"


def board_model(root: Path) -> str:
    """Board name from the device tree (NUL-terminated), or "" when unknown."""
    text, _ = _read(root / "proc/device-tree/model")
    return (text or "").rstrip("\x00").strip()


def thermal_zones(root: Path) -> dict[str, Reading]:
    """Every thermal zone as "<zone>:<type>" -> °C (absent when implausible or unreadable)."""
    base = root / "sys/class/thermal"
    out: dict[str, Reading] = {}
    try:
        zones = sorted(p for p in base.iterdir() if p.name.startswith("thermal_zone"))
    except OSError:
        return out
    for zone in zones:
        kind, _ = _read(zone / "type")
        key = f"{zone.name}:{kind or '?'}"
        milli, reason = _read_int(zone / "temp")
        if milli is None:
            out[key] = absent("C", reason)
            continue
        temp_c = milli / 1000.0
        if not config.min_plausible_temp_c <= temp_c <= config.max_plausible_temp_c:
            out[key] = absent("C", f"{zone / 'temp'}: {temp_c:g} °C out of physical range")
        else:
            out[key] = Reading(temp_c, "C", MEASURED, str(zone / "temp"))
    return out


def soc_temp(zones: dict[str, Reading]) -> Reading:
    """The SoC temperature: the `cpu-thermal` zone, else the first valid zone."""
    if not zones:
        return absent("C", "no thermal zone under sys/class/thermal")
    ranked = sorted(zones.items(), key=lambda kv: (not kv[0].endswith(":cpu-thermal"), kv[0]))
    for _, reading in ranked:
        if reading.ok:
            return reading
    return ranked[0][1]


def cpufreq_mhz(root: Path, cpu: int = 0) -> dict[str, Reading]:
    """cpu<N> `cur` (scaling_cur_freq) and `max` (scaling_max_freq, else cpuinfo_max_freq)."""
    base = root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
    out: dict[str, Reading] = {}
    for key, names in (
        ("cur", ["scaling_cur_freq"]),
        ("max", ["scaling_max_freq", "cpuinfo_max_freq"]),
    ):
        reading = absent("MHz", f"{base}: no cpufreq")
        for name in names:
            khz, reason = _read_int(base / name)
            if khz is None:
                reading = absent("MHz", reason)
                continue
            mhz = khz / 1000.0
            if 0 < mhz <= config.max_plausible_freq_mhz:
                reading = Reading(mhz, "MHz", MEASURED, str(base / name))
                break
            reading = absent("MHz", f"{base / name}: {mhz:g} MHz out of range")
        out[key] = reading
    return out


def hwmon_dirs(root: Path, name: str | None = None) -> list[Path]:
    """hwmon folders (their numbers change between boots), optionally those whose `name` matches."""
    base = root / "sys/class/hwmon"
    try:
        dirs = sorted(p for p in base.iterdir() if p.name.startswith("hwmon"))
    except OSError:
        return []
    if name is None:
        return dirs
    return [d for d in dirs if (_read(d / "name")[0] or "") == name]


def under_voltage_hwmon(root: Path) -> Reading:
    """Under-voltage alarm from hwmon `rpi_volt` `in0_lcrit_alarm` (0/1)."""
    dirs = hwmon_dirs(root, "rpi_volt")
    if not dirs:
        return absent("bool", "no hwmon named rpi_volt")
    value, reason = _read_int(dirs[0] / "in0_lcrit_alarm")
    if value not in (0, 1):
        return absent("bool", reason or f"{dirs[0]}/in0_lcrit_alarm: {value} is not 0/1")
    return Reading(bool(value), "bool", MEASURED, str(dirs[0] / "in0_lcrit_alarm"))


def fan_rpm(root: Path) -> Reading:
    """Fan speed from any hwmon with `fan1_input` (Pi 5 `pwmfan`), absent when no fan."""
    for d in hwmon_dirs(root):
        if (d / "fan1_input").exists():
            rpm, reason = _read_int(d / "fan1_input")
            if rpm is None or not 0 <= rpm <= 50000:
                return absent("rpm", reason or f"{d}/fan1_input: {rpm} rpm out of range")
            return Reading(rpm, "rpm", MEASURED, str(d / "fan1_input"))
    return absent("rpm", "no hwmon fan1_input")


def hwmon_power(root: Path) -> Reading:
    """Board power from an INA219/INA3221-style hwmon: `power1_input` (µW), else
    `curr1_input` (mA) x `in1_input` (mV)."""
    for d in hwmon_dirs(root):
        uw, _ = _read_int(d / "power1_input") if (d / "power1_input").exists() else (None, "")
        if uw is not None:
            watts, how = uw / 1e6, f"{d}/power1_input"
        elif (d / "curr1_input").exists() and (d / "in1_input").exists():
            ma, r1 = _read_int(d / "curr1_input")
            mv, r2 = _read_int(d / "in1_input")
            if ma is None or mv is None:
                return absent("W", r1 or r2)
            watts, how = ma * mv / 1e6, f"{d}/curr1_input x in1_input"
        else:
            continue
        if not 0 <= watts <= config.max_plausible_power_w:
            return absent("W", f"{how}: {watts:g} W out of range")
        return Reading(round(watts, 3), "W", MEASURED, how)
    return absent("W", "no hwmon power/current sensor")


def estimate_power(
    board: str, util_frac: float | None, freq_mhz: float | None, max_mhz: float | None
) -> Reading:
    """Board power from utilisation and clock: idle + (full - idle) * util * clock/max.

    Idle/full figures per board are `config.board_power_w` (pi-facts.md). A throttled clock
    lowers the dynamic part proportionally (first-order: dynamic power ~ frequency).
    """
    name, idle_w, full_w = config.board_power(board)
    if util_frac is None:
        return absent("W", "no CPU utilisation to estimate power from")
    clock = 1.0
    if freq_mhz and max_mhz:
        clock = min(1.0, freq_mhz / max_mhz)
    watts = idle_w + (full_w - idle_w) * max(0.0, min(1.0, util_frac)) * clock
    guessed = "" if board.startswith(name) else f" (board {board or 'unknown'!r})"
    return Reading(round(watts, 3), "W", ESTIMATED, f"model {name}{guessed}: util x clock")
