"""int8 vs fp32 speed: a slower int8 model is warned about, and the Pi boards' speed is stated
(here: unmeasured, with why) in the text and JSON reports of quantize and bundle --quantize.
No assertion depends on how fast this shared machine happens to be."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from model_graphs import skip_model

from edgekit.cli.main import main
from edgekit.model import speed
from edgekit.model.evaluate import session


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["edgekit", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, " ".join(cap.out.split()), " ".join(cap.err.split())


@pytest.fixture
def calib(tmp_path):
    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        np.save(folder / f"{i}.npy", rng.standard_normal((1, 8)).astype(np.float32))
    return folder


def test_slower_int8_is_warned_with_the_cause() -> None:
    text = speed.slower_warning(1.0, 2.5, "static QDQ S8S8 per-channel")
    assert text and "2.5x SLOWER than fp32" in text and "Pi 4 / Pi 5 speed is unmeasured" in text
    weights = speed.slower_warning(2.0, 6.0, "weight-only int8: int8 weights, fp32 activations")
    assert weights and "3.0x SLOWER" in weights and "size, not speed" in weights
    mixed = speed.slower_warning(1.0, 2.0, "static QDQ S8S8, 3 node(s) on fp32 activations")
    assert mixed and "fp32 activations" in mixed


@pytest.mark.parametrize("fp32, int8", [(1.0, 0.5), (1.0, 1.0), (1.0, 1.04), (0.0, 1.0)])
def test_faster_or_within_noise_is_not_warned(fp32, int8) -> None:
    assert speed.slower_warning(fp32, int8, "static QDQ S8S8") is None


def test_boards_are_stated_never_left_out() -> None:
    boards = speed.boards()
    assert [b.board for b in boards] == ["pi4", "pi5"]
    assert all(b.speed_ratio is None and b.note.startswith("unmeasured") for b in boards)
    (line,) = speed.board_lines(boards)
    assert line.startswith("Pi 4 (Cortex-A72), Pi 5 (Cortex-A76): int8 vs fp32 speed unmeasured")
    measured = speed.BoardSpeed("pi5", "Pi 5", "Cortex-A76", 0.4, "")
    assert speed.board_lines([boards[0], measured])[1] == (
        "Pi 5 (Cortex-A76): int8 vs fp32 speed int8/fp32 latency 0.40")


def test_host_latency_runs_both_models(tmp_path) -> None:
    import onnx

    path = tmp_path / "m.onnx"
    onnx.save(skip_model(), str(path))
    feed = {"x": np.ones((1, 8), np.float32)}
    fp32_ms, int8_ms = speed.host_latency(session(path), session(path), feed, repeats=3)
    assert fp32_ms > 0 and int8_ms > 0


@pytest.mark.parametrize("command", ["quantize", "bundle"])
def test_reports_say_pi_speed_and_warn_when_slower(command, tmp_path, save, calib, monkeypatch,
                                                   capsys) -> None:
    src = save(skip_model())
    out = tmp_path / ("q.onnx" if command == "quantize" else "b")
    args = [command, str(src), "-o", str(out), "--calib", str(calib), "--weights-only"]
    if command == "bundle":
        args += ["--quantize", "--name", "m"]
    code, text, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert "Pi 4 (Cortex-A72), Pi 5 (Cortex-A76): int8 vs fp32 speed unmeasured" in text
    code, raw, err = run_cli([*args, "--json", "--force"] if command == "bundle"
                             else [*args, "--json"], monkeypatch, capsys)
    assert code == 0, err
    doc = json.loads(raw)
    result = doc["quantization"] if command == "bundle" else doc
    ev = result["evaluation"]
    assert [(b["board"], b["speed_ratio"]) for b in ev["boards"]] == [("pi4", None), ("pi5", None)]
    slower = ev["int8_ms"] > ev["fp32_ms"] * speed.SLOWER
    warned = [w for w in result["warnings"] if "SLOWER than fp32" in w]
    assert bool(warned) == slower  # whichever way this host's timing fell, never silent


@pytest.mark.parametrize("command", ["quantize", "bundle"])
def test_refusal_under_json_is_one_document(command, tmp_path, save, calib, monkeypatch,
                                            capsys) -> None:
    src = save(skip_model())
    out = tmp_path / ("q.onnx" if command == "quantize" else "b")
    args = [command, str(src), "-o", str(out), "--calib", str(calib), "--min-cosine", "1.01",
            "--fallback", "none", "--json"]
    if command == "bundle":
        args += ["--quantize", "--name", "m"]
    monkeypatch.setattr(sys, "argv", ["edgekit", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    raw = capsys.readouterr().out
    doc = json.loads(raw)  # exactly one JSON document on stdout
    assert exit_info.value.code == 3 and doc["exit_code"] == 3
    assert doc["error"]["kind"] == "ModelError" and "below --min-cosine" in doc["error"]["message"]
    assert doc["passed"] is False and doc["evaluation"]["boards"][0]["board"] == "pi4"
    assert not out.exists()
