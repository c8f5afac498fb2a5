""".tflite models with custom ops, from MediaPipe's wheel: accepted when LiteRT runs them
(selfie segmentation's Convolution2DTransposeBias comes with LiteRT's XNNPACK delegate, the
one `edgekit serve` uses), refused with the op named when it does not (face mesh with
attention needs MediaPipe's own Landmarks2TransformMatrix)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli.main import main
from edgekit.deploy.bundle import resolve
from edgekit.errors import ModelError
from edgekit.model import samples
from edgekit.model.bundle import verify

pytest.importorskip("ai_edge_litert")

SELFIE, CUSTOM = "selfie-segmentation", "Convolution2DTransposeBias"
BROKEN, MISSING = "face-landmark-attention", "Landmarks2TransformMatrix"


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["edgekit", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, " ".join(cap.err.split())


def test_inspect_accepts_op_the_delegate_provides(monkeypatch, capsys) -> None:
    code, out, err = run_cli(["inspect", str(samples.path(SELFIE)), "--json"],
                             monkeypatch, capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["format"] == "tflite" and report["runtime"] == "litert"
    assert report["op_counts"][CUSTOM] == 1 and "DELEGATE" not in report["op_counts"]
    assert report["nodes"] == sum(report["op_counts"].values())
    assert [n for n in report["runtime_notes"] if CUSTOM in n and "XNNPACK" in n]
    assert report["inputs"][0]["shape"] == [1, 256, 256, 3]
    assert report["outputs"][0]["shape"] == [1, 256, 256, 1]


def test_custom_transposed_convolution_work_is_counted() -> None:
    from edgekit.model.tflite import inspect_tflite

    report = inspect_tflite(samples.path(SELFIE), top=1000)
    (node,) = [n for n in report.top_nodes if n["op"] == CUSTOM]
    # 128x128x16 input, 2x2 kernel, 1 output channel (the mask): 128*128*16 * 1*2*2
    assert node["macs"] == 128 * 128 * 16 * 4


def test_plain_models_have_no_runtime_notes(monkeypatch, capsys) -> None:
    code, out, err = run_cli(["inspect", str(samples.path("hand-recrop")), "--json"],
                             monkeypatch, capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["runtime_notes"] == [] and "DELEGATE" not in report["op_counts"]


def test_bundle_of_it_verifies_and_serve_runtime_matches_litert(tmp_path, monkeypatch,
                                                                capsys) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.serve.runtime import open_runtime

    out = tmp_path / "b"
    code, _, err = run_cli(["bundle", str(samples.path(SELFIE)), "-o", str(out), "--name",
                            "selfie"], monkeypatch, capsys)
    assert code == 0, err
    manifest = verify(out)
    assert manifest.runtime == "litert"
    x = np.random.default_rng(0).random((1, 256, 256, 3), dtype=np.float32)
    rt = open_runtime("litert", (out / manifest.stages[0].file).read_bytes(), 1, "test")
    got = next(iter(rt.run({rt.inputs[0].name: x}).values()))
    direct = Interpreter(model_path=str(samples.path(SELFIE)))
    direct.allocate_tensors()
    direct.set_tensor(direct.get_input_details()[0]["index"], x)
    direct.invoke()
    want = direct.get_tensor(direct.get_output_details()[0]["index"])
    assert got.shape == (1, 256, 256, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_deploy_bundles_it(tmp_path) -> None:
    bundle = resolve(samples.path(SELFIE), tmp_path / "cache", "selfie", None)
    assert bundle.manifest.runtime == "litert"


@pytest.mark.parametrize("command", ["inspect", "bundle"])
def test_op_nothing_provides_is_named(command, tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "b"
    args = [command, str(samples.path(BROKEN))]
    if command == "bundle":
        args += ["-o", str(out), "--name", "face"]
    code, stdout, err = run_cli(args, monkeypatch, capsys)
    assert code == 3
    text = "".join((stdout + err).split())  # rich wraps long paths at the terminal width
    assert MISSING in text and "face_landmark_with_attention.tflite" in text
    assert "Traceback" not in text and not out.exists()


def test_deploy_refuses_op_nothing_provides(tmp_path) -> None:
    with pytest.raises(ModelError, match=MISSING):
        resolve(samples.path(BROKEN), tmp_path / "cache", "face", None)


def test_file_that_is_not_a_model_is_not_mistaken_for_a_custom_op(tmp_path: Path,
                                                                  monkeypatch, capsys) -> None:
    data = samples.path(SELFIE).read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 3])
    code, out, err = run_cli(["inspect", str(cut)], monkeypatch, capsys)
    assert code == 3 and "cut.tflite" in out + err and "Traceback" not in out + err
