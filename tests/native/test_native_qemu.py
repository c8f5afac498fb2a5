"""The C harness (every kernel vs the portable reference) natively and under qemu as a Pi 4
(cortex-a72: NEON without dotprod) and a Pi 5 (cortex-a76: NEON + dotprod)."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parents[2] / "native"
SYSROOT = "/usr/aarch64-linux-gnu"


def _build(tmp_root: Path, arch: str) -> Path:
    build = tmp_root / arch
    subprocess.run(["make", "-s", "-C", str(NATIVE), f"ARCH={arch}", f"BUILD={build}",
                    f"{build}/test_native"], check=True, capture_output=True, text=True)
    return build / "test_native"


def _passed(out: str) -> tuple[int, int]:
    m = re.search(r"^(\d+) passed, (\d+) failed$", out, re.M)
    assert m, out[-2000:]
    return int(m.group(1)), int(m.group(2))


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ek-native-build")


def test_harness_native(builds: Path) -> None:
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("make or cc missing")
    exe = _build(builds, platform.machine())
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    passed, failed = _passed(proc.stdout)
    assert proc.returncode == 0 and failed == 0 and passed > 1000, proc.stdout[-3000:]


@pytest.mark.qemu
@pytest.mark.parametrize(("cpu", "variant"),
                         [("cortex-a72", "neon"), ("cortex-a76", "neon-dotprod")])
def test_harness_qemu(builds: Path, cpu: str, variant: str) -> None:
    missing = [t for t in ("qemu-aarch64", "aarch64-linux-gnu-gcc", "make") if not shutil.which(t)]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} "
                    "(apt-get install qemu-user gcc-aarch64-linux-gnu)")
    exe = _build(builds, "aarch64")
    cmd = ["qemu-aarch64", "-L", SYSROOT, "-cpu", cpu, str(exe), "--expect", variant]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    passed, failed = _passed(proc.stdout)
    assert f"variant: {variant}" in proc.stdout
    assert proc.returncode == 0 and failed == 0 and passed > 1000, proc.stdout[-3000:]
