"""What a virtual node pretends to be: board identities, power figures and cooling profiles.

Figures come from ../shared/docs/pi-facts.md (Raspberry Pi documentation and published
measurements); where no figure is published the value is a modelling choice, marked as such
here and explained in docs/VIRTUAL-CLUSTER.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: all nodes' CPU caps together, as a share of this machine's cores (leave room for sshd,
#: the supervisor and the host-side test itself).
cpu_budget_share = 0.9
#: the real firmware starts stepping the ARM clock down at this temperature
throttle_temp_c = 80.0
#: temp_limit: ARM (and GPU) throttle hard, straight to the lowest clock
hard_limit_temp_c = 85.0
#: modelling choice: clock steps back up once this far below throttle_temp_c
recover_hysteresis_c = 3.0
#: the firmware changes the clock at most once per this interval (about 1 s on a Pi)
governor_interval_s = 1.0
#: supervisor tick (4 Hz: node code samples at 1 Hz or faster)
tick_s = 0.25
#: default room temperature
ambient_c = 25.0


@dataclass(frozen=True)
class Board:
    """One Raspberry Pi model as node code sees it."""

    name: str  # "pi4" / "pi5"
    model: str  # /proc/device-tree/model
    features: str  # /proc/cpuinfo Features line
    cpu_part: str  # /proc/cpuinfo CPU part (0xd08 Cortex-A72, 0xd0b Cortex-A76)
    cpu_variant: str
    cpu_revision: int
    revision_suffix: str  # board revision code after the memory-size nibble
    freqs_mhz: tuple[int, ...]  # firmware clock steps, fastest first
    idle_w: float  # whole-board power at idle (pi-facts.md)
    full_w: float  # whole-board power at full CPU load, full clock (pi-facts.md)
    speed: float  # relative compute speed, Pi 4 = 1 (Raspberry Pi: Pi 5 is 2-3x a Pi 4)
    default_ram_bytes: int
    has_pmic: bool
    has_fan_header: bool

    @property
    def max_mhz(self) -> int:
        return self.freqs_mhz[0]

    @property
    def min_mhz(self) -> int:
        return self.freqs_mhz[-1]


GiB = 1024**3

BOARDS: dict[str, Board] = {
    "pi4": Board(
        name="pi4",
        model="Raspberry Pi 4 Model B Rev 1.4",
        features="fp asimd evtstrm crc32 cpuid",
        cpu_part="0xd08",
        cpu_variant="0x0",
        cpu_revision=3,
        revision_suffix="03114",
        freqs_mhz=(1500, 1000, 750, 600),
        idle_w=3.1,
        full_w=6.1,
        speed=1.0,
        default_ram_bytes=4 * GiB,
        has_pmic=False,
        has_fan_header=False,
    ),
    "pi5": Board(
        name="pi5",
        model="Raspberry Pi 5 Model B Rev 1.0",
        features=(
            "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
            "asimdrdm lrcpc dcpop asimddp"
        ),
        cpu_part="0xd0b",
        cpu_variant="0x4",
        cpu_revision=1,
        revision_suffix="04170",
        freqs_mhz=(2400, 2200, 2000, 1800, 1500),
        idle_w=2.7,
        full_w=9.0,
        speed=2.5,
        default_ram_bytes=4 * GiB,
        has_pmic=True,
        has_fan_header=True,
    ),
}


@dataclass(frozen=True)
class Cooling:
    """A first-order RC model of one way of cooling one board.

    r_th_k_per_w: die-to-ambient thermal resistance (steady state T = T_amb + P * R).
    tau_s: time constant of the lumped die + board + heatsink mass.
    fan_r_factor: with a temperature-controlled fan, R = r_th / (1 + fan_r_factor * duty).
    """

    name: str
    r_th_k_per_w: float
    tau_s: float
    fan_curve: bool = False
    fan_r_factor: float = 0.0


# Modelling choices, calibrated against pi-facts.md (see docs/VIRTUAL-CLUSTER.md):
#  pi4/none: 25 °C room, idle 59 °C, full load 92 °C -> throttles (as bare Pi 4s do).
#  pi4/heatsink: full load 68 °C at 25 °C room, throttles above about 37 °C room.
#  pi4/fan (always-on case fan): full load 59 °C.
#  pi5/none: full load 88 °C (published: about 81 °C average, 89 °C peak without heatsink).
#  pi5/heatsink: the Active Cooler's heatsink with the fan stopped, full load 75 °C.
#  pi5/fan: Active Cooler with the firmware fan curve, settles at about 56-60 °C
#  (published: about 56 °C average at a steady 2.4 GHz).
COOLING: dict[tuple[str, str], Cooling] = {
    ("pi4", "none"): Cooling("none", 11.0, 15.0),
    ("pi4", "heatsink"): Cooling("heatsink", 7.0, 60.0),
    ("pi4", "fan"): Cooling("fan", 5.5, 40.0),
    ("pi5", "none"): Cooling("none", 7.0, 15.0),
    ("pi5", "heatsink"): Cooling("heatsink", 5.5, 60.0),
    ("pi5", "fan"): Cooling("fan", 5.5, 40.0, fan_curve=True, fan_r_factor=1.2),
}
COOLING_NAMES = ("none", "heatsink", "fan")

#: Pi 5 Active Cooler default curve (pi-facts.md): (on at °C, duty); 5 °C hysteresis.
FAN_CURVE: tuple[tuple[float, float], ...] = ((50.0, 0.3), (60.0, 0.5), (67.5, 0.7), (75.0, 1.0))
FAN_HYSTERESIS_C = 5.0
#: modelling choice (unverified): Active Cooler speed at 100 % duty
FAN_MAX_RPM = 8000


def board(name: str) -> Board:
    from edgekit.errors import InputError

    try:
        return BOARDS[name]
    except KeyError:
        raise InputError(f"unknown board {name!r}: use one of {', '.join(BOARDS)}") from None


def cooling(board_name: str, name: str) -> Cooling:
    from edgekit.errors import InputError

    try:
        return COOLING[(board_name, name)]
    except KeyError:
        raise InputError(
            f"unknown cooling {name!r}: use one of {', '.join(COOLING_NAMES)}"
        ) from None


def revision_code(b: Board, ram_bytes: int) -> str:
    """Board revision code as in /proc/cpuinfo: the first nibble encodes the RAM size."""
    sizes = {1: "a", 2: "b", 4: "c", 8: "d", 16: "e"}
    gib = max(1, round(ram_bytes / GiB))
    nibble = sizes.get(gib) or sizes[min(sizes, key=lambda s: abs(s - gib))]
    return nibble + b.revision_suffix


def cpu_budget_cores() -> float:
    """CPU (in cores) all nodes of one cluster may use together."""
    return round((os.cpu_count() or 1) * cpu_budget_share, 3)


def split_caps(boards: list[Board], budget_cores: float) -> list[float]:
    """Each node's full-speed CPU cap, proportional to its board's speed, summing to budget."""
    total = sum(b.speed for b in boards)
    return [round(budget_cores * b.speed / total, 4) for b in boards]
