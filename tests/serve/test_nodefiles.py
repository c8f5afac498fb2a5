"""Workers load the file deploy pushed to their node, and refuse one whose hash changed."""

import hashlib
from pathlib import Path

import pytest

from edgekit.errors import ModelError
from edgekit.serve.nodefiles import ROOT_ENV, NodeFile, read_verified


def _deployed(root: Path, data: bytes) -> NodeFile:
    current = root / "apps" / "m" / "current"
    current.mkdir(parents=True)
    (current / "stage_0.onnx").write_bytes(data)
    return NodeFile("m", "stage_0.onnx", hashlib.sha256(data).hexdigest())


def test_reads_the_active_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    ref = _deployed(tmp_path, b"model-bytes")
    assert read_verified(ref, "pi1") == b"model-bytes"


def test_changed_missing_or_unknown_root_is_refused(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    ref = _deployed(tmp_path, b"model-bytes")
    (tmp_path / "apps/m/current/stage_0.onnx").write_bytes(b"tampered")
    with pytest.raises(ModelError, match="sha256 mismatch") as info:
        read_verified(ref, "pi1")
    assert "node pi1" in (info.value.where or "")
    with pytest.raises(ModelError, match="cannot read"):
        read_verified(NodeFile("m", "nope.onnx", ""), "pi1")
    monkeypatch.delenv(ROOT_ENV)
    with pytest.raises(ModelError, match="not started by edgekit deploy"):
        read_verified(ref, "pi1")


def test_a_known_version_reads_its_own_folder_not_current(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """During a rolling update (and after an interrupted deploy) `current` may already name
    the next version: a worker of version v1 still reads versions/v1."""
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    for v, data in (("v1", b"old"), ("v2", b"new")):
        (tmp_path / "apps/m/versions" / v).mkdir(parents=True)
        (tmp_path / "apps/m/versions" / v / "stage_0.onnx").write_bytes(data)
    (tmp_path / "apps/m/current").symlink_to("versions/v2")
    old = NodeFile("m", "stage_0.onnx", hashlib.sha256(b"old").hexdigest(), "v1")
    assert read_verified(old, "pi1") == b"old"
    with pytest.raises(ModelError, match="cannot read") as info:
        read_verified(NodeFile("m", "stage_0.onnx", "", "v9"), "pi1")
    assert "versions/v9" in (info.value.where or "")
