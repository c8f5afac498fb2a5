"""The deployable unit: a folder with model/stage files and ``manifest.json`` (docs/BUNDLE.md).

``load_manifest(dir)`` parses and type-checks the manifest; ``verify(dir)`` also checks every
file's size and sha256 and that the stages chain (each stage's inputs come from the model's
inputs or the previous stage's outputs, the last stage yields the model's outputs);
``open_bundle(dir)`` gives the verified ``Bundle`` with its one version id, the type deploy,
the API and status all read. Bundles are assembled in a temporary sibling folder and renamed
into place, so a failed build leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit import __version__, names
from edgekit.errors import ModelError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
RUNTIMES = {"onnxruntime": ".onnx", "litert": ".tflite"}


class BundleError(ModelError):
    """A bundle folder is missing files, has wrong hashes or an inconsistent manifest."""


@dataclass
class FileEntry:
    path: str
    bytes: int
    sha256: str


@dataclass
class TensorEntry:
    name: str
    dtype: str
    shape: list[int | str] | None  # strings (or -1 / "?") are dynamic dimensions
    bytes: int | None = None  # per request at the sample shape, when measured


@dataclass
class StageEntry:
    index: int
    file: str
    inputs: list[TensorEntry]
    outputs: list[TensorEntry]
    mem_bytes: int
    predicted_ms: float | None = None


@dataclass
class Manifest:
    format_version: int
    name: str
    version: str
    runtime: str  # "onnxruntime" | "litert"
    files: list[FileEntry]
    stages: list[StageEntry]
    inputs: list[TensorEntry]
    outputs: list[TensorEntry]
    min_edgekit: str = __version__
    quantization: dict[str, Any] | None = None
    preprocess: dict[str, Any] | None = None
    partition: dict[str, Any] | None = None
    created_by: str = f"edgekit {__version__}"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=_plain) + "\n"


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tensors(raw: Any, where: str) -> list[TensorEntry]:
    if not isinstance(raw, list):
        raise BundleError(f"{where} must be a list", where=MANIFEST)
    out = []
    for i, t in enumerate(raw):
        try:
            out.append(TensorEntry(t["name"], t["dtype"], t.get("shape"), t.get("bytes")))
        except (KeyError, TypeError):
            raise BundleError(f"{where}[{i}] needs name and dtype", where=MANIFEST) from None
    return out


def load_manifest(bundle_dir: Path) -> Manifest:
    """Parse ``bundle_dir/manifest.json`` into a ``Manifest`` (no hash checks)."""
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise BundleError("no manifest.json: not a bundle folder", where=str(bundle_dir))
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"manifest is not valid JSON: {exc}", where=str(path)) from None
    try:
        if raw["format_version"] != FORMAT_VERSION:
            raise BundleError(
                f"format_version {raw['format_version']} is not supported "
                f"(this edgekit reads {FORMAT_VERSION})",
                where=str(path),
            )
        stages = [
            StageEntry(
                int(s["index"]), s["file"], _tensors(s["inputs"], f"stages[{i}].inputs"),
                _tensors(s["outputs"], f"stages[{i}].outputs"), int(s["mem_bytes"]),
                s.get("predicted_ms"),
            )
            for i, s in enumerate(raw["stages"])
        ]
        manifest = Manifest(
            format_version=raw["format_version"], name=str(raw["name"]),
            version=str(raw["version"]), runtime=raw["runtime"],
            files=[FileEntry(f["path"], int(f["bytes"]), f["sha256"]) for f in raw["files"]],
            stages=stages, inputs=_tensors(raw["inputs"], "inputs"),
            outputs=_tensors(raw["outputs"], "outputs"),
            min_edgekit=str(raw.get("min_edgekit", "0")), quantization=raw.get("quantization"),
            preprocess=raw.get("preprocess"), partition=raw.get("partition"),
            created_by=str(raw.get("created_by", "")), extra=raw.get("extra", {}),
        )
    except KeyError as exc:
        raise BundleError(f"manifest lacks field {exc}", where=str(path)) from None
    except (TypeError, ValueError) as exc:
        raise BundleError(f"manifest has a malformed field: {exc}", where=str(path)) from None
    if manifest.runtime not in RUNTIMES:
        raise BundleError(f"unknown runtime {manifest.runtime!r}", where=str(path))
    _check_names(manifest, path)
    return manifest


def _check_names(manifest: Manifest, path: Path) -> None:
    """The name, version and file paths become paths on every node (apps/<name>/...) and
    arguments of its shell commands: strict charsets, nothing that climbs out (`../../x`)."""
    if not names.is_name(manifest.name):
        raise BundleError(f"bad name {manifest.name!r}: {names.NAME_RULE}", where=str(path))
    if not names.is_version(manifest.version):
        raise BundleError(f"bad version {manifest.version!r}: {names.VERSION_RULE}",
                          where=str(path))
    for i, entry in enumerate(manifest.files):
        if not isinstance(entry.path, str) or entry.path.startswith("/") \
                or not names.safe_parts(entry.path):
            raise BundleError(f"files[{i}].path {entry.path!r}: a relative path of "
                              f"{names.PATH_RULE}", where=str(path))


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def verify(bundle_dir: Path) -> Manifest:
    """Check hashes, sizes and stage consistency; raise ``BundleError`` naming the problem."""
    bundle_dir = Path(bundle_dir)
    manifest = load_manifest(bundle_dir)
    if _version_tuple(manifest.min_edgekit) > _version_tuple(__version__):
        raise BundleError(
            f"bundle needs edgekit >= {manifest.min_edgekit}, this is {__version__}",
            where=str(bundle_dir),
        )
    listed = {}
    for entry in manifest.files:
        file = (bundle_dir / entry.path).resolve()
        if bundle_dir.resolve() not in file.parents:
            raise BundleError(f"file {entry.path!r} points outside the bundle")
        if not file.is_file():
            raise BundleError(f"file {entry.path} is missing", where=str(bundle_dir))
        size = file.stat().st_size
        if size != entry.bytes:
            raise BundleError(
                f"file {entry.path} has {size} bytes, manifest says {entry.bytes}",
                where=str(bundle_dir),
            )
        if sha256_file(file) != entry.sha256:
            raise BundleError(f"file {entry.path} fails its sha256", where=str(bundle_dir))
        listed[entry.path] = entry
    if not manifest.stages:
        raise BundleError("manifest has no stages", where=str(bundle_dir))
    available = {t.name for t in manifest.inputs}
    suffix = RUNTIMES[manifest.runtime]
    for pos, stage in enumerate(manifest.stages):
        if stage.index != pos:
            raise BundleError(f"stage at position {pos} has index {stage.index}")
        if stage.file not in listed:
            raise BundleError(f"stage {pos} file {stage.file} is not listed in files")
        if not stage.file.endswith(suffix):
            raise BundleError(f"stage {pos} file {stage.file} is not {suffix} ({manifest.runtime})")
        missing = [t.name for t in stage.inputs if t.name not in available]
        if missing:
            raise BundleError(
                f"stage {pos} needs {', '.join(missing)}, which the previous stage does not produce"
            )
        available = {t.name for t in stage.outputs}  # later stages read only from this one
    final = {t.name for t in manifest.stages[-1].outputs}
    lacking = [t.name for t in manifest.outputs if t.name not in final]
    if lacking:
        raise BundleError(f"last stage does not produce model output(s) {', '.join(lacking)}")
    return manifest


@dataclass(frozen=True)
class Bundle:
    """A verified bundle folder, read once: what deploy ships, the API serves, status shows.

    `version` is the bundle's one version id everywhere (deploy, status, rollback, the API's
    metadata and /v2/models/{m}/versions/{id}, metrics, logs): a hash of the manifest and of
    every file's path and sha256, so the same content has the same id on every host and two
    different contents never share one. `label` is the version its author gave
    (`edgekit bundle create --version 2`, "1" by default); the API answers to it as well."""

    path: Path
    manifest: Manifest
    name: str  # served under: the manifest's name unless `deploy --name` gave another
    version: str

    @property
    def label(self) -> str:
        return self.manifest.version

    @property
    def runtime(self) -> str:
        return self.manifest.runtime

    @property
    def files(self) -> list[FileEntry]:
        return self.manifest.files

    @property
    def stages(self) -> list[StageEntry]:
        return self.manifest.stages

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def mem_bytes(self) -> int:
        """Memory to run the whole model on one node (sum of stages)."""
        return sum(s.mem_bytes for s in self.stages)


def open_bundle(folder: Path, name: str | None = None) -> Bundle:
    """Verify `folder` (see `verify`) and give it its version id."""
    folder = Path(folder)
    manifest = verify(folder)
    return Bundle(folder, manifest, name or manifest.name, content_id(folder, manifest))


def content_id(folder: Path, manifest: Manifest) -> str:
    """The version id of a verified bundle: 16 hex digits of sha256 over the manifest's bytes
    and every file's path and sha256."""
    h = hashlib.sha256((Path(folder) / MANIFEST).read_bytes())
    for f in sorted(manifest.files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.sha256}\n".encode())
    return h.hexdigest()[:16]


def write_bundle(
    out_dir: Path, manifest: Manifest, payload: dict[str, bytes | Path], *, overwrite: bool = False
) -> Manifest:
    """Write ``payload`` (relative path -> bytes or source file) plus the manifest, atomically.

    ``manifest.files`` is filled in here from what was actually written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ModelError("output folder exists and is not empty", where=str(out_dir),
                         hint="pass --force to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=out_dir.parent))
    try:
        files = []
        for rel, content in sorted(payload.items()):
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                shutil.copyfile(content, target)
            files.append(FileEntry(rel, target.stat().st_size, sha256_file(target)))
        manifest.files = files
        (tmp / MANIFEST).write_text(manifest.to_json())
        verify(tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def make_tar(bundle_dir: Path, tar_path: Path) -> Path:
    """Pack a verified bundle as an uncompressed tar (top folder = bundle name)."""
    from edgekit.model.loader import atomic_path

    verify(bundle_dir)
    with atomic_path(Path(tar_path)) as part, tarfile.open(part, "w") as tar:
        tar.add(bundle_dir, arcname=Path(bundle_dir).name)
    return Path(tar_path)
