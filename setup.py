"""Build step only: compile native/ into edgekit/native/_lib/libedgekit_native.so.

Project metadata lives in pyproject.toml. The library is a plain C shared object loaded with
ctypes (no Python headers needed, so the same sources also build the cross-compiled C test
harness). Each ISA variant is compiled with its own target flags; the one library picks the
best variant at load (native/src/dispatch.c).

Target: the host's architecture, or EDGEKIT_NATIVE_ARCH (x86_64 | aarch64) with the compiler
from $CC (default for another architecture: its Debian cross compiler, e.g.
aarch64-linux-gnu-gcc). The wheel is tagged `py3-none-linux_<arch>`: the library has no
Python ABI, but pip on a node must accept only the wheel built for its CPU.

Without a C compiler a plain `pip install .` still installs and edgekit.native falls back to
numpy with a one-line warning. With EDGEKIT_NATIVE_ARCH set (how `edgekit deploy` builds the
node wheels) a failed compile fails the build: a node must never get the fallback silently.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:  # setuptools >= 70.1 carries bdist_wheel itself
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # older setuptools: the `wheel` package's
    from wheel.bdist_wheel import bdist_wheel

ROOT = Path(__file__).resolve().parent
NATIVE = ROOT / "native"
LIB_NAME = "libedgekit_native.so"
ARCH_ENV = "EDGEKIT_NATIVE_ARCH"
BASE_FLAGS = ["-O3", "-std=c11", "-fPIC", "-pthread", "-ffp-contract=off", "-fno-math-errno"]
COMMON = ["dispatch.c", "linear.c", "portable.c", "threads.c"]
#: flags of every source per target (aarch64: Armv8.0 baseline, what a Pi 3/4 runs; x86-64:
#: the plain baseline, AVX2 is only in the files below and chosen at run time)
ARCH_FLAGS = {"x86_64": [], "aarch64": ["-march=armv8-a"]}
PER_ARCH = {
    "x86_64": {name: ["-mavx2", "-mfma", "-mf16c"] for name in ("avx2.c", "avx2_codec.c")},
    "aarch64": {"neon.c": ["-march=armv8-a"], "neon_dot.c": ["-march=armv8.2-a+dotprod"]},
}
CROSS_CC = {"aarch64": "aarch64-linux-gnu-gcc", "x86_64": "x86_64-linux-gnu-gcc"}
ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


def host_arch() -> str:
    arch = platform.machine().lower()
    return ALIASES.get(arch, arch)


def target_arch() -> tuple[str, bool]:
    """The architecture to build for, and whether it was asked for explicitly."""
    asked = os.environ.get(ARCH_ENV, "").strip().lower()
    if not asked:
        return host_arch(), False
    arch = ALIASES.get(asked, asked)
    if arch not in PER_ARCH:
        sys.exit(f"edgekit: {ARCH_ENV}={asked} is not a supported target "
                 f"({', '.join(PER_ARCH)})")
    return arch, True


def compiler(arch: str) -> str | None:
    if os.environ.get("CC"):
        return os.environ["CC"]
    if arch != host_arch():
        return shutil.which(CROSS_CC[arch])
    return shutil.which("cc") or shutil.which("gcc")


def _fail(message: str, strict: bool) -> None:
    if strict:
        sys.exit(f"edgekit: {message}")
    print(f"edgekit: {message}; edgekit.native will use numpy fallbacks", file=sys.stderr)


def compile_native(out_dir: Path, arch: str, strict: bool) -> Path | None:
    """Compile the library for `arch` into out_dir; its path, or None if we can't (an error
    instead when `strict`)."""
    cc = compiler(arch)
    if cc is None or sys.platform != "linux":
        _fail(f"no C compiler for {arch}" + (f" ({CROSS_CC[arch]})" if arch != host_arch()
                                               else ""), strict)
        return None
    sources = {name: list(ARCH_FLAGS[arch]) for name in COMMON} | PER_ARCH[arch]
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgekit-native-") as tmp:
        objs = []
        try:
            for name, flags in sources.items():
                obj = Path(tmp) / (name + ".o")
                cmd = [cc, *BASE_FLAGS, *flags, f"-I{NATIVE / 'include'}", "-c",
                       str(NATIVE / "src" / name), "-o", str(obj)]
                subprocess.run(cmd, check=True)
                objs.append(str(obj))
            tmp_lib = Path(tmp) / LIB_NAME
            link = [cc, "-shared", "-pthread", *objs, "-o", str(tmp_lib), "-lm"]
            subprocess.run(link, check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            _fail(f"native build for {arch} with {cc} failed ({exc})", strict)
            return None
        target = out_dir / LIB_NAME
        shutil.copy2(tmp_lib, str(target) + ".tmp")
        os.replace(str(target) + ".tmp", target)  # never leave a half-written library
    return target


class BuildPyWithNative(build_py):
    """build_py that also compiles native/ (into the source tree for editable installs)."""

    def run(self) -> None:
        super().run()
        arch, strict = target_arch()
        if getattr(self, "editable_mode", False):
            if arch != host_arch():  # the tree's library is the one this machine loads
                sys.exit(f"edgekit: an editable install cannot hold a {arch} library")
            compile_native(ROOT / "edgekit" / "native" / "_lib", arch, strict)
        else:
            compile_native(Path(self.build_lib) / "edgekit" / "native" / "_lib", arch, strict)


class BinaryDistribution(Distribution):
    """The wheel carries a compiled library: tag it for the platform, not py3-none-any."""

    def has_ext_modules(self) -> bool:
        return True


class PlatformWheel(bdist_wheel):
    """py3-none-linux_<target arch>: any CPython 3 (ctypes, no ABI), one CPU architecture."""

    def get_tag(self) -> tuple[str, str, str]:
        return "py3", "none", f"linux_{target_arch()[0]}"


if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildPyWithNative, "bdist_wheel": PlatformWheel},
          distclass=BinaryDistribution)
