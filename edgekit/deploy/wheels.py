"""Host side of provisioning: the node requirements pinned to the host's installed versions,
edgekit's own wheel per node architecture (carrying the native kernels built, or
cross-compiled, for it), and (for --offline) a wheelhouse for the node's platform.

Everything built here is cached under $EDGEKIT_HOME/wheelhouse/ and keyed by content (and
architecture), so a second deploy builds nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from edgekit.deploy.assets import node_requirements, source_root
from edgekit.errors import EdgekitError, InputError

#: prebuilt edgekit wheels to install on the nodes instead of building this checkout's, one per
#: architecture (a folder of wheels, or `arch=path` pairs; CI and the tests pin them, so
#: colleagues editing the tree mid-run do not change the node runtime)
NODE_WHEEL_ENV = "EDGEKIT_NODE_WHEEL"

#: node architectures edgekit builds its native library for, and how on a host of another one
NODE_ARCHES = ("x86_64", "aarch64")
ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}
CROSS_CC = {"aarch64": "aarch64-linux-gnu-gcc", "x86_64": "x86_64-linux-gnu-gcc"}
CROSS_PACKAGES = {"aarch64": "gcc-aarch64-linux-gnu", "x86_64": "gcc-x86-64-linux-gnu"}
NATIVE_LIB_MEMBER = "edgekit/native/_lib/libedgekit_native.so"
ELF_MACHINES = {62: "x86_64", 183: "aarch64", 40: "arm", 3: "i386"}

#: glibc versions a 64-bit Raspberry Pi OS / Debian 12 node accepts (bookworm: glibc 2.36)
GLIBC_MINORS = range(17, 37)


class BuildError(EdgekitError):
    """A wheel could not be built or downloaded on the host."""

    exit_code = 7


def pins(extras: list[str]) -> list[str]:
    """`name==version` for every node package, from the host's own install; a requirement
    that gives its own range (requirements-node.txt says why) is kept as it is."""
    out = []
    for name in (*node_requirements(), *sorted(set(extras))):
        if any(c in name for c in "<>=!~"):
            out.append(name)
            continue
        version = installed_version(name)
        if version is None:
            raise InputError(f"{name} is not installed on the host, so its version cannot be "
                             "pinned for the nodes", hint=f"pip install {name}")
        out.append(f"{name}=={version}")
    return out


def installed_version(name: str) -> str | None:
    """The version pip installed in this environment, ignoring copies vendored inside another
    package: `import ray` puts ray/thirdparty_files (its own psutil) first on sys.path, so
    metadata.version("psutil") changed with whether Ray had been imported - a different pin, so
    a different runtime fingerprint, so a needless reinstall on every node."""
    def vendored(entry: str) -> bool:
        parts = Path(entry or ".").resolve().parts
        return any(p in ("site-packages", "dist-packages") for p in parts[:-1])

    path = [p for p in sys.path if not vendored(p)]
    dist = next(iter(metadata.distributions(name=name, path=path)), None)
    return dist.version if dist is not None else None


def source_digest(root: Path | None = None) -> str:
    """Hash of edgekit's sources, the C kernels and the build script included: a changed file
    means a new node wheel, so a new node runtime."""
    root = root or source_root()
    h = hashlib.sha256()
    for name in ("pyproject.toml", "setup.py"):
        h.update(name.encode() + b"\0" + (root / name).read_bytes())
    trees = {"edgekit": (".py", ".sh", ".typed"), "native/src": (".c", ".h"),
             "native/include": (".h",)}
    for top, suffixes in trees.items():
        for p in sorted((root / top).rglob("*")):
            if p.is_file() and p.suffix in suffixes and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def norm_arch(arch: str) -> str:
    return ARCH_ALIASES.get(arch.lower(), arch.lower())


def wheel_arch(path: Path) -> str:
    """The CPU architecture a wheel's platform tag names ("any" for a pure wheel)."""
    plat = path.name[: -len(".whl")].split("-")[-1]
    if plat == "any":
        return "any"
    for arch in (*NODE_ARCHES, *ARCH_ALIASES):
        if plat.endswith("_" + arch):
            return norm_arch(arch)
    return plat


def pinned_wheels(value: str) -> dict[str, Path]:
    """$EDGEKIT_NODE_WHEEL: comma-separated `arch=wheel`, wheel files or folders of wheels;
    each wheel counts for the architecture its platform tag names."""
    found: dict[str, Path] = {}
    for item in (v.strip() for v in value.split(",") if v.strip()):
        arch, sep, where = item.partition("=")
        paths = [Path(where if sep else item)]
        if paths[0].is_dir():
            paths = sorted(paths[0].glob("edgekit-*.whl"))
        for path in paths:
            if not path.is_file() or not path.name.endswith(".whl"):
                raise InputError(f"{NODE_WHEEL_ENV}: not a wheel file or a folder of wheels",
                                 where=str(path))
            tagged = wheel_arch(path)
            if sep and tagged != norm_arch(arch):
                raise InputError(f"{NODE_WHEEL_ENV}: the wheel is tagged for {tagged}, "
                                 f"given for {arch}", where=str(path))
            if tagged in found and found[tagged] != path:
                raise InputError(f"{NODE_WHEEL_ENV}: two wheels for {tagged}",
                                 where=f"{found[tagged]}, {path}")
            found[tagged] = path
    return found


def node_wheel(cache: Path, arch: str) -> Path:
    """The edgekit wheel a node of `arch` gets, carrying the native library built for it:
    the one $EDGEKIT_NODE_WHEEL pins for that arch, or one built from this checkout."""
    arch = norm_arch(arch)
    pinned = os.environ.get(NODE_WHEEL_ENV)
    if pinned:
        wheels = pinned_wheels(pinned)
        if arch not in wheels:
            raise InputError(f"{NODE_WHEEL_ENV} pins no edgekit wheel for {arch} (it has: "
                             f"{', '.join(sorted(wheels)) or 'none'})", where=pinned)
        return wheels[arch]
    return edgekit_wheel(cache, arch)


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


def cross_compiler(arch: str) -> str:
    """The C compiler that builds for `arch` on this host; BuildError naming the package."""
    arch = norm_arch(arch)
    if arch not in NODE_ARCHES:
        raise BuildError(f"no native build for {arch} (edgekit builds for "
                         f"{', '.join(NODE_ARCHES)})")
    if arch == norm_arch(platform.machine()):
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        package = "gcc"
    else:
        cc, package = shutil.which(CROSS_CC[arch]), CROSS_PACKAGES[arch]
    if not cc:
        raise BuildError(f"no C compiler for {arch} on this host: the {arch} nodes' native "
                         f"library is built here", hint=f"apt-get install {package}")
    return cc


_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder of `path` at a time: deploy prepares its nodes in threads, and two deploys
    may share $EDGEKIT_HOME (a file lock beside it)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(path, threading.Lock())
    path.parent.mkdir(parents=True, exist_ok=True)
    with lock, open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def edgekit_wheel(cache: Path, arch: str) -> Path:
    """Build (once per source digest and arch) `pip wheel --no-deps` of this checkout, with
    the native library compiled (or cross-compiled) for `arch` and checked to be that arch's."""
    arch = norm_arch(arch)
    out = cache / f"edgekit-src-{source_digest()}-{arch}"
    with _locked(out):
        found = sorted(out.glob("edgekit-*.whl"))
        if found:
            return found[0]
        cc = cross_compiler(arch)
        tmp = out.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        build = tmp / "build"
        _copy_sources(build)
        _pip("wheel", "--no-deps", "-q", "-w", str(tmp), str(build),
             env={"EDGEKIT_NATIVE_ARCH": arch, "CC": cc})
        shutil.rmtree(build)
        built = sorted(tmp.glob("edgekit-*.whl"))
        if len(built) != 1 or wheel_arch(built[0]) != arch:
            raise BuildError(f"pip wheel built {[b.name for b in built]}, not one {arch} wheel")
        check_library(built[0], arch)
        tmp.rename(out)
        return out / built[0].name


def _copy_sources(build: Path) -> None:
    """Copy the checkout to build from (setuptools writes build/ and *.egg-info into the tree
    it builds): the package, native/'s sources and the build files, nothing compiled."""
    root = source_root()
    keep_top = {"edgekit", "native", "pyproject.toml", "setup.py", "README.md", "LICENSE"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        here = Path(folder)
        skip = {n for n in names if n == "__pycache__" or n.endswith((".egg-info", ".so", ".o"))}
        if here == root:
            skip |= set(names) - keep_top
        if here == root / "native":
            skip |= set(names) - {"src", "include"}
        return skip

    shutil.copytree(root, build, ignore=ignore)


def check_library(wheel: Path, arch: str) -> None:
    """BuildError unless the wheel holds the native library compiled for `arch`."""
    with zipfile.ZipFile(wheel) as zf:
        try:
            head = zf.open(NATIVE_LIB_MEMBER).read(20)
        except KeyError:
            raise BuildError(f"{wheel.name} holds no {NATIVE_LIB_MEMBER}") from None
    machine = elf_machine(head)
    if machine != arch:
        raise BuildError(f"{wheel.name}: the native library is built for {machine}, not {arch}")


def elf_machine(head: bytes) -> str:
    """The architecture in an ELF header's e_machine (little-endian 64-bit objects)."""
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return "not an ELF file"
    machine = int.from_bytes(head[18:20], "little")
    return ELF_MACHINES.get(machine, f"e_machine {machine}")


def platform_tags(arch: str) -> list[str]:
    arch = norm_arch(arch)
    return [f"manylinux_2_{m}_{arch}" for m in GLIBC_MINORS] + [f"manylinux2014_{arch}"]


def wheelhouse(cache: Path, requirements: list[str], arch: str, python: str) -> Path:
    """Download binary wheels of `requirements` (and their dependencies) for the node."""
    pyver = ".".join(python.split(".")[:2])
    key = hashlib.sha256(f"{arch} {pyver} {' '.join(sorted(requirements))}".encode())
    out = cache / f"offline-{arch}-cp{pyver.replace('.', '')}-{key.hexdigest()[:12]}"
    with _locked(out):  # two nodes of one platform: one download
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


def _pip(*args: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise BuildError(f"pip {args[0]} failed: {(proc.stderr or proc.stdout)[-1500:]}")


def fingerprint(requirements: list[str], wheel_digest: str, python: str, arch: str,
                offline: bool) -> str:
    """Identity of a node runtime: exactly what gets installed (the pinned requirement set, the
    sha256 of the edgekit wheel for the node's architecture, so of its native library too) and
    where (the node's Python version and architecture, index or wheelhouse). The source tree
    is not part of it: an unchanged wheel is an unchanged runtime, whatever is being edited in
    the checkout meanwhile."""
    text = "\n".join([*sorted(requirements), wheel_digest, python, arch,
                      "offline" if offline else "index"])
    return hashlib.sha256(text.encode()).hexdigest()[:16]
