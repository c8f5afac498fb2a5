"""What `deploy` needs from a model bundle (edgekit.model.bundle, docs/BUNDLE.md): its files
with sha256, its stages with their memory needs, and the node packages its runtime needs.

A plain model file is first turned into a bundle with `edgekit bundle create` (cached on the
host by the model's sha256), so deploy always ships a verified bundle.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edgekit import names
from edgekit.errors import ModelError
from edgekit.model import bundle as model_bundle
from edgekit.model.bundle import MANIFEST, FileEntry, sha256_file

__all__ = ["Bundle", "FileEntry", "check_name", "load", "manifest_entry", "resolve", "sha256_file"]

#: runtime -> node packages it needs beyond the base set (onnxruntime, ray, numpy, psutil)
RUNTIME_EXTRAS = {"litert": ["ai-edge-litert"]}


@dataclass(frozen=True)
class Stage:
    index: int
    file: str
    mem_bytes: int


@dataclass
class Bundle:
    path: Path
    name: str
    runtime: str
    files: list[FileEntry]
    stages: list[Stage]
    extras: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def version(self) -> str:
        """Content id: the same files give the same version on every host."""
        h = hashlib.sha256((self.path / MANIFEST).read_bytes())
        for f in sorted(self.files, key=lambda f: f.path):
            h.update(f"{f.path}\0{f.sha256}\n".encode())
        return h.hexdigest()[:16]

    @property
    def mem_bytes(self) -> int:
        """Memory to run the whole model on one node (sum of stages)."""
        return sum(s.mem_bytes for s in self.stages)


def load(folder: Path, name: str | None = None) -> Bundle:
    """Read and verify (sizes, sha256, stage chain) a bundle folder."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise ModelError(f"not a bundle folder (no {MANIFEST})", where=str(folder))
    check_name(name, str(folder))
    m = model_bundle.verify(folder)
    stages = [Stage(s.index, s.file, int(s.mem_bytes)) for s in m.stages]
    extras = list(RUNTIME_EXTRAS.get(m.runtime, []))
    if (m.extra or {}).get("custom_ops"):
        extras.append("onnxruntime-extensions")
    return Bundle(folder, name or m.name, m.runtime, list(m.files), stages, extras)


def check_name(name: str | None, where: str) -> None:
    """A model name given on the command line (`deploy --name`): a plain path component."""
    if name is not None and not names.is_name(name):
        raise ModelError(f"bad model name {name!r}: {names.NAME_RULE}", where=where)


def manifest_entry(bundle: Bundle) -> FileEntry:
    """The manifest itself travels too (content-addressed like the rest)."""
    p = bundle.path / MANIFEST
    return FileEntry(MANIFEST, p.stat().st_size, sha256_file(p))


def resolve(target: Path, cache: Path, name: str | None, stages: int | None) -> Bundle:
    """A bundle folder as is, or a model file bundled once into `cache`."""
    target = Path(target)
    check_name(name, str(target))  # it names a folder here and on every node
    if target.is_dir():
        return load(target, name)
    if not target.is_file():
        raise ModelError("no such model file or bundle folder", where=str(target))
    if name is None and not names.is_name(target.stem):
        raise ModelError(f"the file name {target.stem!r} cannot be a model name "
                         f"({names.NAME_RULE})", where=str(target), hint="pass --name")
    name = name or target.stem
    key = f"{sha256_file(target)[:16]}-k{stages or 1}"
    out = cache / f"{name}-{key}"
    if not (out / MANIFEST).is_file():
        cmd = [sys.executable, "-m", "edgekit.cli.main", "bundle", "create", str(target),
               "-o", str(out), "--name", name, "--force", "--no-profile"]
        if stages and stages > 1:
            cmd += ["--stages", str(stages)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ModelError(f"edgekit bundle failed: {(proc.stderr or proc.stdout)[-1500:]}",
                             where=str(target))
    return load(out, name)
