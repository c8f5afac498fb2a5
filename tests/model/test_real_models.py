"""Quantize and shard real models from PyPI wheels (PP-OCR, MediaPipe) on real photos."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from edgekit.cli.main import main
from edgekit.model import samples
from edgekit.model.bundle import load_manifest, verify


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["edgekit", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, " ".join(cap.err.split())


def text_lines(count: int, seed: int) -> list[np.ndarray]:
    """Crops of scanned text (skimage's page and text photos), shaped like OCR line images."""
    from skimage import data

    rng = np.random.default_rng(seed)
    out = []
    for img in (data.page(), data.text()):
        for _ in range(count // 2):
            h = int(rng.integers(20, 40))
            y = int(rng.integers(0, img.shape[0] - h))
            x = int(rng.integers(0, img.shape[1] - 4 * h))
            out.append(img[y : y + h, x : x + 4 * h])
    return out


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calib")
    for i, crop in enumerate(text_lines(40, seed=0)):
        Image.fromarray(crop).save(folder / f"line{i:02d}.png")
    return folder


CLS = ["--size", "48x192", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5"]


def test_quantize_real_classifier_reports_accuracy(tmp_path, calib_dir, monkeypatch, capsys):
    out = tmp_path / "cls.int8.onnx"
    code, stdout, _ = run_cli(
        ["quantize", str(samples.path("ppocr-cls")), "-o", str(out), "--calib", str(calib_dir),
         "--per-channel", "--min-cosine", "0.95", "--json", *CLS], monkeypatch, capsys)
    report = json.loads(stdout)
    assert code == 0 and out.exists()
    ev = report["evaluation"]
    assert ev["data"] == "images" and ev["samples"] == 10
    assert ev["size_ratio"] < 0.65 and ev["min_cosine"] >= 0.95
    assert ev["outputs"][0]["top1_agreement"] is not None
    assert ev["fp32_ms"] > 0 and ev["int8_ms"] > 0


def test_quantize_refuses_below_min_cosine(tmp_path, calib_dir, monkeypatch, capsys):
    out = tmp_path / "cls.int8.onnx"
    code, stdout, err = run_cli(
        ["quantize", str(samples.path("ppocr-cls")), "-o", str(out), "--calib", str(calib_dir),
         "--min-cosine", "0.99999", "--fallback", "none", "--json", *CLS], monkeypatch, capsys)
    assert code == 3 and "below --min-cosine" in err and "nothing written" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    doc = json.loads(stdout)  # one document: the error and the evaluation behind it
    assert doc["exit_code"] == 3 and "below --min-cosine" in doc["error"]["message"]
    worst = doc["evaluation"]["worst_layers"]
    assert worst and worst[0]["node"]


def test_quantize_auto_fallback_reaches_min_cosine(tmp_path, calib_dir, monkeypatch, capsys):
    """Full int8 MobileNetV3 misses 0.994; a few of the worst layers move to fp32 activations
    (their weights stay int8) until it holds."""
    out = tmp_path / "cls.int8.onnx"
    code, stdout, _ = run_cli(
        ["quantize", str(samples.path("ppocr-cls")), "-o", str(out), "--calib", str(calib_dir),
         "--per-channel", "--min-cosine", "0.994", "--json", *CLS], monkeypatch, capsys)
    report = json.loads(stdout)
    assert code == 0 and out.exists() and report["passed"]
    steps = report["search"]
    assert steps and steps[0]["min_cosine"] < 0.994 <= report["evaluation"]["min_cosine"]
    assert "on fp32 activations with int8 weights" in report["mode"]
    assert 1 < len(report["fp32_activation_nodes"]) < 20
    assert report["evaluation"]["size_ratio"] < 0.5  # weights stay int8


HASWELL_SCORE = """
import sys
import numpy as np
from edgekit.model.evaluate import Reference, evaluate
fp32, int8, held = sys.argv[1:4]
with np.load(held) as z:
    feeds = [{"x": z[k]} for k in z.files]
ev = evaluate(fp32, int8, feeds, "images", repeats=1)
print(Reference(fp32, feeds).min_cosine(int8), ev.min_cosine)
"""


@pytest.mark.skipif(not shutil.which("qemu-x86_64") or platform.machine() != "x86_64",
                    reason="needs qemu-x86_64 (qemu-user) on an x86-64 host")
def test_quantized_accuracy_is_the_same_on_a_cpu_without_vnni(tmp_path, calib_dir,
                                                              monkeypatch, capsys):
    """What the fallback search and the verdict see must not depend on the CPU. Here: this
    host against an emulated AVX2-only Haswell, whose fused int8 kernels saturate 16-bit sums
    (ORT's vpmaddubsw path): they used to see min cosine 0.980 where this host saw 0.9885, and
    the search then ended at weight-only int8 (issue 12, item 10)."""
    from edgekit.model import calibration
    from edgekit.model.loader import load_onnx

    src, out = samples.path("ppocr-cls"), tmp_path / "full.int8.onnx"
    code, _, err = run_cli(  # the full int8 model (no fallback), whatever its accuracy
        ["quantize", str(src), "-o", str(out), "--calib", str(calib_dir), "--per-channel",
         "--min-cosine", "0", "--fallback", "none", "--json", *CLS], monkeypatch, capsys)
    assert code == 0, err
    pre = calibration.Preprocess(size=(48, 192), mean=(0.5,) * 3, std=(0.5,) * 3)
    _, held = calibration.split(calibration.load_folder(calib_dir, load_onnx(src), pre))
    np.savez(tmp_path / "held.npz", *[f["x"] for f in held])
    args = [str(src), str(out), str(tmp_path / "held.npz")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    here = subprocess.run([sys.executable, "-c", HASWELL_SCORE, *args], env=env,
                          capture_output=True, text=True, timeout=600, check=True)
    emulated = subprocess.run(["qemu-x86_64", "-cpu", "Haswell", sys.executable, "-c",
                               HASWELL_SCORE, *args], env=env, capture_output=True, text=True,
                              timeout=1800, check=True)
    mine, haswell = ([float(v) for v in p.stdout.split()] for p in (here, emulated))
    assert abs(mine[0] - haswell[0]) < 1e-5 and abs(mine[1] - haswell[1]) < 1e-5, (mine, haswell)
    assert mine[0] == pytest.approx(mine[1], abs=1e-9)  # the search and the verdict agree


def test_quantize_weights_only(tmp_path, calib_dir, monkeypatch, capsys):
    out = tmp_path / "cls.w8.onnx"
    code, stdout, _ = run_cli(
        ["quantize", str(samples.path("ppocr-cls")), "-o", str(out), "--calib", str(calib_dir),
         "--per-channel", "--weights-only", "--json", *CLS], monkeypatch, capsys)
    report = json.loads(stdout)
    assert code == 0 and "no int8 speed-up" in report["mode"]
    assert report["evaluation"]["min_cosine"] > 0.998 and report["evaluation"]["size_ratio"] < 0.4
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "QuantizeLinear" not in ops and "DequantizeLinear" in ops
    code, stdout, _ = run_cli(["inspect", str(out), "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(stdout)["quantization"].startswith("int8 weights only")


def test_shard_real_model_with_skip_connections(tmp_path, monkeypatch, capsys):
    from edgekit.model.calibration import Preprocess

    pre = Preprocess(size=(256, 256), mean=(0.5,) * 3, std=(0.5,) * 3)
    photos = samples.images()
    inputs = []
    for i in (10, 3):  # the scanned page and the rocket
        np.savez(tmp_path / f"in{i}.npz", x=pre.apply(photos[i]))
        inputs += ["--inputs", str(tmp_path / f"in{i}.npz")]
    out = tmp_path / "det3"
    code, _stdout, _ = run_cli(["shard", str(samples.path("ppocr-det")), "--stages", "3",
                               "-o", str(out), "--json", *inputs], monkeypatch, capsys)
    assert code == 0
    manifest = verify(out)
    part = manifest.partition
    assert part["validation"]["exact"] and part["validation"]["samples"] == 2
    assert part["balance_ratio"] >= 1.0 and part["slowest_ms"] <= part["naive_slowest_ms"]
    # DBNet's FPN: several feature maps cross the same cut
    assert max(len(s.outputs) for s in manifest.stages[:-1]) >= 2
    assert manifest.stages[0].inputs[0].shape[0] != 1  # dynamic batch kept
    assert load_manifest(out).name == "ch_PP-OCRv4_det_infer"


def test_inspect_tflite_and_bundle_it(tmp_path, monkeypatch, capsys):
    path = samples.path("face-detection")
    code, stdout, _ = run_cli(["inspect", str(path), "--json"], monkeypatch, capsys)
    report = json.loads(stdout)
    assert code == 0 and report["runtime"] == "litert" and report["macs_total"] > 1e7
    assert report["quantization"] == "fp16 weights"
    code, _, _ = run_cli(["bundle", str(path), "-o", str(tmp_path / "fd"), "--tar",
                          str(tmp_path / "fd.tar")], monkeypatch, capsys)
    assert code == 0 and (tmp_path / "fd.tar").stat().st_size > 200_000
    manifest = verify(tmp_path / "fd")
    assert manifest.runtime == "litert" and manifest.stages[0].file == "model.tflite"


def test_shard_quantized_model_sends_int8_across_cuts(tmp_path, calib_dir):
    from edgekit.model import calibration
    from edgekit.model.loader import load_onnx
    from edgekit.model.plan import Targets, shard_model
    from edgekit.model.quantize import QuantizeOptions, quantize_model

    pre = calibration.Preprocess(size=(48, 192), mean=(0.5,) * 3, std=(0.5,) * 3)
    src = samples.path("ppocr-cls")
    feeds = calibration.load_folder(calib_dir, load_onnx(src), pre)
    q = tmp_path / "cls.int8.onnx"
    quantize_model(src, q, feeds[:30], feeds[30:], QuantizeOptions(min_cosine=0.0), "images")
    result = shard_model(load_onnx(q), Targets(3), feeds[30:32])
    assert result.validation.exact
    crossing = [t for s in result.stages[:-1] for t in s.outputs]
    # QDQ weights are dequantised next to their layer: no fp32 weights cross a cut
    assert all(t.dtype == "int8" or t.bytes < 50_000 for t in crossing)
    assert result.slowest_ms <= result.naive_slowest_ms
