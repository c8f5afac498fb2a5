"""Model commands take paths relative to the current directory, wherever that is: the quantizer
works inside a temp dir (ORT's shape inference writes into the cwd), which once turned every
relative model path into a FileNotFoundError traceback."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from model_graphs import skip_model

from edgekit.cli.main import main


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["edgekit", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, " ".join(cap.err.split())


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch) -> Path:
    """models/m.onnx and calib/*.npy beside the cwd `work/`, reached only as ../models/..."""
    (tmp_path / "models").mkdir()
    onnx.save(skip_model(), str(tmp_path / "models" / "m.onnx"))
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        np.save(calib / f"{i}.npy", rng.standard_normal((1, 8)).astype(np.float32))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_quantize_relative_paths(workdir, monkeypatch, capsys) -> None:
    code, out, err = run_cli(["quantize", "../models/m.onnx", "-o", "out/q.onnx",
                              "--calib", "../calib", "--json"], monkeypatch, capsys)
    assert code == 0, err
    assert (workdir / "out" / "q.onnx").is_file()
    assert json.loads(out)["passed"] is True
    assert Path.cwd() == workdir  # the quantizer's chdir did not leak
    assert sorted(os.listdir(workdir)) == ["out"]  # ORT's temp files stayed out of the cwd
    assert sorted(os.listdir(workdir / "out")) == ["q.onnx"]


def test_bundle_quantize_relative_paths(workdir, monkeypatch, capsys) -> None:
    code, out, err = run_cli(["bundle", "../models/m.onnx", "-o", "b", "--quantize",
                              "--calib", "../calib", "--name", "m", "--json"],
                             monkeypatch, capsys)
    assert code == 0, err
    manifest = json.loads(out)
    assert manifest["quantization"]["passed"] is True
    code, _, err = run_cli(["bundle", "verify", "b"], monkeypatch, capsys)
    assert code == 0, err


def test_inspect_and_shard_relative_paths(workdir, monkeypatch, capsys) -> None:
    code, out, err = run_cli(["inspect", "../models/m.onnx", "--json"], monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)["nodes"] == 4
    code, _, err = run_cli(["shard", "../models/m.onnx", "--stages", "2", "-o", "s",
                            "--no-profile", "--shape", "x=1,8"], monkeypatch, capsys)
    assert code == 0, err
    assert (workdir / "s" / "manifest.json").is_file()


def test_quantize_relative_path_that_does_not_exist(workdir, monkeypatch, capsys) -> None:
    code, out, err = run_cli(["quantize", "../models/nope.onnx", "-o", "q.onnx",
                              "--calib", "../calib"], monkeypatch, capsys)
    assert code != 0 and "nope.onnx" in out + err and "Traceback" not in out + err
    assert not (workdir / "q.onnx").exists()
