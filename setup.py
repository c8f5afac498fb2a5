"""Build step only: compile native/ into edgekit/native/_lib/libedgekit_native.so.

Project metadata lives in pyproject.toml. The library is a plain C shared object loaded with
ctypes (no Python headers needed, so the same sources also build the cross-compiled C test
harness). Each ISA variant is compiled with its own target flags; without a C compiler the
package still installs and edgekit.native falls back to numpy with a one-line warning.
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

ROOT = Path(__file__).resolve().parent
NATIVE = ROOT / "native"
LIB_NAME = "libedgekit_native.so"
BASE_FLAGS = ["-O3", "-std=c11", "-fPIC", "-pthread", "-ffp-contract=off", "-fno-math-errno"]
COMMON = ["dispatch.c", "linear.c", "portable.c", "threads.c"]
PER_ARCH = {
    "x86_64": {name: ["-mavx2", "-mfma", "-mf16c"] for name in ("avx2.c", "avx2_codec.c")},
    "aarch64": {"neon.c": ["-march=armv8-a"], "neon_dot.c": ["-march=armv8.2-a+dotprod"]},
}


def compile_native(out_dir: Path) -> Path | None:
    """Compile the library into out_dir; return its path, or None (with a warning) if we can't."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None or sys.platform != "linux":
        print("edgekit: no C compiler; edgekit.native will use numpy fallbacks", file=sys.stderr)
        return None
    arch = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    sources = {name: [] for name in COMMON} | PER_ARCH.get(arch, {})
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
            print(f"edgekit: native build failed ({exc}); numpy fallbacks", file=sys.stderr)
            return None
        target = out_dir / LIB_NAME
        shutil.copy2(tmp_lib, str(target) + ".tmp")
        os.replace(str(target) + ".tmp", target)  # never leave a half-written library
    return target


class BuildPyWithNative(build_py):
    """build_py that also compiles native/ (into the source tree for editable installs)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            compile_native(ROOT / "edgekit" / "native" / "_lib")
        else:
            compile_native(Path(self.build_lib) / "edgekit" / "native" / "_lib")


class BinaryDistribution(Distribution):
    """The wheel carries a compiled library: tag it for the platform, not py3-none-any."""

    def has_ext_modules(self) -> bool:
        return True


if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildPyWithNative}, distclass=BinaryDistribution)
