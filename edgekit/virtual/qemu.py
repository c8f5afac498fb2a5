"""qemu-user for aarch64 virtual nodes: find a usable static qemu-aarch64 and register it with
binfmt_misc, so every aarch64 binary of a node's arm64 userland runs transparently.

Why binfmt with the `F` flag: the kernel opens the interpreter once, at registration, so it
still runs inside a node's chroot, where no x86 file exists. That is also why qemu must be a
static build (its shared libraries would be looked up inside the chroot).

Why qemu 8.0 or newer: Debian 12's qemu-user 7.2 dies with SIGSEGV on importing the aarch64
onnxruntime and ai-edge-litert wheels; 10.0 (bookworm-backports) runs them, and 8.x is the
first line that also emulates /proc/cpuinfo for aarch64 guests.

The CPU model comes from QEMU_CPU in each node's environment (sshd SetEnv): a Pi 4 is a
Cortex-A72 (asimd, no dot product), a Pi 5 a Cortex-A76 (asimddp). binfmt_misc entries are
global to the machine, so the model cannot be part of the registration.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from edgekit.errors import ClusterError

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
ENTRY = "qemu-aarch64"
MIN_VERSION = (8, 0)
#: qemu's CPU model for each board (pi-facts.md: BCM2711 = 4x A72, BCM2712 = 4x A76)
CPU_OF_BOARD = {"pi4": "cortex-a72", "pi5": "cortex-a76"}
#: ELF header of an aarch64 executable and the mask binfmt compares it with (as qemu ships it)
MAGIC = (r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00")
MASK = (r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff")
#: where distributions put a static qemu-aarch64: Debian's binfmt wrapper (it keeps argv[0],
#: flag P), Ubuntu's qemu-user-static, Debian 13+'s qemu-user (static since 9.x)
CANDIDATES = ("/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "/usr/bin/qemu-aarch64-static",
              "/usr/bin/qemu-aarch64")
INSTALL_HINT = ("./dev.sh setup installs it: qemu-user from bookworm-backports on Debian 12, "
                "qemu-user-static (or qemu-user) where the distribution's qemu is 8.0 or newer")


def cpu_model(board: str) -> str:
    return CPU_OF_BOARD[board]


def _is_static(path: Path) -> bool:
    """An ELF without a PT_INTERP segment (static or static-pie)."""
    data = path.read_bytes()[:65536]
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff = int.from_bytes(data[32:40], "little")
    size, count = int.from_bytes(data[54:56], "little"), int.from_bytes(data[56:58], "little")
    for i in range(count):
        p_type = int.from_bytes(data[phoff + i * size: phoff + i * size + 4], "little")
        if p_type == 3:  # PT_INTERP: dynamically linked
            return False
    return True


def version(binary: Path) -> tuple[int, int] | None:
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                          check=False, timeout=30)
    m = re.search(r"version (\d+)\.(\d+)", proc.stdout)
    return (int(m.group(1)), int(m.group(2))) if m else None


def find() -> tuple[Path | None, str]:
    """(a usable static qemu-aarch64, "") or (None, why not)."""
    seen = []
    for cand in CANDIDATES:
        path = Path(cand)
        if not path.exists():
            continue
        real = path.resolve()
        ver = version(real)
        if ver is None:
            seen.append(f"{cand}: no version")
        elif ver < MIN_VERSION:
            seen.append(f"{cand} is qemu {ver[0]}.{ver[1]}, which crashes on the aarch64 "
                        "onnxruntime wheel (8.0 or newer needed)")
        elif not _is_static(real):
            seen.append(f"{cand} is dynamically linked (a chrooted node cannot load its libraries)")
        else:
            return path, ""
    return None, "; ".join(seen) or "no qemu-aarch64 installed"


def unavailable() -> str | None:
    """Why aarch64 nodes cannot run here, or None."""
    path, why = find()
    if path is None:
        return why
    if shutil.which("mmdebstrap") is None:
        return "mmdebstrap not installed (it builds the nodes' arm64 Debian userland)"
    return None


def registration() -> dict[str, str]:
    """The current binfmt entry for aarch64 ({} when there is none)."""
    entry = BINFMT_DIR / ENTRY
    if not entry.exists():
        return {}
    out = {}
    for line in entry.read_text().splitlines():
        key, _, value = line.partition(" ")
        out[key] = value.strip() if key != "enabled" else "yes"
    return out


def ensure_binfmt() -> Path:
    """Mount binfmt_misc if needed and register qemu-aarch64 with flag F (kept if an entry
    with F and a new-enough static qemu is there already). Returns the interpreter."""
    path, why = find()
    if path is None:
        raise ClusterError(f"aarch64 virtual nodes need qemu-user 8.0 or newer: {why}",
                           hint=INSTALL_HINT)
    if not (BINFMT_DIR / "register").exists():
        proc = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ClusterError(f"cannot mount binfmt_misc: {proc.stderr.strip()}",
                               where=str(BINFMT_DIR))
    cur = registration()
    if cur:
        interp = Path(cur.get("interpreter", ""))
        if "F" in cur.get("flags", "") and interp.exists() and interp.resolve() == path.resolve():
            return path
        (BINFMT_DIR / ENTRY).write_text("-1")  # an entry we cannot use inside a chroot: replace
    flags = "POF" if path.name.endswith("-binfmt-P") else "OF"
    line = f":{ENTRY}:M::{MAGIC}:{MASK}:{path}:{flags}"
    try:
        (BINFMT_DIR / "register").write_text(line)
    except OSError as exc:
        raise ClusterError(f"cannot register qemu-aarch64 with binfmt_misc: {exc}",
                           where=str(BINFMT_DIR / "register")) from None
    return path
