"""Deploy's side of a model bundle (the `Bundle` type is edgekit.model.bundle's, docs/BUNDLE.md):
a model file or folder resolved to a verified bundle, the manifest as a shipped file, and the
node packages its runtime needs.

A plain model file is first turned into a bundle with `edgekit bundle create` (cached on the
host by the model's sha256), so deploy always ships a verified bundle.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edgekit import names
from edgekit.errors import ModelError
from edgekit.model.bundle import MANIFEST, Bundle, FileEntry, open_bundle, sha256_file

__all__ = ["Bundle", "FileEntry", "check_name", "load", "manifest_entry", "node_packages",
           "resolve", "sha256_file"]

#: runtime -> node packages it needs beyond the base set (onnxruntime, ray, numpy, psutil)
RUNTIME_EXTRAS = {"litert": ["ai-edge-litert"]}


def load(folder: Path, name: str | None = None) -> Bundle:
    """Read and verify (sizes, sha256, stage chain) a bundle folder, served as `name`."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise ModelError(f"not a bundle folder (no {MANIFEST})", where=str(folder))
    check_name(name, str(folder))
    return open_bundle(folder, name)


def node_packages(bundle: Bundle) -> list[str]:
    """What a node needs installed to run this bundle, beyond the base packages."""
    extras = list(RUNTIME_EXTRAS.get(bundle.runtime, []))
    if (bundle.manifest.extra or {}).get("custom_ops"):
        extras.append("onnxruntime-extensions")
    return extras


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
