"""Is the int8 model faster than fp32? Measured on this host; per Pi board, said plainly.

On the host both models run one thread each, alternating run by run after a warm-up, and the
medians are compared: alternating keeps a neighbour's load burst from landing on one model
only. int8 is not always faster: weight-only int8 dequantizes every weight on every run, and
per-channel static int8 on a CNN has measured 2-3x slower than fp32 on x86 hosts.

The Pi boards are not measured at quantize time, and the report says so. The only Pi 4 / Pi 5
this machine has is qemu emulating a Cortex-A72 / A76, and emulation slows kinds of work very
unevenly (benchmarks/qemu_slowdown.py, docs/VIRTUAL-CLUSTER.md: ONNX Runtime fp32 133-184x,
int8 MatMulInteger 9-10x, numpy fp32 matmul 536-562x), so an int8/fp32 ratio timed under qemu
would favour int8 by an order of magnitude that a real board does not show. A figure that
looked like a Pi measurement and is not would be worse than none. On a board, deploy both
bundles and compare them with `edgekit bench`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

Feeds = dict[str, np.ndarray]

#: int8 latency above fp32's by more than this is called slower (the medians' noise band on
#: a shared 2-core host is a few percent)
SLOWER = 1.05
#: the Pi boards edgekit deploys to: name, core (pi-facts: BCM2711 = A72, BCM2712 = A76)
BOARDS = {"pi4": ("Pi 4", "Cortex-A72"), "pi5": ("Pi 5", "Cortex-A76")}
UNMEASURED = ("unmeasured: no Pi was measured, and timings under qemu emulation do not carry "
              "over to one (emulation slows fp32 math 130-560x, int8 only 9-59x); compare the "
              "two bundles on the board with `edgekit bench`")


@dataclass
class BoardSpeed:
    """int8 vs fp32 on one Pi board: a measured ratio, or None and why not."""

    board: str  # "pi4" | "pi5"
    name: str  # "Pi 4"
    cpu: str
    speed_ratio: float | None  # int8 latency / fp32 latency; None: unmeasured
    note: str


def host_latency(fp32: Any, int8: Any, feed: Feeds, repeats: int = 7) -> tuple[float, float]:
    """Median milliseconds of one run of each session on ``feed``, runs alternating."""
    fp32.run(None, feed)  # warm-up: first runs allocate and pick kernels
    int8.run(None, feed)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for sess, out in ((fp32, times[0]), (int8, times[1])):
            start = time.perf_counter()
            sess.run(None, feed)
            out.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times[0]), statistics.median(times[1])


def boards() -> list[BoardSpeed]:
    """What the report says per Pi board (see the module docstring for why unmeasured)."""
    return [BoardSpeed(board, name, cpu, None, UNMEASURED)
            for board, (name, cpu) in BOARDS.items()]


def board_lines(speeds: list[BoardSpeed]) -> list[str]:
    """One line per distinct verdict, e.g. "Pi 4 (Cortex-A72), Pi 5 (Cortex-A76): int8 vs fp32
    speed unmeasured: ..."."""
    groups: dict[tuple[float | None, str], list[str]] = {}
    for b in speeds:
        groups.setdefault((b.speed_ratio, b.note), []).append(f"{b.name} ({b.cpu})")
    out = []
    for (ratio, note), names in groups.items():
        what = "unmeasured" if ratio is None else f"int8/fp32 latency {ratio:.2f}"
        out.append(f"{', '.join(names)}: int8 vs fp32 speed {what}"
                   + (f" - {note.removeprefix('unmeasured: ')}" if note else ""))
    return out


def slower_warning(fp32_ms: float, int8_ms: float, mode: str) -> str | None:
    """The warning for an int8 model slower than fp32 on this host, or None."""
    if not (fp32_ms > 0 and int8_ms > fp32_ms * SLOWER):
        return None
    if "weight-only" in mode:
        why = ("weight-only int8 computes in fp32 and dequantizes every weight on every run, "
               "so it buys size, not speed")
    elif "fp32 activations" in mode:
        why = ("the layers on fp32 activations add quantize/dequantize steps around fp32 "
               "compute")
    else:
        why = ("this CPU's int8 kernels (and the quantize/dequantize steps between them) cost "
               "more here than fp32's")
    return (f"the int8 model is {int8_ms / fp32_ms:.1f}x SLOWER than fp32 on this host "
            f"({int8_ms:.3g} vs {fp32_ms:.3g} ms, median, 1 thread): {why}; Pi 4 / Pi 5 speed "
            "is unmeasured - compare both on the board before choosing int8 for speed")
