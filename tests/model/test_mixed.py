"""Mixed precision surgery on ORT's QDQ output and the fallback search (small graphs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from model_graphs import make, vi, weight
from onnx import helper

from edgekit.errors import ModelError
from edgekit.model import mixed
from edgekit.model.calibration import ListReader
from edgekit.model.evaluate import session
from edgekit.model.fallback import search


def conv_model() -> onnx.ModelProto:
    """x -> conv1 -> relu -> conv2, plus a skip from conv1: y = conv2 + conv1."""
    return make(
        [
            helper.make_node("Conv", ["x", "W1", "B1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["a"], ["b"], name="relu"),
            helper.make_node("Conv", ["b", "W2"], ["c"], name="conv2", pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["c", "a"], ["y"], name="add"),
        ],
        [vi("x", [1, 3, 16, 16])],
        [vi("y", [1, 8, 16, 16])],
        [weight("W1", (8, 3, 3, 3), 1), weight("B1", (8,), 3), weight("W2", (8, 8, 3, 3), 2)],
        opset=17,
    )


@pytest.fixture(scope="module")
def qdq(tmp_path_factory) -> tuple[Path, Path, list[dict[str, np.ndarray]]]:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    folder = tmp_path_factory.mktemp("mixed")
    fp32, q = folder / "fp32.onnx", folder / "q.onnx"
    onnx.save(conv_model(), str(fp32))
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    quantize_static(str(fp32), str(q), ListReader(feeds), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"QDQKeepRemovableActivations": True})
    return fp32, q, feeds


def _error(fp32: Path, model: onnx.ModelProto, feeds) -> float:
    ref, got = session(fp32), session(model.SerializeToString())
    return max(float(np.abs(ref.run(None, f)[0] - got.run(None, f)[0]).max()) for f in feeds)


def _activation_inputs(model: onnx.ModelProto, node_name: str) -> list[str]:
    """Inputs of ``node_name`` that come out of a DequantizeLinear of an activation."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    node = next(n for n in graph.node if n.name == node_name)
    return [i for i in node.input if i in producers
            and producers[i].op_type == "DequantizeLinear" and producers[i].input[0] not in inits]


def test_float_activations_keeps_int8_weights(qdq) -> None:
    q = qdq[1]
    model = onnx.load(str(q))
    assert _activation_inputs(model, "conv2")
    changed = mixed.float_activations(model, ["conv2"])
    onnx.checker.check_model(model)
    assert changed == ["conv2"] and not _activation_inputs(model, "conv2")
    conv2 = next(n for n in model.graph.node if n.name == "conv2")
    w_dq = next(n for n in model.graph.node if conv2.input[1] in n.output)
    assert w_dq.op_type == "DequantizeLinear"  # the weight is still stored int8
    weight_init = next(t for t in model.graph.initializer if t.name == w_dq.input[0])
    assert weight_init.data_type == onnx.TensorProto.INT8
    assert _activation_inputs(model, "add")  # other consumers keep their int8 path


def test_weights_only_is_closer_to_fp32_and_still_int8(qdq) -> None:
    fp32, q, feeds = qdq
    full = onnx.load(str(q))
    model = onnx.load(str(q))
    mixed.weights_only(model)
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" not in ops and ops.count("DequantizeLinear") == 3  # W1, B1, W2
    assert model.graph.output[0].name == "y"
    assert _error(fp32, model, feeds) < 0.75 * _error(fp32, full, feeds)  # no act. noise


def test_compact_names_shrinks_and_keeps_results(qdq) -> None:
    _, q, feeds = qdq
    model = onnx.load(str(q))
    before = model.ByteSize()
    assert mixed.compact_names(model) > 0
    onnx.checker.check_model(model)
    assert model.ByteSize() < before
    assert {n.name for n in model.graph.node} >= {"conv1", "relu", "conv2", "add"}
    a, b = session(q), session(model.SerializeToString())
    for f in feeds[:2]:
        np.testing.assert_array_equal(a.run(None, f)[0], b.run(None, f)[0])


def test_unknown_node_is_named(qdq) -> None:
    with pytest.raises(ModelError, match="no node named nope"):
        mixed.float_activations(onnx.load(str(qdq[1])), ["nope"])


def test_search_doubles_then_bisects() -> None:
    ranked = [f"n{i}" for i in range(40)]
    calls: list[int] = []

    def score(nodes):
        calls.append(-1 if nodes is None else len(nodes))
        return 1.0 if nodes is None else 0.9 + 0.01 * min(len(nodes), 10)

    found = search(ranked, score, target=0.995)
    assert found.passed and not found.weights_only and found.nodes == ranked[:10]
    assert calls == [1, 2, 4, 8, 16, 12, 10, 9]
    assert [s.float_nodes for s in found.steps] == calls


def test_search_ends_in_weight_only_when_ranked_nodes_are_not_enough() -> None:
    found = search(["a", "b", "c"], lambda n: 0.999 if n is None else 0.9, target=0.99)
    assert found.passed and found.weights_only and found.steps[-1].float_nodes == -1
    missed = search(["a"], lambda n: 0.5 if n is None else 0.8, target=0.99)
    assert not missed.passed and missed.nodes == ["a"] and missed.min_cosine == 0.8


def test_output_writer_writes_fp32(qdq) -> None:
    model = onnx.load(str(qdq[1]))
    assert mixed.output_writers(model) == ["add"]
    mixed.float_activations(model, ["add"])
    writer = next(n for n in model.graph.node if n.name == "add")
    assert writer.output[0] == "y" and not _activation_inputs(model, "add")
