"""Acceptance: a CPU-bound load on a bare virtual Pi 4 heats it past 80 °C, the firmware
throttles it (bits 1 and 2 now, 17 and 18 afterwards), its clock drops and its work really
slows down, while an idle neighbour stays cool. Directions only, never exact timings.

pi1 of the shared cluster sits in a 35 °C room (documented in docs/VIRTUAL-CLUSTER.md) so it
passes 80 °C within about 6 s of full load instead of about 15 s.
"""

from __future__ import annotations

import threading
import time

import pytest
from vcluster_helpers import connect, needs_cluster, run

from edgekit.virtual.cluster import VirtualCluster

pytestmark = [needs_cluster, pytest.mark.cluster]

LOAD = """\
import os, sys, time
print(os.getpid(), flush=True)
end = time.monotonic() + float(sys.argv[1])
n, last = 0, time.monotonic()
while time.monotonic() < end:
    for _ in range(2000):
        pass
    n += 1
    now = time.monotonic()
    if now - last >= 0.2:
        print(f"{now:.3f} {n}", flush=True)
        last = now
"""


def read(vc: VirtualCluster, node: str) -> tuple[float, int]:
    """Temperature (°C) and clock (MHz) from the node's files, read host-side so polling
    costs the loaded node nothing."""
    root = vc.sysroot(node)
    temp = int((root / "sys/class/thermal/thermal_zone0/temp").read_text()) / 1000
    khz = int((root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq").read_text())
    return temp, khz // 1000


def throttled(client) -> int:  # type: ignore[no-untyped-def]
    rc, out, _ = run(client, "vcgencmd get_throttled")
    assert rc == 0 and out.startswith("throttled=0x"), out
    return int(out.strip().split("=")[1], 16)


def work_rate(samples: list[tuple[float, int]], start: float, end: float) -> float:
    """Loop iterations per wall second between two monotonic times."""
    inside = [(t, n) for t, n in samples if start <= t <= end]
    assert len(inside) >= 3, f"too few progress samples in [{start:.1f}, {end:.1f}]"
    (t0, n0), (t1, n1) = inside[0], inside[-1]
    return (n1 - n0) / (t1 - t0)


def wait_until(predicate, timeout_s: float, what: str) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_load_heats_throttles_and_slows_only_that_node(shared_cluster: VirtualCluster):
    vc = shared_cluster
    group = vc.group("pi1")
    max_mhz = read(vc, "pi1")[1]
    hot = connect(vc, "pi1")
    neighbour = connect(vc, "pi2")
    samples: list[tuple[float, int]] = []
    try:
        assert throttled(hot) == 0
        assert read(vc, "pi1")[0] < 80
        sftp = hot.open_sftp()
        with sftp.open("load.py", "w") as fh:
            fh.write(LOAD)
        sftp.close()
        _, out, _ = hot.exec_command("python3 load.py 120")
        load_pid = int(out.readline())

        def collect() -> None:
            for line in out:
                t, n = line.split()
                samples.append((float(t), int(n)))

        threading.Thread(target=collect, daemon=True).start()
        quota_before = group.cpu_cores()
        time.sleep(1.0)  # let the load settle
        t0, cpu0 = time.monotonic(), group.usage_ns()

        t_thr = wait_until(lambda: read(vc, "pi1")[1] < max_mhz, 90, "pi1 to throttle")
        cpu_thr = group.usage_ns()
        peak = read(vc, "pi1")[0]
        bits = throttled(hot)
        assert bits & 0b110 == 0b110, hex(bits)  # ARM frequency capped + throttled, now
        assert peak >= 80.0 - 1.0  # the governor acted at 80 °C (cooling a little since)

        time.sleep(1.5)  # the governor may take another step; then measure the slow phase
        t1, cpu1 = time.monotonic(), group.usage_ns()
        time.sleep(3.0)
        t2, cpu2 = time.monotonic(), group.usage_ns()
        temp_now, mhz_now = read(vc, "pi1")
        _, clock = run(hot, "vcgencmd measure_clock arm")[:2]
        assert int(clock.split("=")[1]) < max_mhz * 1_000_000

        cpu_before = (cpu_thr - cpu0) / 1e9 / (t_thr - t0)
        cpu_after = (cpu2 - cpu1) / 1e9 / (t2 - t1)
        work_before = work_rate(samples, t0, t_thr)
        work_after = work_rate(samples, t1, t2)
        report = (
            f"cpu {cpu_before:.3f} -> {cpu_after:.3f} cores, work {work_before:.0f} -> "
            f"{work_after:.0f} it/s, quota {quota_before:.2f} -> {group.cpu_cores():.2f}, "
            f"clock {mhz_now} MHz, temp {temp_now:.1f} °C, throttle after {t_thr - t0:.1f} s"
        )
        print(report)
        quota_after = group.cpu_cores()
        assert quota_after < quota_before, report
        # the cgroup holds the throttled node to its new quota, whatever the machine's load
        assert cpu_after <= 1.1 * quota_after, report
        # it runs slower only if it got more than that before: on a loaded 2-core host the
        # load may already have been starved below the new quota (seen in CI at load 19:
        # 0.19 cores before, quota 0.40 -> 0.20), and then there is nothing to slow
        if cpu_before > 1.3 * quota_after:
            assert cpu_after < 0.85 * cpu_before, report
            assert work_after < 0.85 * work_before, report

        # the idle neighbour stayed cool and unthrottled
        assert read(vc, "pi2")[0] < 70
        assert throttled(neighbour) == 0

        # stop the load and cool the room: the clock recovers, only the sticky bits remain
        run(hot, f"kill {load_pid}")
        vc.heat("pi1", ambient_c=20.0)
        wait_until(lambda: read(vc, "pi1")[1] == max_mhz, 60, "pi1 to recover its clock")
        bits = throttled(hot)
        assert bits & 0b110 == 0, hex(bits)
        assert bits & (0b110 << 16) == 0b110 << 16, hex(bits)  # bits 17 and 18: since boot
        assert group.cpu_cores() == pytest.approx(quota_before, rel=0.01)
    finally:
        vc.heat("pi1", ambient_c=35.0)
        run(hot, "pkill -u $(id -u) -f load.py || true")
        hot.close()
        neighbour.close()
