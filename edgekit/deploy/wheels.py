"""Host side of provisioning: the node requirements pinned to the host's installed versions,
edgekit's own wheel, and (for --offline) a wheelhouse for the node's platform.

Everything built here is cached under $EDGEKIT_HOME/wheelhouse/ and keyed by content, so a
second deploy builds nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import edgekit
from edgekit.errors import EdgekitError, InputError

#: a prebuilt edgekit wheel to install on the nodes instead of building this checkout's (CI and
#: the tests pin one, so colleagues editing the tree mid-run do not change the node runtime)
NODE_WHEEL_ENV = "EDGEKIT_NODE_WHEEL"

#: glibc versions a 64-bit Raspberry Pi OS / Debian 12 node accepts (bookworm: glibc 2.36)
GLIBC_MINORS = range(17, 37)


class BuildError(EdgekitError):
    """A wheel could not be built or downloaded on the host."""

    exit_code = 7


def pins(extras: list[str]) -> list[str]:
    """`name==version` for every node package, from the host's own install."""
    out = []
    from edgekit.deploy.assets import node_requirements

    for name in (*node_requirements(), *sorted(set(extras))):
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            raise InputError(f"{name} is not installed on the host, so its version cannot be "
                             "pinned for the nodes", hint=f"pip install {name}") from None
    return out


def source_root() -> Path:
    root = Path(edgekit.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise InputError("edgekit is not installed from a source checkout; cannot build its "
                         "wheel for the nodes", where=str(root))
    return root


def source_digest() -> str:
    """Hash of edgekit's sources: a changed file means a new node runtime."""
    root = source_root()
    h = hashlib.sha256((root / "pyproject.toml").read_bytes())
    pkg = root / "edgekit"
    for p in sorted(pkg.rglob("*")):
        if p.is_file() and p.suffix in (".py", ".sh", ".typed") and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(pkg)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def node_wheel(cache: Path) -> Path:
    """The edgekit wheel the nodes get: $EDGEKIT_NODE_WHEEL, or one built from this checkout."""
    pinned = os.environ.get(NODE_WHEEL_ENV)
    if pinned:
        path = Path(pinned)
        if not path.is_file() or not path.name.endswith(".whl"):
            raise InputError(f"{NODE_WHEEL_ENV} is not a wheel file", where=pinned)
        return path
    return edgekit_wheel(cache)


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def edgekit_wheel(cache: Path) -> Path:
    """Build (once per source digest) `pip wheel --no-deps` of this checkout."""
    out = cache / f"edgekit-src-{source_digest()}"
    found = sorted(out.glob("edgekit-*.whl"))
    if found:
        return found[0]
    tmp = out.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build = tmp / "build"
    # build from a copy: setuptools writes build/ and *.egg-info into the tree it builds
    root = source_root()
    top_level = {".git", ".venv", "build", "tests", "benchmarks", "native", "docs", "deploy"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
        return skip | (top_level & set(names) if Path(folder) == root else set())

    shutil.copytree(root, build, ignore=ignore)
    # The checkout's setup.py compiles native/ for the *host's* CPU and tags the wheel for
    # it; nodes get the pure-Python package (edgekit.native falls back to numpy there), so
    # one py3-none-any wheel serves aarch64 Pis and x86-64 virtual nodes alike.
    (build / "setup.py").write_text("from setuptools import setup\n\nsetup()\n")
    _pip("wheel", "--no-deps", "-q", "-w", str(tmp), str(build))
    shutil.rmtree(build)
    tmp.rename(out)
    return sorted(out.glob("edgekit-*.whl"))[0]


def platform_tags(arch: str) -> list[str]:
    arch = {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)
    return [f"manylinux_2_{m}_{arch}" for m in GLIBC_MINORS] + [f"manylinux2014_{arch}"]


def wheelhouse(cache: Path, requirements: list[str], arch: str, python: str) -> Path:
    """Download binary wheels of `requirements` (and their dependencies) for the node."""
    pyver = ".".join(python.split(".")[:2])
    key = hashlib.sha256(f"{arch} {pyver} {' '.join(sorted(requirements))}".encode())
    out = cache / f"offline-{arch}-cp{pyver.replace('.', '')}-{key.hexdigest()[:12]}"
    if (out / ".complete").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    args = ["download", "-q", "--only-binary=:all:", "--python-version", pyver,
            "--implementation", "cp", "-d", str(out)]
    for tag in platform_tags(arch):
        args += ["--platform", tag]
    _pip(*args, *requirements)
    (out / ".complete").write_text("\n".join(requirements) + "\n")
    return out


def _pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"pip {args[0]} failed: {(proc.stderr or proc.stdout)[-1500:]}")


def fingerprint(requirements: list[str], wheel_digest: str, python: str, arch: str,
                offline: bool) -> str:
    """Identity of a node runtime: exactly what gets installed (the pinned requirement set, the
    sha256 of edgekit's wheel file) and where (the node's Python version and architecture, index
    or wheelhouse). The source tree is not part of it: an unchanged wheel is an unchanged
    runtime, whatever is being edited in the checkout meanwhile."""
    text = "\n".join([*sorted(requirements), wheel_digest, python, arch,
                      "offline" if offline else "index"])
    return hashlib.sha256(text.encode()).hexdigest()[:16]
