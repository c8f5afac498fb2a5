"""Bundles: the manifest deploy reads, hash/consistency checks, and the one-shot builder."""

from __future__ import annotations

import json
import sys
import tarfile

import numpy as np
import pytest
from model_graphs import skip_model

from edgekit.cli.main import main
from edgekit.model import bundle
from edgekit.model.bundle import BundleError, load_manifest, verify


def run_cli(args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["edgekit", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, " ".join(cap.err.split())


@pytest.fixture
def built(tmp_path, save, monkeypatch, capsys):
    src = save(skip_model())
    np.savez(tmp_path / "in.npz", x=np.ones((3, 8), np.float32))
    out = tmp_path / "b"
    code, _, err = run_cli(["bundle", str(src), "-o", str(out), "--stages", "2", "--name", "skip",
                            "--version", "7", "--inputs", str(tmp_path / "in.npz"),
                            "--tar", str(tmp_path / "b.tar")], monkeypatch, capsys)
    assert code == 0, err
    return out


def test_manifest_fields_deploy_relies_on(built, tmp_path) -> None:
    m = load_manifest(built)
    assert (m.format_version, m.name, m.version, m.runtime) == (1, "skip", "7", "onnxruntime")
    assert [s.file for s in m.stages] == ["stage_0.onnx", "stage_1.onnx"]
    assert {f.path for f in m.files} == {"stage_0.onnx", "stage_1.onnx"}
    assert all(len(f.sha256) == 64 and f.bytes > 0 for f in m.files)
    assert m.stages[1].inputs[0].shape[0] == "batch" and m.stages[0].mem_bytes > 0
    assert m.partition["validation"]["exact"]
    with tarfile.open(tmp_path / "b.tar") as tar:
        assert "b/manifest.json" in tar.getnames()


def test_verify_catches_tampering(built) -> None:
    (built / "stage_1.onnx").write_bytes((built / "stage_1.onnx").read_bytes()[:-1] + b"\0")
    with pytest.raises(BundleError, match=r"stage_1\.onnx fails its sha256"):
        verify(built)


def test_verify_catches_missing_file_and_broken_chain(built) -> None:
    raw = json.loads((built / "manifest.json").read_text())
    raw["stages"][1]["inputs"].append({"name": "ghost", "dtype": "float", "shape": [1]})
    (built / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="needs ghost"):
        verify(built)
    (built / "stage_0.onnx").unlink()
    with pytest.raises(BundleError, match=r"stage_0\.onnx is missing"):
        verify(built)


def test_verify_cli_exit_codes(built, monkeypatch, capsys) -> None:
    code, out, _ = run_cli(["bundle", "verify", str(built), "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out)["ok"] is True
    (built / "manifest.json").write_text("{not json")
    code, _, err = run_cli(["bundle", "verify", str(built)], monkeypatch, capsys)
    assert code == 3 and "not valid JSON" in err


def test_existing_output_is_not_clobbered(built, save) -> None:
    manifest = load_manifest(built)
    with pytest.raises(Exception, match="not empty"):
        bundle.write_bundle(built, manifest, {"stage_0.onnx": b"x"})
    assert verify(built).name == "skip"


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("name", "../../x", "bad name '../../x'"),
    ("name", "a/b", "bad name"),
    ("name", "-rf", "bad name"),
    ("name", "x;rm", "bad name"),
    ("version", "../v", "bad version"),
    ("version", "1 2", "bad version"),
    ("version", 7, None),  # a number is written as its string, which is plain
])
def test_verify_refuses_names_that_become_paths(built, monkeypatch, capsys, field, value,
                                                needle) -> None:
    """name/version become apps/<name>/versions/... on every node: `../../x` must not pass."""
    raw = json.loads((built / "manifest.json").read_text())
    raw[field] = value
    (built / "manifest.json").write_text(json.dumps(raw))
    code, _, err = run_cli(["bundle", "verify", str(built)], monkeypatch, capsys)
    if needle is None:
        assert code == 0, err
        return
    assert code == 3 and needle in err and "manifest.json" in err, err


@pytest.mark.parametrize("path", ["../stage_0.onnx", "/etc/passwd", "a/../../b.onnx",
                                  "a b.onnx", "x$(id).onnx"])
def test_verify_refuses_file_paths_that_climb_out(built, path) -> None:
    raw = json.loads((built / "manifest.json").read_text())
    raw["files"][0]["path"] = path
    (built / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=r"files\[0\]\.path"):
        verify(built)


@pytest.mark.parametrize("args", [["--name", "../../x"], ["--version", "../1"]])
def test_create_refuses_bad_name_or_version(tmp_path, save, monkeypatch, capsys, args) -> None:
    src = save(skip_model())
    code, _, err = run_cli(["bundle", str(src), "-o", str(tmp_path / "b"), *args],
                           monkeypatch, capsys)
    assert code == 2 and "Invalid value" in err, err
    assert not (tmp_path / "b").exists()
