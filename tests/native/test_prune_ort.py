"""edgekit prune end to end: a small MatMul/Gemm model through the CLI, then loaded by plain
onnxruntime with ortops.session_options() (real ORT + onnxruntime-extensions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli


def _model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((128, 256)).astype(np.float32) * 0.1
    w2 = rng.standard_normal((16, 256)).astype(np.float32) * 0.1
    b2 = rng.standard_normal(16).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2", transB=1)]
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 16])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
         numpy_helper.from_array(b2, "b2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, str(path))


@pytest.mark.parametrize("pattern", ["2:4", "1:4"])
def test_prune_cli_and_plain_ort_session(tmp_path: Path, pattern: str) -> None:
    import onnxruntime as ort

    from edgekit.native import ortops

    src, out = tmp_path / "m.onnx", tmp_path / "m.pruned.onnx"
    _model(src)
    res = CliRunner().invoke(cli, ["prune", str(src), "--pattern", pattern, "--min-params", "1000",
                                   "-o", str(out), "--samples", "2", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert [lr["name"] for lr in report["layers"]] == ["fc1", "fc2"]
    assert report["cosine"] > 0.5 and report["size_after"] < report["size_before"]
    assert ortops.uses_custom_op(str(out))
    sess = ort.InferenceSession(str(out), sess_options=ortops.session_options())
    x = np.random.default_rng(5).standard_normal((3, 128)).astype(np.float32)
    y = sess.run(None, {"x": x})[0]
    dense = ort.InferenceSession(str(src)).run(None, {"x": x})[0]
    assert y.shape == (3, 16)
    cos = (y * dense).sum() / (np.linalg.norm(y) * np.linalg.norm(dense))
    assert cos > 0.5


def test_prune_refuses(tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    _model(src)
    res = CliRunner().invoke(cli, ["prune", str(src), "--pattern", "3:4", "-o",
                                   str(tmp_path / "o.onnx")])
    assert res.exit_code != 0
    from edgekit.errors import ModelError
    from edgekit.native.prune import Layers, prune_model

    with pytest.raises(ModelError, match="no MatMul"):
        prune_model(src, tmp_path / "o.onnx", (2, 4), Layers(min_params=10**9))
    assert not (tmp_path / "o.onnx").exists()


def test_native_info_json() -> None:
    res = CliRunner().invoke(cli, ["native", "info", "--json"])
    assert res.exit_code == 0
    assert json.loads(res.output)["variant"]
