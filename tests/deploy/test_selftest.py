"""Deploy's self-test without a cluster: the agreement rule, the tolerance a bundle gets, the
fixed input, the host reference (real ONNX Runtime), and the node module itself run as a
process against a deploy root laid out as deploy leaves it (real runtime, real files)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.deploy import selfcase, selftest
from edgekit.deploy.plan import Plan
from edgekit.deploy.state import NodeState
from edgekit.errors import ModelError
from edgekit.model.bundle import (
    FORMAT_VERSION,
    Manifest,
    StageEntry,
    TensorEntry,
    load_manifest,
    write_bundle,
)
from edgekit.node import selftest as node_selftest
from edgekit.node.agreement import Tolerance, compare, cosine
from edgekit.remote.ssh import CommandResult
from edgekit.serve.tensors import TensorSpec

FP = Tolerance(selfcase.FP_RTOL, selfcase.FP_ATOL, selfcase.FP_MIN_COSINE, "float")


def _softmax(rng: np.random.Generator, n: int = 8) -> np.ndarray:
    z = rng.standard_normal((1, n))
    return (np.exp(z) / np.exp(z).sum()).astype(np.float32)


# --- the agreement rule ------------------------------------------------------------------
def test_identical_and_rounding_level_outputs_agree():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 100)).astype(np.float32) * 5
    assert compare("y", ref.copy(), ref, FP).ok
    noisy = ref * (1 + rng.uniform(-1e-6, 1e-6, ref.shape)).astype(np.float32)
    c = compare("y", noisy, ref, FP)
    assert c.ok and 0 < c.max_abs_error < 1e-4 and c.cosine > 0.999999


def test_a_small_offset_on_a_softmax_is_a_wrong_answer():
    ref = _softmax(np.random.default_rng(1))
    c = compare("prob", ref + 0.01, ref, FP)
    assert not c.ok and "max |node - host| 0.01" in c.why and "'prob'" in c.why
    assert c.max_rel_error == pytest.approx(0.01 / float(ref.max()), rel=1e-3)


def test_cosine_catches_an_error_spread_under_the_abs_bound():
    ref = np.zeros(1000, np.float32)
    ref[0] = 1.0
    got = ref + np.float32(1e-3)  # every element within 1e-4 + 1e-3 x 1, the direction not
    c = compare("y", got, ref, FP)
    assert not c.ok and "cosine" in c.why and c.max_abs_error <= c.allowed_abs


def test_an_output_at_noise_level_is_judged_by_its_size_only():
    ref = np.full(10, 1e-9, np.float32)
    got = -ref  # opposite direction, but all of it far below the bound
    assert compare("y", got, ref, FP).ok


def test_integer_and_bool_outputs_must_be_equal():
    ids = np.array([[3, 1, 4, 1, 5]], np.int64)
    assert compare("ids", ids.copy(), ids, FP).ok
    off = ids.copy()
    off[0, 2] = 9
    c = compare("ids", off, ids, FP)
    assert not c.ok and "1 of 5 values differ" in c.why
    mask = np.array([True, False, True])
    assert not compare("m", ~mask, mask, FP).ok


def test_8bit_outputs_are_quantized_values_with_a_tolerance():
    q = Tolerance(selfcase.INT8_RTOL, selfcase.FP_ATOL, 0.96, "int8")
    ref = np.arange(0, 250, 10, dtype=np.uint8)
    one_step = ref.copy()
    one_step[3] += 1
    assert compare("q", one_step, ref, q).ok
    far = ref.copy()
    far[3] += 40
    assert not compare("q", far, ref, q).ok


def test_shape_dtype_and_nan_mismatches_fail():
    ref = np.ones((2, 3), np.float32)
    assert "float32[3, 2]" in compare("y", ref.reshape(3, 2), ref, FP).why
    assert "float64" in compare("y", ref.astype(np.float64), ref, FP).why
    bad = ref.copy()
    bad[0, 0] = np.nan
    c = compare("y", bad, ref, FP)
    assert not c.ok and "NaN/inf" in c.why and c.to_dict()["max_abs_error"] is None
    both = np.array([np.nan, 1.0, np.inf], np.float32)
    assert compare("y", both.copy(), both, FP).ok


def test_fp16_gets_half_precision_room_and_reports_widen_per_output():
    ref = np.linspace(-1, 1, 50).astype(np.float16)
    got = (ref.astype(np.float32) + 2e-3).astype(np.float16)
    assert not compare("h", got.astype(np.float32), ref.astype(np.float32), FP).ok
    assert compare("h", got, ref, FP).ok
    wide = Tolerance(FP.rtol, FP.atol, 0.9, "report", {"y": 0.5})
    y = np.ones(4, np.float32)
    assert compare("y", y + 0.4, y, wide).ok and not compare("z", y + 0.4, y, wide).ok


def test_cosine_of_zero_tensors():
    z = np.zeros(3)
    assert cosine(z, z) == 1.0 and cosine(z, np.ones(3)) == 0.0


# --- the tolerance a bundle gets ---------------------------------------------------------
def _manifest(quantization: dict | None = None, stages: int = 1) -> Manifest:
    x = TensorEntry("x", "float32", ["?", 4])
    st = [StageEntry(i, f"stage_{i}.onnx", [x], [x], 1) for i in range(stages)]
    return Manifest(FORMAT_VERSION, "m", "1", "onnxruntime", [], st, [x], [x],
                    quantization=quantization)


def test_float_bundle_gets_the_float_tolerance():
    tol = selfcase.tolerance(_manifest(), quantized=False)
    assert (tol.rtol, tol.min_cosine, tol.max_abs) == (1e-3, 0.9999, {})
    assert "float model" in tol.source


def test_quantized_bundle_takes_twice_the_reports_error():
    report = {"evaluation": {"min_cosine": 0.98, "outputs": [
        {"name": "prob", "cosine": 0.98, "max_abs_error": 0.02, "mean_abs_error": 0.001}]}}
    tol = selfcase.tolerance(_manifest(report), quantized=True)
    assert tol.min_cosine == pytest.approx(2 * 0.98**2 - 1)
    assert tol.max_abs == {"prob": pytest.approx(0.04 + selfcase.FP_ATOL)}
    assert tol.rtol == selfcase.INT8_RTOL and "quantization report" in tol.source
    # a very accurate int8 model does not make the floor stricter than int8 allows
    good = {"evaluation": {"min_cosine": 0.9999, "outputs": []}}
    assert selfcase.tolerance(_manifest(good), True).min_cosine == pytest.approx(0.9602)


def test_int8_model_without_a_report_uses_edgekits_int8_floor():
    tol = selfcase.tolerance(_manifest(), quantized=True)
    assert tol.min_cosine == pytest.approx(0.9602) and "no report" in tol.source


# --- the fixed input -----------------------------------------------------------------------
def test_dynamic_dimensions_are_filled_like_edgekit_model_shapes():
    img = TensorSpec("x", "FP32", (-1, 3, -1, -1))
    assert selfcase.input_shape(img, None) == [1, 3, 224, 224]
    assert selfcase.input_shape(img, {"size": [48, 192]}) == [1, 3, 48, 192]
    assert selfcase.input_shape(img, {"size": [48, 192], "input": "other"}) == [1, 3, 224, 224]
    nhwc = TensorSpec("x", "UINT8", (1, -1, -1, 3))
    assert selfcase.input_shape(nhwc, {"size": [96, 64]}) == [1, 96, 64, 3]
    assert selfcase.input_shape(TensorSpec("ids", "INT64", (-1, -1)), None) == [1, 1]


def test_inputs_are_deterministic_per_bundle_and_typed():
    specs = [TensorSpec("x", "FP32", (-1, 3, 8, 8)), TensorSpec("q", "UINT8", (1, 64)),
             TensorSpec("ids", "INT64", (1, 16)), TensorSpec("m", "BOOL", (1, 16))]
    a = selfcase.make_inputs(specs, None, selfcase.seed_of("abc"))
    b = selfcase.make_inputs(specs, None, selfcase.seed_of("abc"))
    c = selfcase.make_inputs(specs, None, selfcase.seed_of("abd"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["x"], c["x"])
    assert a["x"].dtype == np.float32 and a["x"].shape == (1, 3, 8, 8)
    assert a["q"].dtype == np.uint8 and a["q"].max() > 128  # the whole 8-bit range
    assert set(np.unique(a["ids"])) <= {0, 1} and a["m"].dtype == np.bool_
    with pytest.raises(ModelError, match="BYTES"):
        selfcase.make_inputs([TensorSpec("s", "BYTES", (1,))], None, 0)


# --- a real two-stage bundle: host reference, the case, the node module ------------------
def _stage(path: Path, x: str, y: str, w: np.ndarray, relu: bool) -> Path:
    nodes = [helper.make_node("MatMul", [x, "W"], ["h" if relu else y])]
    if relu:
        nodes.append(helper.make_node("Relu", ["h"], [y]))
    graph = helper.make_graph(
        nodes, path.stem, [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["n", w.shape[0]])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, ["n", w.shape[1]])],
        [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("selftest")
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((16, 32)).astype(np.float32)
    w2 = rng.standard_normal((32, 4)).astype(np.float32)
    s0 = _stage(tmp / "s0.onnx", "x", "h1", w1, relu=True)
    s1 = _stage(tmp / "s1.onnx", "h1", "y", w2, relu=False)
    x, h, y = (TensorEntry("x", "float32", ["n", 16]), TensorEntry("h1", "float32", ["n", 32]),
               TensorEntry("y", "float32", ["n", 4]))
    stages = [StageEntry(0, "stage_0.onnx", [x], [h], 1000),
              StageEntry(1, "stage_1.onnx", [h], [y], 1000)]
    folder = tmp / "bundle"
    write_bundle(folder, Manifest(FORMAT_VERSION, "two", "1", "onnxruntime", [], stages, [x], [y]),
                 {"stage_0.onnx": s0, "stage_1.onnx": s1})
    return {"folder": folder, "w1": w1, "w2": w2, "tmp": tmp}


def test_reference_chains_the_stages_on_the_host(two_stage):
    m = load_manifest(two_stage["folder"])
    refs = selfcase.reference(two_stage["folder"], m, "v1")
    assert [r.index for r in refs] == [0, 1]
    x = refs[0].feeds["x"]
    assert x.shape == (1, 16)  # the batch dimension "n" became 1
    h = np.maximum(x @ two_stage["w1"], 0)
    assert np.allclose(refs[0].expected["h1"], h, atol=1e-5)
    assert np.array_equal(refs[1].feeds["h1"], refs[0].expected["h1"])  # stage 1 gets stage 0's
    assert np.allclose(refs[1].expected["y"], h @ two_stage["w2"], atol=1e-4)
    again = selfcase.reference(two_stage["folder"], m, "v1")
    assert np.array_equal(again[1].expected["y"], refs[1].expected["y"])


def _node_root(two_stage, app: str) -> Path:
    """A deploy root as push leaves it: apps/<app>/current -> versions/<v> with the files."""
    root = two_stage["tmp"] / f"root-{app}"
    version = root / "apps" / app / "versions" / "v1"
    version.mkdir(parents=True)
    for f in ("stage_0.onnx", "stage_1.onnx", "manifest.json"):
        shutil.copyfile(two_stage["folder"] / f, version / f)
    (root / "apps" / app / "current").symlink_to("versions/v1")
    return root


def _run_node(case_file: Path, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgekit.node.selftest", str(case_file), "--root", str(root),
         "--node", "n1", "--threads", "2"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}, check=False)


def _verdict(proc: subprocess.CompletedProcess) -> selftest.Verdict:
    return selftest.parse(CommandResult(proc.returncode, proc.stdout, proc.stderr), 60.0, 1.0)


def test_node_module_passes_fails_and_names_the_cause(two_stage):
    m = load_manifest(two_stage["folder"])
    refs = selfcase.reference(two_stage["folder"], m, "v1")
    tol = selfcase.tolerance(m, quantized=False)
    root = _node_root(two_stage, "two")
    case = selfcase.case_for("two", "v1", m, refs, tol, [1])  # a node serving stage 1
    assert [s.index for s in node_selftest.unpack(node_selftest.pack(case)).stages] == [1]
    good = two_stage["tmp"] / "good.npz"
    good.write_bytes(node_selftest.pack(case))
    v = _verdict(_run_node(good, root))
    assert v.ok, v
    s = v.summary()
    assert s["min_cosine"] > 0.99999 and s["stages"][0]["index"] == 1
    assert s["versions"]["onnxruntime"] and s["versions"]["machine"]
    assert s["import_s"] is not None and s["node_seconds"] > 0
    # the host's reference says otherwise: a wrong answer, named by output
    refs[1].expected["y"] = refs[1].expected["y"] + 0.5
    wrong = two_stage["tmp"] / "wrong.npz"
    wrong.write_bytes(node_selftest.pack(selfcase.case_for("two", "v1", m, refs, tol, [1])))
    proc = _run_node(wrong, root)
    v = _verdict(proc)
    assert proc.returncode == node_selftest.EXIT_WRONG and not v.ok
    assert v.detail.startswith("wrong answer: output 'y'")
    # the stage file on the node changed after the push: not loaded, said so
    target = root / "apps" / "two" / "versions" / "v1" / "stage_1.onnx"
    target.write_bytes(target.read_bytes()[:-8])
    proc = _run_node(good, root)
    v = _verdict(proc)
    assert proc.returncode == node_selftest.EXIT_LOAD
    assert "cannot load stage 1 (stage_1.onnx)" in v.detail and "sha256 mismatch" in v.detail


def test_a_library_for_another_cpu_is_named_as_such(tmp_path):
    import platform

    other = {"x86_64": 0xB7}.get(platform.machine(), 0x3E)
    lib = tmp_path / "libfoo.so.1"
    lib.write_bytes(b"\x7fELF" + bytes(14) + other.to_bytes(2, "little") + bytes(44))
    msg = f"{lib}: cannot open shared object file: No such file or directory"
    assert "is built for" in node_selftest.diagnose(msg)
    assert f"this node is {platform.machine()}" in node_selftest.diagnose(msg)
    (tmp_path / "junk.so").write_bytes(b"not elf at all, long enough to read")
    assert "not a shared library" in node_selftest.diagnose(f"{tmp_path}/junk.so: bad")
    assert node_selftest.diagnose("No module named 'onnxruntime'") == ""


def test_unreadable_case_file_is_reported(two_stage):
    bad = two_stage["tmp"] / "bad.npz"
    bad.write_bytes(b"not an npz")
    proc = _run_node(bad, two_stage["tmp"])
    assert proc.returncode == node_selftest.EXIT_CASE
    assert "cannot read the self-test case" in _verdict(proc).detail


# --- the host's reading of what came back -----------------------------------------------
def test_exit_statuses_without_a_report_are_explained():
    t = selftest.parse(CommandResult(124, "", ""), 30.0, 30.2)
    assert not t.ok and "did not finish within 30 s" in t.detail
    ill = selftest.parse(CommandResult(132, "", "Illegal instruction"), 30.0, 2.0)
    assert "SIGILL" in ill.detail and "instruction this CPU lacks" in ill.detail
    seg = selftest.parse(CommandResult(139, "", ""), 30.0, 2.0)
    assert "SIGSEGV" in seg.detail
    nf = selftest.parse(CommandResult(127, "", "sh: 1: timeout: not found"), 30.0, 0.1)
    assert nf.detail == "exit code 127: sh: 1: timeout: not found"
    assert "without an exit status" in selftest.parse(CommandResult(-1, "", ""), 30.0, 0.1).detail
    report = {"selftest": 1, "ok": True, "stages": []}
    noisy = "warning: something\n" + json.dumps(report) + "\n"
    assert selftest.parse(CommandResult(0, noisy, ""), 30.0, 1.0).ok


def test_stages_of_and_cache_key():
    p = Plan("pipeline", 2, [["a", "b"], ["c", "d"]], [1, 1])
    assert [selftest.stages_of(p, n) for n in "abcdx"] == [[0], [1], [0], [1], []]
    ns = NodeState(fingerprint="fp1", cores=4)
    k = selftest.key(ns, "v9", [1])
    assert k == "fp1:v9:s1:t4"
    assert k != selftest.key(NodeState(fingerprint="fp2", cores=4), "v9", [1])
