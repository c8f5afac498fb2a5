"""Every bad input gives a clear error naming the problem, a non-zero exit, and no output."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from model_graphs import make, skip_model, vi, weight
from onnx import helper

from edgekit.cli.main import main


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["edgekit", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    # rich wraps at the terminal width: undo it so messages can be matched
    return code, " ".join((captured.out + captured.err).split())


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or "part" in p.name)


@pytest.fixture
def model_file(save) -> Path:
    return save(skip_model())


def test_not_a_model(tmp_path, monkeypatch, capsys) -> None:
    bad = tmp_path / "notes.onnx"
    bad.write_text("hello, I am not a model\n" * 10)
    code, out = run_cli(["inspect", str(bad)], monkeypatch, capsys)
    assert code == 3 and "not a readable ONNX model" in out and "notes.onnx" in out


def test_truncated_protobuf(tmp_path, model_file, monkeypatch, capsys) -> None:
    data = model_file.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    code, out = run_cli(["shard", str(cut), "--stages", "2", "-o", str(tmp_path / "o")],
                        monkeypatch, capsys)
    assert code == 3 and "truncated" in out
    assert not (tmp_path / "o").exists()


def test_external_data_missing(tmp_path, monkeypatch, capsys) -> None:
    model = skip_model()
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.bin", size_threshold=0)
    (tmp_path / "ext.bin").unlink()
    code, out = run_cli(["inspect", str(path)], monkeypatch, capsys)
    assert code == 3 and "ext.bin" in out and "missing" in out


def test_unsupported_opset(tmp_path, save, monkeypatch, capsys) -> None:
    model = skip_model()
    model.opset_import[0].version = 99
    path = tmp_path / "future.onnx"
    path.write_bytes(model.SerializeToString())
    code, out = run_cli(["inspect", str(path)], monkeypatch, capsys)
    assert code == 3 and "opset 99" in out


def test_model_without_inputs(save, monkeypatch, capsys) -> None:
    model = make([helper.make_node("Relu", ["W"], ["y"])], [], [vi("y", [2, 2])],
                 [weight("W", (2, 2))])
    code, out = run_cli(["inspect", str(save(model))], monkeypatch, capsys)
    assert code == 3 and "no inputs" in out


def test_more_stages_than_cut_points(tmp_path, model_file, monkeypatch, capsys) -> None:
    out_dir = tmp_path / "stages"
    code, out = run_cli(["shard", str(model_file), "--stages", "9", "-o", str(out_dir),
                         "--no-profile"], monkeypatch, capsys)
    assert code == 3 and "cannot make 9 stages" in out and "3 possible cut points" in out
    assert not out_dir.exists() and leftovers(tmp_path) == []


def test_memory_cap_nobody_can_meet(tmp_path, model_file, monkeypatch, capsys) -> None:
    code, out = run_cli(["shard", str(model_file), "--stages", "2", "-o", str(tmp_path / "s"),
                         "--mem-limit", "100"], monkeypatch, capsys)
    assert code == 3 and "memory cap" in out
    assert not (tmp_path / "s").exists()


def test_calibration_folder_empty(tmp_path, model_file, monkeypatch, capsys) -> None:
    empty = tmp_path / "calib"
    empty.mkdir()
    out_file = tmp_path / "q.onnx"
    code, out = run_cli(["quantize", str(model_file), "-o", str(out_file), "--calib", str(empty)],
                        monkeypatch, capsys)
    assert code == 3 and "no images" in out and "calib" in out
    assert not out_file.exists()


def test_calibration_wrong_shape(tmp_path, model_file, monkeypatch, capsys) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "a.npy", np.zeros((1, 5), np.float32))  # model wants [batch, 8]
    out_file = tmp_path / "q.onnx"
    code, out = run_cli(["quantize", str(model_file), "-o", str(out_file), "--calib", str(calib)],
                        monkeypatch, capsys)
    assert code == 3 and "a.npy" in out and "[1, 5]" in out
    assert not out_file.exists() and leftovers(tmp_path) == []


def test_tflite_suffix_but_not_tflite(tmp_path, monkeypatch, capsys) -> None:
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"\x00" * 64)
    code, out = run_cli(["inspect", str(bad)], monkeypatch, capsys)
    assert code == 3 and "TFL3" in out
