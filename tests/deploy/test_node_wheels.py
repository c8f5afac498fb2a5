"""The node wheels: one per architecture, each carrying edgekit's native library built for it
(x86-64 natively, aarch64 cross-compiled), tagged so pip on a node takes only its own, and the
aarch64 library dispatching to the right kernels on a Pi 4 (Cortex-A72) and a Pi 5
(Cortex-A76) under qemu-user. Real builds (`pip wheel` of this checkout), no node needed."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgekit.deploy import wheels
from edgekit.errors import InputError

NATIVE = Path(__file__).resolve().parents[2] / "native"
SYSROOT = "/usr/aarch64-linux-gnu"
LIB = "edgekit/native/_lib/libedgekit_native.so"
HAVE_CROSS = shutil.which("aarch64-linux-gnu-gcc") is not None
needs_cross = pytest.mark.skipif(not HAVE_CROSS, reason="aarch64-linux-gnu-gcc missing "
                                 "(apt-get install gcc-aarch64-linux-gnu)")

#: a tiny aarch64 program: dlopen the wheel's library, print the variant it dispatched to,
#: and run the 2:4 sparse int8 kernel with it and with the portable reference (exact int32)
DRIVER = r"""
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "edgekit_native.h"
#define N 16
#define K 128
#define KK (K / 2)
#define SYM(name) __typeof__(name) *p_##name = dlsym(h, #name); if (!p_##name) return 3;

int main(int argc, char **argv) {
  void *h = dlopen(argv[1], RTLD_NOW);
  if (!h) { printf("dlopen: %s\n", dlerror()); return 2; }
  SYM(ek_variant) SYM(ek_force_variant) SYM(ek_linear_create) SYM(ek_linear_acc)
  SYM(ek_linear_destroy)
  int8_t vals[N * KK], xq[4 * K];
  uint8_t pos[(N / 8) * KK];
  float scale[N];
  uint32_t seed = 12345;
#define RND() (seed = seed * 1103515245u + 12345u, (int8_t)((seed >> 16) % 255 - 127))
  for (int i = 0; i < N * KK; i++) vals[i] = RND();
  for (int i = 0; i < 4 * K; i++) xq[i] = RND();
  /* two kept slots per group of 4, the pair varying by group and by block of 8 channels */
  for (int b = 0; b < N / 8; b++)
    for (int s = 0; s < KK; s++)
      pos[b * KK + s] = (uint8_t)((s % 2 ? 2 : 0) + (s / 2 + b) % 2);
  for (int i = 0; i < N; i++) scale[i] = 1.0f;
  int32_t got[2][4 * N];
  const char *names[2];
  for (int run = 0; run < 2; run++) {
    if (run == 1 && p_ek_force_variant("portable") != 0) return 4;
    names[run] = p_ek_variant();
    ek_linear *lin = NULL;
    if (p_ek_linear_create(vals, pos, scale, NULL, N, K, 2, 4, &lin) != 0) return 5;
    if (p_ek_linear_acc(lin, xq, 4, got[run], 1) != 0) return 6;
    p_ek_linear_destroy(lin);
  }
  /* the plain definition: kept slot s of channel c multiplies input 4 * (s / 2) + pos */
  int bad = 0;
  for (int r = 0; r < 4; r++)
    for (int c = 0; c < N; c++) {
      int32_t want = 0;
      for (int s = 0; s < KK; s++)
        want += vals[c * KK + s] * xq[r * K + 4 * (s / 2) + pos[(c / 8) * KK + s]];
      bad += got[0][r * N + c] != want || got[1][r * N + c] != want;
    }
  printf("variant: %s\nreference: %s\nmismatches: %d\n", names[0], names[1], bad);
  return bad != 0;
}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cache = tmp_path_factory.mktemp("wheel-cache")
    arches = ["x86_64"] + (["aarch64"] if HAVE_CROSS else [])
    return {arch: wheels.edgekit_wheel(cache, arch) for arch in arches}


def _elf(data: bytes) -> tuple[int, int]:
    """(EI_CLASS, e_machine) read straight from the header (not wheels.elf_machine)."""
    assert data[:4] == b"\x7fELF", "not an ELF file"
    return data[4], struct.unpack_from("<H", data, 18)[0]


def _lib(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        assert LIB in zf.namelist() and any(line.startswith(LIB + ",") for line in
                                            zf.read(_record(zf)).decode().splitlines())
        zf.extract(LIB, dest)
    return dest / LIB


def _record(zf: zipfile.ZipFile) -> str:
    return next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))


@pytest.mark.slow
def test_each_wheel_is_tagged_for_and_holds_a_library_of_its_arch(built, tmp_path) -> None:
    machines = {"x86_64": 62, "aarch64": 183}  # EM_X86_64, EM_AARCH64
    for arch, whl in built.items():
        assert whl.name == f"edgekit-0.1.0-py3-none-linux_{arch}.whl"
        so = _lib(whl, tmp_path / arch)
        assert _elf(so.read_bytes()[:20]) == (2, machines[arch]), arch  # ELFCLASS64
        wheels.check_library(whl, arch)
    if "aarch64" in built:
        with pytest.raises(wheels.BuildError, match="built for aarch64, not x86_64"):
            wheels.check_library(built["aarch64"], "x86_64")
        # a second call builds nothing: the same file from the cache (unless a colleague's
        # edit of the shared checkout changed the sources meanwhile: then it is a new wheel)
        if built["aarch64"].parent.name == f"edgekit-src-{wheels.source_digest()}-aarch64":
            again = wheels.edgekit_wheel(built["aarch64"].parent.parent, "aarch64")
            assert again == built["aarch64"]


@pytest.mark.slow
@needs_cross
def test_pip_accepts_only_the_wheel_of_its_own_platform(built, tmp_path) -> None:
    """pip's own tag logic: as CPython 3.11 on linux-aarch64 (what bookworm's python3.11 on a
    Pi reports) it takes the aarch64 wheel and refuses the x86-64 one; on this host the
    reverse. No compiler is involved: the wheel installs as files."""
    def dry_run(whl: Path, platform: str | None) -> subprocess.CompletedProcess:
        env = {**os.environ, **({"_PYTHON_HOST_PLATFORM": platform} if platform else {})}
        return subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps",
                               "--no-index", "--target", str(tmp_path / "t"), str(whl)],
                              capture_output=True, text=True, env=env, check=False)

    assert sys.version_info[:2] == (3, 11)  # the node's Python (bookworm)
    pi = "linux-aarch64"
    assert dry_run(built["aarch64"], pi).returncode == 0
    refused = dry_run(built["x86_64"], pi)
    assert refused.returncode != 0 and "not a supported wheel" in refused.stderr
    assert dry_run(built["aarch64"], None).returncode != 0
    assert dry_run(built["x86_64"], None).returncode == 0


@pytest.mark.slow
@needs_cross
def test_aarch64_library_needs_no_newer_glibc_than_bookworm(built, tmp_path) -> None:
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump is None:
        pytest.skip("aarch64-linux-gnu-objdump missing (binutils-aarch64-linux-gnu)")
    so = _lib(built["aarch64"], tmp_path)
    syms = subprocess.run([objdump, "-T", str(so)], capture_output=True, text=True,
                          check=True).stdout
    needed = {tuple(int(p) for p in v.split(".")) for v in re.findall(r"GLIBC_([\d.]+)", syms)}
    assert needed and max(needed) <= (2, 36), sorted(needed)  # bookworm ships glibc 2.36


@pytest.mark.slow
def test_x86_library_from_the_wheel_dispatches_like_the_host(built, tmp_path) -> None:
    from edgekit import native

    lib = ctypes.CDLL(str(_lib(built["x86_64"], tmp_path)))
    lib.ek_variant.restype = ctypes.c_char_p
    if native.variant() == "numpy-fallback":
        pytest.skip("the host's own library is not built, nothing to compare with")
    assert lib.ek_variant().decode() == native.variant()


@pytest.mark.slow
@pytest.mark.qemu
@needs_cross
@pytest.mark.parametrize(("cpu", "variant"),
                         [("cortex-a72", "neon"), ("cortex-a76", "neon-dotprod")])
def test_aarch64_library_from_the_wheel_under_qemu(built, tmp_path, cpu, variant) -> None:
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 missing (apt-get install qemu-user)")
    so = _lib(built["aarch64"], tmp_path)
    src = tmp_path / "driver.c"
    src.write_text(DRIVER)
    exe = tmp_path / "driver"
    subprocess.run(["aarch64-linux-gnu-gcc", "-O1", "-std=gnu11", f"-I{NATIVE / 'include'}",
                    str(src), "-o", str(exe), "-ldl"], check=True, capture_output=True)
    proc = subprocess.run(["qemu-aarch64", "-L", SYSROOT, "-cpu", cpu, str(exe), str(so)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"variant: {variant}\n" in proc.stdout and "mismatches: 0" in proc.stdout


def test_no_cross_compiler_is_a_build_error_naming_the_package(tmp_path, monkeypatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(wheels.BuildError) as exc:
        wheels.edgekit_wheel(tmp_path / "cache", "aarch64")
    assert "no C compiler for aarch64" in str(exc.value)
    assert "apt-get install gcc-aarch64-linux-gnu" in str(exc.value)
    with pytest.raises(wheels.BuildError, match="no native build for riscv64"):
        wheels.cross_compiler("riscv64")


def _fake_wheel(folder: Path, arch: str) -> Path:
    """An empty file with a wheel's name: the pins are chosen by name (platform tag) alone."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"edgekit-0.1.0-py3-none-linux_{arch}.whl"
    path.write_bytes(b"")
    return path


def test_pinned_wheels_per_arch(tmp_path, monkeypatch) -> None:
    x86, arm = _fake_wheel(tmp_path / "d", "x86_64"), _fake_wheel(tmp_path / "d", "aarch64")
    monkeypatch.setenv(wheels.NODE_WHEEL_ENV, str(tmp_path / "d"))
    assert wheels.node_wheel(tmp_path, "aarch64") == arm
    assert wheels.node_wheel(tmp_path, "arm64") == arm
    assert wheels.node_wheel(tmp_path, "x86_64") == x86
    monkeypatch.setenv(wheels.NODE_WHEEL_ENV, f"x86_64={x86}")
    with pytest.raises(InputError, match="pins no edgekit wheel for aarch64"):
        wheels.node_wheel(tmp_path, "aarch64")
    monkeypatch.setenv(wheels.NODE_WHEEL_ENV, f"aarch64={x86}")
    with pytest.raises(InputError, match="tagged for x86_64, given for aarch64"):
        wheels.node_wheel(tmp_path, "aarch64")
    other = _fake_wheel(tmp_path / "e", "x86_64")
    monkeypatch.setenv(wheels.NODE_WHEEL_ENV, f"{tmp_path / 'd'},{other}")
    with pytest.raises(InputError, match="two wheels for x86_64"):
        wheels.node_wheel(tmp_path, "x86_64")
    monkeypatch.setenv(wheels.NODE_WHEEL_ENV, str(tmp_path / "missing.whl"))
    with pytest.raises(InputError, match="not a wheel file"):
        wheels.node_wheel(tmp_path, "x86_64")


def test_a_changed_kernel_is_a_new_wheel_and_each_arch_its_own_runtime(tmp_path) -> None:
    root = wheels.source_root()
    tree = tmp_path / "src"
    for name in ("pyproject.toml", "setup.py"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / name, tree / name)
    for top in ("edgekit/deploy", "native/src", "native/include"):
        shutil.copytree(root / top, tree / top)
    before = wheels.source_digest(tree)
    neon = tree / "native/src/neon_dot.c"
    neon.write_text(neon.read_text() + "\n/* a kernel change */\n")
    assert wheels.source_digest(tree) != before
    reqs = ["numpy==2.0.0"]
    fps = {wheels.fingerprint(reqs, sha, "3.11.2", arch, True)
           for sha, arch in (("a" * 64, "x86_64"), ("b" * 64, "aarch64"), ("c" * 64, "aarch64"))}
    assert len(fps) == 3


def test_pins_are_the_same_whether_or_not_ray_was_imported() -> None:
    """Ray puts its vendored psutil first on sys.path when imported; the node pins (so the
    runtime fingerprint) must not follow it: a deploy from a process that had imported Ray
    reinstalled every node's runtime (and a later plain deploy did it again)."""
    code = ("import json, sys; from edgekit.deploy import wheels\n"
            "if sys.argv[1] == 'ray': import ray  # noqa: F401\n"
            "print(json.dumps(wheels.pins([])))")
    got = {how: subprocess.run([sys.executable, "-c", code, how], capture_output=True,
                               text=True, check=True).stdout for how in ("plain", "ray")}
    assert got["plain"] == got["ray"]


def test_a_requirement_with_its_own_range_is_not_pinned_to_the_host() -> None:
    """psutil: the host's version (5.9.8 under the dev extra) has no aarch64 wheel in this
    machine's index, so pinning it failed every Pi's provisioning."""
    got = wheels.pins([])
    assert "psutil>=5.9" in got and not any(p.startswith("psutil==") for p in got)
    assert any(p.startswith("numpy==") for p in got)  # the rest still follow the host
