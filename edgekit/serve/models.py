"""What the server was asked to serve: a bundle folder or a bare .onnx/.tflite file.

A bundle (edgekit.model.bundle.Bundle, verified once on load) has `manifest.json` with
`runtime`, `files` and `stages`; more than one stage means a pipeline whose stages run on
distinct nodes. The head reads the model bytes once and ships them to the workers through
Ray's object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import ModelError
from edgekit.model.bundle import MANIFEST, open_bundle, sha256_file

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
    version: str = "1"  # the one version id (edgekit.model.bundle.Bundle.version)
    preprocess: dict[str, Any] = field(default_factory=dict)
    #: dynamic batching, only used where every input has a variable leading dimension
    max_batch: int = 1
    max_wait_ms: float = 2.0
    label: str = "1"  # the version its author gave; the API answers to it too
    manifest: Any = None  # the bundle's Manifest (None for a bare model file)

    def has_version(self, version: str) -> bool:
        """Whether /v2/models/{name}/versions/{version} names this model."""
        return version in (self.version, self.label)

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
        # a bare file: its content's id, and Triton's default version "1" as its label
        return ModelSpec(name, runtime, [StageSpec(0, path)], path, sha256_file(path)[:16])
    if not (path / MANIFEST).is_file():
        raise ModelError("no such model file or bundle folder (manifest.json)", where=str(path))
    bundle = open_bundle(path, name)  # verified: every file's size and sha256, the stage chain
    digests = {f.path: f.sha256 for f in bundle.files}
    stages = [
        StageSpec(s.index, path / s.file, [t.name for t in s.inputs],
                  [t.name for t in s.outputs], s.mem_bytes, s.file, digests[s.file])
        for s in bundle.stages
    ]
    return ModelSpec(name, bundle.runtime, stages, path, bundle.version,
                     dict(bundle.manifest.preprocess or {}), label=bundle.label,
                     manifest=bundle.manifest)
