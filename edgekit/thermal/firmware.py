"""Raspberry Pi firmware queries through `vcgencmd` on PATH, parsed strictly.

`vcgencmd` may be missing (not a Pi, not in the `video` group), fail (mailbox error) or print
garbage; every function here then answers `absent` with the reason instead of raising.
A `Vcgencmd` instance remembers a missing/failing command and retries it only now and then,
so a board without a sensor does not pay a process spawn per tick.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable

from edgekit.thermal import config
from edgekit.thermal.reading import Reading, absent

#: get_throttled bits (pi-facts.md): 0-3 "now", 16-19 the same "since boot".
THROTTLE_BITS = {
    0: "under_voltage",
    1: "freq_capped",
    2: "throttled",
    3: "soft_temp_limit",
}
_THROTTLED_RE = re.compile(r"^\s*throttled=0x([0-9a-fA-F]+)\s*$")
_CLOCK_RE = re.compile(r"^\s*frequency\(\d+\)=(\d+)\s*$")
_PMIC_RE = re.compile(
    r"^\s*(?P<rail>[A-Z0-9_]+?)_(?P<kind>[AV])\s+(?:current|volt)\(\d+\)=(?P<val>[-+0-9.eE]+)(?P<unit>[AV])\s*$"
)


class Vcgencmd:
    """Runs `vcgencmd ARGS` with a timeout; remembers failures per command to back off."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, exe: str = "vcgencmd"):
        self._clock = clock
        self._exe = exe
        self._retry_at: dict[str, float] = {}
        self._last_error: dict[str, str] = {}
        self.spawns = 0  # processes started (for the overhead measurement)

    def run(self, *args: str, retry_s: float = config.vcgencmd_retry_s) -> tuple[str | None, str]:
        """Return (stdout, "") or (None, reason). A failing command is not retried for retry_s."""
        key = " ".join(args)
        now = self._clock()
        if now < self._retry_at.get(key, float("-inf")):
            return None, self._last_error[key] + " (backing off)"
        path = shutil.which(self._exe)
        if path is None:
            return self._fail(key, now, retry_s, f"{self._exe} not found on PATH")
        self.spawns += 1
        try:
            proc = subprocess.run(
                [path, *args],
                capture_output=True,
                text=True,
                timeout=config.vcgencmd_timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return self._fail(key, now, retry_s, f"`{self._exe} {key}` timed out")
        except OSError as exc:
            return self._fail(key, now, retry_s, f"`{self._exe} {key}` could not run: {exc}")
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout).strip().splitlines()[:1]
            msg = err[0] if err else ""
            return self._fail(
                key, now, retry_s, f"`{self._exe} {key}` exit {proc.returncode} {msg}"
            )
        self._retry_at.pop(key, None)
        return proc.stdout, ""

    def backoff(self, *args: str, reason: str, retry_s: float = config.vcgencmd_retry_s) -> None:
        """Treat a command that ran but printed nothing usable as failing (ask again later)."""
        self._fail(" ".join(args), self._clock(), retry_s, reason)

    def _fail(self, key: str, now: float, retry_s: float, reason: str) -> tuple[None, str]:
        self._retry_at[key] = now + retry_s
        self._last_error[key] = reason
        return None, reason


def decode_throttled(raw: int) -> dict[str, bool | int]:
    """Decode a get_throttled word into `<flag>_now` and `<flag>_since_boot` booleans."""
    out: dict[str, bool | int] = {"raw": raw}
    for bit, name in THROTTLE_BITS.items():
        out[f"{name}_now"] = bool(raw & (1 << bit))
        out[f"{name}_since_boot"] = bool(raw & (1 << (bit + 16)))
    out["any_now"] = bool(raw & 0xF)
    return out


def parse_throttled(text: str) -> Reading:
    """Parse `throttled=0x50005` output."""
    for line in text.splitlines():
        m = _THROTTLED_RE.match(line)
        if m:
            return Reading(decode_throttled(int(m.group(1), 16)), "flags", "measured", "vcgencmd")
    return absent("flags", f"vcgencmd get_throttled printed garbage: {text.strip()[:60]!r}")


def get_throttled(vc: Vcgencmd) -> Reading:
    """Throttle state now and since boot, from `vcgencmd get_throttled`."""
    out, reason = vc.run("get_throttled")
    return parse_throttled(out) if out is not None else absent("flags", reason)


def parse_clock_mhz(text: str) -> Reading:
    """Parse `frequency(48)=1500000000` into MHz."""
    m = _CLOCK_RE.match(text.strip())
    if not m:
        return absent("MHz", f"vcgencmd measure_clock printed garbage: {text.strip()[:60]!r}")
    mhz = int(m.group(1)) / 1e6
    if not 0 < mhz <= config.max_plausible_freq_mhz:
        return absent("MHz", f"vcgencmd measure_clock arm: {mhz:.0f} MHz out of range")
    return Reading(mhz, "MHz", "measured", "vcgencmd measure_clock arm")


def measure_clock_arm(vc: Vcgencmd) -> Reading:
    """The real ARM clock (the firmware's, which throttling lowers) in MHz."""
    out, reason = vc.run("measure_clock", "arm")
    return parse_clock_mhz(out) if out is not None else absent("MHz", reason)


def parse_pmic(text: str) -> Reading:
    """Pi 5 `pmic_read_adc`: pair each rail's _A and _V lines by name, sum V*A, correct.

    EXT5V has a voltage but no current, so the rail sum undercounts the input power; the
    correction `config.pmic_gain * sum + config.pmic_offset_w` (pi-facts.md) estimates the
    board input. `detail` says how many rails were paired.
    """
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        m = _PMIC_RE.match(line)
        if not m:
            continue
        try:
            val = float(m.group("val"))
        except ValueError:
            continue
        (amps if m.group("kind") == "A" else volts)[m.group("rail")] = val
    rails = sorted(set(amps) & set(volts))
    if not rails:
        return absent("W", "pmic_read_adc: no rail with both current and voltage")
    rail_sum_w = sum(amps[r] * volts[r] for r in rails)
    watts = config.pmic_gain * rail_sum_w + config.pmic_offset_w
    if not 0 <= watts <= config.max_plausible_power_w:
        return absent("W", f"pmic_read_adc: {watts:.1f} W out of range")
    detail = f"pmic_read_adc {len(rails)} rails, {rail_sum_w:.2f} W rails, corrected"
    return Reading(round(watts, 3), "W", "measured", detail)


def pmic_power(vc: Vcgencmd) -> Reading:
    """Pi 5 board input power from the PMIC ADCs (absent on boards without a PMIC)."""
    out, reason = vc.run("pmic_read_adc", retry_s=config.pmic_retry_s)
    if out is None:
        return absent("W", reason)
    reading = parse_pmic(out)
    if not reading.ok:  # e.g. a Pi 4 firmware that answers but has no PMIC
        vc.backoff("pmic_read_adc", reason=reading.detail, retry_s=config.pmic_retry_s)
    return reading
