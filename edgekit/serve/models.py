"""What the server was asked to serve: a bundle folder or a bare .onnx/.tflite file.

A bundle (written by `edgekit.model.bundle`) has `manifest.json` with `runtime`, `files` and
`stages`; more than one stage means a pipeline whose stages run on distinct nodes. The head
reads the model bytes once and ships them to the workers through Ray's object store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import ModelError

_RUNTIME_BY_SUFFIX = {".onnx": "onnxruntime", ".tflite": "litert"}


@dataclass
class StageSpec:
    index: int
    file: Path
    inputs: list[str] = field(default_factory=list)  # empty: take all model inputs
    outputs: list[str] = field(default_factory=list)
    mem_bytes: int = 0
    relpath: str = ""  # path inside the bundle (what deploy pushed under apps/<model>/current)
    sha256: str = ""  # from the manifest; empty for a bare model file


@dataclass
class ModelSpec:
    name: str
    runtime: str
    stages: list[StageSpec]
    source: Path
    version: str = "1"
    preprocess: dict[str, Any] = field(default_factory=dict)
    #: dynamic batching, only used where every input has a variable leading dimension
    max_batch: int = 1
    max_wait_ms: float = 2.0

    @property
    def sharded(self) -> bool:
        return len(self.stages) > 1


def parse_model_arg(arg: str) -> tuple[str, Path]:
    """Split the CLI's NAME=PATH (PATH alone names the model after its file stem)."""
    name, sep, path = arg.partition("=")
    if not sep:
        path, name = name, Path(name).stem
    if not name or not path:
        raise ModelError(f"expected NAME=BUNDLE_DIR_OR_MODEL_FILE, got '{arg}'")
    return name, Path(path)


def load_model_spec(name: str, path: Path) -> ModelSpec:
    """Describe the model at `path` (bundle folder or model file) under `name`."""
    path = Path(path)
    if path.is_file():
        runtime = _RUNTIME_BY_SUFFIX.get(path.suffix.lower())
        if runtime is None:
            raise ModelError("not a .onnx or .tflite file", where=str(path))
        return ModelSpec(name, runtime, [StageSpec(0, path)], path, _short_hash(path))
    if not (path / "manifest.json").is_file():
        raise ModelError("no such model file or bundle folder (manifest.json)", where=str(path))
    manifest = _read_manifest(path)
    runtime = manifest.get("runtime", "onnxruntime")
    digests = {f["path"]: f.get("sha256", "") for f in manifest.get("files", [])}
    stages = [
        StageSpec(
            int(s.get("index", i)),
            path / s["file"],
            [_name(t) for t in s.get("inputs", [])],
            [_name(t) for t in s.get("outputs", [])],
            int(s.get("mem_bytes", 0)),
            s["file"],
            digests.get(s["file"], ""),
        )
        for i, s in enumerate(manifest.get("stages") or [])
    ]
    if not stages:
        files = [
            f["path"]
            for f in manifest.get("files", [])
            if Path(f["path"]).suffix in (".onnx", ".tflite")
        ]
        if len(files) != 1:
            raise ModelError(
                "manifest has no stages and not exactly one model file", where=str(path)
            )
        stages = [StageSpec(0, path / files[0], relpath=files[0], sha256=digests[files[0]])]
    stages.sort(key=lambda s: s.index)
    for s in stages:
        if not s.file.is_file():
            raise ModelError(f"stage {s.index} file missing: {s.file.name}", where=str(path))
    version = _short_hash(stages[0].file)
    return ModelSpec(name, runtime, stages, path, version, dict(manifest.get("preprocess") or {}))


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:  # the bundle module checks format and sha256 of every file; prefer it when present
        from edgekit.model.bundle import verify as load_manifest
    except ImportError:
        load_manifest = None
    if load_manifest is not None:
        manifest = load_manifest(folder)
        return manifest if isinstance(manifest, dict) else _as_dict(manifest)
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read manifest.json: {exc}", where=str(folder)) from exc


def _name(tensor: Any) -> str:
    return tensor["name"] if isinstance(tensor, dict) else str(tensor)


def _as_dict(obj: Any) -> dict[str, Any]:
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json.loads(json.dumps(dataclasses.asdict(obj), default=str))
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return dict(vars(obj))


def _short_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
