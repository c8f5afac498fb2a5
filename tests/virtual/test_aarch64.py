"""aarch64 virtual nodes: every process of the node is aarch64 (an arm64 Debian userland under
qemu-user), the CPU is the board's (A72 without dot product, A76 with), and the node shows the
same Pi interfaces as an x86 virtual node. Real sshd, real qemu, real arm64 Debian packages.

The first run builds the arm64 userland with mmdebstrap (about 4 minutes on this 2-core
machine, cached in /var/cache/edgekit-virtual/rootfs); later runs start a node in ~1 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from vcluster_helpers import SKIP_REASON, connect, run

from edgekit.errors import ClusterError, InputError
from edgekit.virtual import qemu
from edgekit.virtual.cluster import NodeSpec, VirtualCluster, plan

WHY_NOT = SKIP_REASON or qemu.unavailable()
pytestmark = [pytest.mark.cluster, pytest.mark.qemu]
needs_a64 = pytest.mark.skipif(WHY_NOT is not None, reason=f"aarch64 nodes: {WHY_NOT}")


@pytest.fixture(scope="module")
def a64(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualCluster]:
    """pi1: aarch64 Pi 4; pi2: aarch64 Pi 5; pi3: an x86 Pi 4 beside them."""
    if WHY_NOT:
        pytest.skip(f"aarch64 nodes: {WHY_NOT}")
    home = tmp_path_factory.mktemp("ekhome-a64")
    specs = [NodeSpec("pi4", cooling="fan", arch="aarch64"),
             NodeSpec("pi5", cooling="fan", arch="aarch64"),
             NodeSpec("pi4", cooling="fan", init="none")]
    vc = VirtualCluster.up(specs, home=home)
    try:
        yield vc
    finally:
        vc.down()


@needs_a64
def test_sessions_run_aarch64_with_the_boards_cpu(a64: VirtualCluster) -> None:
    script = ("uname -m; grep -m1 '^Features' /proc/cpuinfo; "
              "python3 -c 'import platform, sys; print(platform.machine(), sys.version_info[:2])'")
    seen = {}
    for node in ("pi1", "pi2", "pi3"):
        with connect(a64, node) as c:
            rc, out, err = run(c, script, timeout=120)
        assert rc == 0, err
        seen[node] = out.splitlines()
    assert seen["pi1"][0] == seen["pi2"][0] == "aarch64"
    assert seen["pi3"][0] == "x86_64"
    assert " asimd " in seen["pi1"][1] + " " and "asimddp" not in seen["pi1"][1]  # Cortex-A72
    assert "asimddp" in seen["pi2"][1]  # Cortex-A76: the dot product a Pi 5 has
    assert seen["pi1"][2].startswith("aarch64 (3, 11)")  # bookworm's python3.11, as on Pi OS


@needs_a64
def test_pi_interfaces_and_files_are_the_same_as_on_x86_nodes(a64: VirtualCluster) -> None:
    script = ('cat "$EDGEKIT_SYSROOT/sys/class/thermal/thermal_zone0/temp"; vcgencmd get_throttled;'
              ' tr -d "\\0" < "$EDGEKIT_SYSROOT/proc/device-tree/model"; echo; '
              'echo hello > ~/sd-card && cat ~/sd-card; cat /etc/os-release | head -1')
    with connect(a64, "pi2") as c:
        rc, out, err = run(c, script, timeout=60)
    assert rc == 0, err
    temp, throttled, model, hello, os_name = out.splitlines()[:5]
    assert 20_000 < int(temp) < 90_000
    assert throttled.startswith("throttled=0x")
    assert model.startswith("Raspberry Pi 5")
    assert hello == "hello"
    assert "bookworm" in os_name
    # the home is the same folder on the host (deploy state survives reboots, as on an SD card)
    assert (a64.record.node("pi2").home(a64.record.run_dir) / "sd-card").read_text() == "hello\n"


@needs_a64
def test_nodes_check_reports_aarch64_and_the_boards_features(a64: VirtualCluster) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgekit.cli.main", "nodes", "check", "--nodes",
         str(a64.inventory_path), "--json"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**_env(a64.home)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    nodes = {n["name"]: n for n in json.loads(proc.stdout)["nodes"]}
    assert nodes["pi1"]["arch"] == "aarch64" and nodes["pi2"]["arch"] == "aarch64"
    assert nodes["pi3"]["arch"] == "x86_64"
    assert all(n["ready"] for n in nodes.values())
    assert "asimddp" in nodes["pi2"]["simd"] and "asimddp" not in nodes["pi1"]["simd"]


@needs_a64
def test_reboot_brings_the_arm64_userland_back(a64: VirtualCluster) -> None:
    a64.reboot("pi1", graceful=False)
    with connect(a64, "pi1") as c:
        rc, out, err = run(c, "uname -m; echo $QEMU_CPU; cat ~/sd-card 2>/dev/null; true")
    assert rc == 0, err
    assert out.splitlines()[:2] == ["aarch64", "cortex-a72"]


def test_bad_arch_and_combinations_are_refused_before_anything_is_made() -> None:
    with pytest.raises(InputError, match="bad arch 'arm32'"):
        plan([NodeSpec("pi4", arch="arm32")], 1.0)
    with pytest.raises(InputError, match="linux32"):
        plan([NodeSpec("pi4", arch="aarch64", linux32=True)], 1.0)


def test_missing_qemu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "CANDIDATES", ("/nonexistent/qemu-aarch64",))
    with pytest.raises(ClusterError) as info:
        plan([NodeSpec("pi4", arch="aarch64")], 1.0)
    text = info.value.render()
    assert "qemu-user 8.0 or newer" in text or "no qemu-aarch64 installed" in text
    assert "bookworm-backports" in text  # the hint says how to get it


def test_old_qemu_is_named_with_its_version(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "qemu-aarch64"
    fake.write_text("#!/bin/sh\necho 'qemu-aarch64 version 7.2.0 (Debian 1:7.2+dfsg-7)'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(qemu, "CANDIDATES", (str(fake),))
    path, why = qemu.find()
    assert path is None
    assert "qemu 7.2" in why and "8.0 or newer" in why


def _env(home: Path) -> dict[str, str]:
    import os

    return {**os.environ, "EDGEKIT_HOME": str(home), "COLUMNS": "160"}
